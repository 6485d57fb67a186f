"""datastore_defaults against a throw-away HTTP server that plays the exporter's API."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.ansible_helpers import run_module
from tools.processes import free_port

TOKEN = "pvedx-module-token-d41d8c"
KNOWN = {"local", "local-lvm", "ceph-vm", "tank"}


class FakeExporter:
    """The GET/POST /api/datastores/default contract, recording every request."""

    def __init__(self, hdd="local-lvm", ssd="local", token=None):
        self.state = {"hdd_datastore": hdd, "ssd_datastore": ssd}
        self.token = token
        self.requests: list[tuple[str, str, dict, object]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def posts(self):
        return [r for r in self.requests if r[0] == "POST"]

    def answer(self, method, path, headers, body):
        """(status, JSON) for one request, as the exporter's web.py answers it."""
        if path != "/api/datastores/default":
            return 404, {"success": False, "error": "not_found", "message": "No such route."}
        if method == "GET":
            return 200, {"success": True, **self.state, "source": "db"}
        if self.token and headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {"success": False, "error": "unauthorized", "message": "Missing or wrong API token."}
        for role in ("hdd", "ssd"):
            wanted = body.get(f"{role}_datastore_id")
            if wanted is not None and wanted not in KNOWN:
                return 404, {"success": False, "error": "unknown_datastore",
                             "message": f"Datastore '{wanted}' does not exist in the cluster or is disabled."}
        before = dict(self.state)
        for role in ("hdd", "ssd"):
            if body.get(f"{role}_datastore_id"):
                self.state[f"{role}_datastore"] = body[f"{role}_datastore_id"]
        return 200, {"success": True, "message": "Default datastores updated.", **self.state,
                     "changed": before != self.state}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else {}
                headers = dict(self.headers.items())
                fake.requests.append((self.command, self.path, headers, body))
                status, payload = fake.answer(self.command, self.path, headers, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

            def log_message(self, *args):
                pass

        return Handler

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def exporter():
    fake = FakeExporter(token=TOKEN)
    yield fake
    fake.close()


def args(fake, **kw):
    return {"url": fake.url, "api_token": TOKEN, **kw}


def test_same_defaults_change_nothing(exporter):
    result = run_module(args(exporter, hdd_datastore="local-lvm", ssd_datastore="local"))
    assert result["_rc"] == 0, result["_output"]
    assert result["changed"] is False
    assert (result["hdd_datastore"], result["ssd_datastore"], result["source"]) == ("local-lvm", "local", "db")
    assert exporter.posts == []


def test_check_mode_reports_the_change_with_a_diff_and_posts_nothing(exporter):
    result = run_module(args(exporter, hdd_datastore="ceph-vm"), check=True, diff=True)
    assert result["_rc"] == 0, result["_output"]
    assert result["changed"] is True
    assert result["diff"] == {"before": {"hdd_datastore": "local-lvm", "ssd_datastore": "local"},
                              "after": {"hdd_datastore": "ceph-vm", "ssd_datastore": "local"}}
    assert result["hdd_datastore"] == "ceph-vm"
    assert exporter.posts == [] and exporter.state["hdd_datastore"] == "local-lvm"


def test_apply_posts_both_ids_with_the_bearer_token(exporter):
    result = run_module(args(exporter, hdd_datastore="ceph-vm", ssd_datastore="tank"), diff=True)
    assert result["_rc"] == 0, result["_output"]
    assert result["changed"] is True
    assert result["previous"] == {"hdd_datastore": "local-lvm", "ssd_datastore": "local"}
    assert (result["hdd_datastore"], result["ssd_datastore"]) == ("ceph-vm", "tank")
    (method, path, headers, body), = exporter.posts
    assert body == {"hdd_datastore_id": "ceph-vm", "ssd_datastore_id": "tank"}
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Content-Type"] == "application/json"
    again = run_module(args(exporter, hdd_datastore="ceph-vm", ssd_datastore="tank"))
    assert again["changed"] is False and len(exporter.posts) == 1


def test_one_role_only_sends_that_role(exporter):
    result = run_module(args(exporter, ssd_datastore="tank"))
    assert result["changed"] is True, result["_output"]
    assert exporter.posts[0][3] == {"ssd_datastore_id": "tank"}
    assert exporter.state == {"hdd_datastore": "local-lvm", "ssd_datastore": "tank"}


def test_without_token_no_authorization_header():
    fake = FakeExporter(token=None)
    try:
        result = run_module({"url": fake.url + "/", "hdd_datastore": "tank"})
        assert result["changed"] is True, result["_output"]
        assert all("Authorization" not in headers for _, _, headers, _ in fake.requests)
    finally:
        fake.close()


def test_unknown_datastore_fails_with_the_exporters_message(exporter):
    result = run_module(args(exporter, hdd_datastore="nope"))
    assert result["_rc"] != 0 and result["failed"] is True
    assert "Datastore 'nope' does not exist in the cluster or is disabled." in result["msg"]
    assert result["error"] == "unknown_datastore" and result["status"] == 404
    assert exporter.state["hdd_datastore"] == "local-lvm"


@pytest.mark.parametrize("token", ["wrong-token", None])
def test_rejected_token_is_a_clear_failure(exporter, token):
    result = run_module({"url": exporter.url, "api_token": token, "hdd_datastore": "tank"})
    assert result["failed"] is True and result["status"] == 401
    assert "rejected the API token" in result["msg"] and "Missing or wrong API token." in result["msg"]
    assert exporter.state["hdd_datastore"] == "local-lvm"


def test_forbidden_is_reported_as_a_token_problem():
    fake = FakeExporter()
    fake.answer = lambda *a: (403, {"success": False, "error": "forbidden",
                                    "message": "No API token configured: changes only from loopback."})
    try:
        result = run_module({"url": fake.url, "hdd_datastore": "tank"})
        assert result["failed"] is True and result["status"] == 403
        assert "rejected the API token (HTTP 403, forbidden)" in result["msg"]
    finally:
        fake.close()


def test_unreachable_exporter_is_a_clear_failure():
    url = f"http://127.0.0.1:{free_port()}"
    result = run_module({"url": url, "hdd_datastore": "tank", "timeout": 3})
    assert result["failed"] is True
    assert result["msg"].startswith(f"cannot reach the exporter (GET {url}/api/datastores/default)")


def test_a_non_json_answer_is_a_clear_failure():
    fake = FakeExporter()
    fake.answer = lambda *a: (502, "proxy error")
    try:
        result = run_module({"url": fake.url, "hdd_datastore": "tank"})
        assert result["failed"] is True and "HTTP 502" in result["msg"]
    finally:
        fake.close()


def test_needs_at_least_one_datastore(exporter):
    result = run_module({"url": exporter.url})
    assert result["failed"] is True
    assert "one of the following is required: hdd_datastore, ssd_datastore" in result["msg"]
    assert exporter.requests == []


def test_token_never_appears_in_the_result(exporter):
    for result in (run_module(args(exporter, hdd_datastore="nope")),
                   run_module(args(exporter, hdd_datastore="tank"), diff=True)):
        assert TOKEN not in result["_output"]
