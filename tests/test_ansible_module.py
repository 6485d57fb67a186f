"""datastore_defaults against a throw-away HTTP server that plays the exporter's API, and against a real
exporter with a web config (HTTPS from a private CA, basic auth, writers, mutual TLS)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import bcrypt
import pytest
import trustme

from pve_datastore_exporter import simulator
from tests.ansible_helpers import run_module
from tools.processes import ExporterProcess, free_port

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
        # shutdown() waits for serve_forever's next poll: 0.5 s by default, paid once per test.
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
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


@pytest.mark.parametrize("check", [False, True])
def test_defaults_the_exporter_reads_from_env_fail_with_a_sentence(exporter, check):
    """The database away: the exporter's answer is .env's values, not what is set; never "ok" (issue 22, item 12)."""
    exporter.answer = lambda method, *a: (200, {"success": True, "hdd_datastore": "local-lvm",
                                                "ssd_datastore": "local", "source": "env"})
    result = run_module(args(exporter, hdd_datastore="local-lvm"), check=check)
    assert result["failed"] is True and result["_rc"] != 0
    assert "answers from its .env fallback (source: env)" in result["msg"]
    assert "cannot read its database" in result["msg"] and "nothing was checked or set" in result["msg"]
    assert exporter.posts == []


@pytest.mark.parametrize("hdd", ["local-lvm,import-from=/etc/shadow", "local lvm", "-x", "lv:32", "local\n"])
def test_an_id_that_is_no_datastore_id_is_refused_before_any_request(exporter, hdd):
    result = run_module(args(exporter, hdd_datastore=hdd))
    assert result["failed"] is True and "hdd_datastore: " in result["msg"]
    assert "is not a Proxmox datastore ID" in result["msg"]
    assert exporter.requests == []


@pytest.mark.parametrize("where", ["GET", "POST"])
def test_an_id_the_exporter_answers_that_is_no_datastore_id_is_refused(exporter, where):
    """A hostile exporter (or anything between, on plain http) must not inject disk options (issue 22, item 16)."""
    injected = "local-lvm,import-from=local:iso/x.qcow2,cache=unsafe"
    real = exporter.answer

    def answer(method, path, headers, body):
        status, payload = real(method, path, headers, body)
        return status, ({**payload, "ssd_datastore": injected} if method == where else payload)

    exporter.answer = answer
    result = run_module(args(exporter, hdd_datastore="ceph-vm"))
    assert result["failed"] is True and "is not a Proxmox datastore ID" in result["msg"]
    assert "ssd_datastore" in result["msg"] and "'local-lvm,import-from=" in result["msg"]
    assert len(exporter.posts) == (1 if where == "POST" else 0)


def test_needs_at_least_one_datastore(exporter):
    result = run_module({"url": exporter.url})
    assert result["failed"] is True
    assert "one of the following is required: hdd_datastore, ssd_datastore" in result["msg"]
    assert exporter.requests == []


def test_token_never_appears_in_the_result(exporter):
    for result in (run_module(args(exporter, hdd_datastore="nope")),
                   run_module(args(exporter, hdd_datastore="tank"), diff=True)):
        assert TOKEN not in result["_output"]


# -- against a real exporter with a web config: HTTPS from a private CA, basic auth, writers -------------------

SCRAPER, WRITER = ("prometheus", "pvedx-module-scrape-pw-41b2"), ("ansible", "pvedx-module-write-pw-9e07")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    s = simulator.Simulator(nodes=3, datastores=6, random_seed=1, state_dir=tmp_path_factory.mktemp("sim"), drift=False)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A throw-away CA, the exporter's certificate for localhost, a client certificate, in PEM files."""
    folder, ca = tmp_path_factory.mktemp("pki"), trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    server.private_key_and_cert_chain_pem.write_to_path(folder / "server.pem")
    server.private_key_pem.write_to_path(folder / "server.key")
    server.cert_chain_pems[0].write_to_path(folder / "server.crt")
    client = ca.issue_cert("ansible@pvedx.test")
    client.cert_chain_pems[0].write_to_path(folder / "client.crt")
    client.private_key_pem.write_to_path(folder / "client.key")
    ca.cert_pem.write_to_path(folder / "ca.crt")
    other = trustme.CA()  # a CA the exporter's certificate is not from
    other.cert_pem.write_to_path(folder / "other-ca.crt")
    return folder


def start_tls_exporter(base, sim, pki, extra_tls: str = "", cert=None):
    users = "".join(f"  {name}: {bcrypt.hashpw(pw.encode(), bcrypt.gensalt(4)).decode()}\n" for name, pw in (SCRAPER, WRITER))
    config = base / "web.yml"
    config.write_text(f"tls_server_config:\n  cert_file: {pki}/server.crt\n  key_file: {pki}/server.key\n{extra_tls}"
                      f"basic_auth_users:\n{users}")
    exporter = ExporterProcess(base, {**sim.env(), "EXPORTER_WEB_CONFIG_FILE": str(config),
                                      "EXPORTER_WRITE_USERS": WRITER[0], "EXPORTER_API_TOKEN": TOKEN},
                               ca=str(pki / "ca.crt"), auth=SCRAPER, cert=cert)
    exporter.start()
    exporter.api()  # the first read from Proxmox, so the datastores are known
    return exporter


@pytest.fixture(scope="module")
def tls_exporter(sim, pki, tmp_path_factory):
    exporter = start_tls_exporter(tmp_path_factory.mktemp("tls"), sim, pki)
    yield exporter
    exporter.stop()
    assert WRITER[1] not in exporter.logs() and SCRAPER[1] not in exporter.logs()


def tls_args(exporter, pki, user=WRITER, **kw):
    return {"url": exporter.url, "ca_path": str(pki / "ca.crt"), "url_username": user[0], "url_password": user[1], **kw}


def test_a_writer_over_https_changes_the_defaults_once(tls_exporter, pki):
    before = tls_exporter.api("/api/datastores/default")
    wanted = "tank" if before["hdd_datastore"] != "tank" else "ceph-vm"
    check = run_module(tls_args(tls_exporter, pki, hdd_datastore=wanted), check=True, diff=True)
    assert check["_rc"] == 0 and check["changed"] is True, check["_output"]
    assert tls_exporter.api("/api/datastores/default")["hdd_datastore"] == before["hdd_datastore"]
    done = run_module(tls_args(tls_exporter, pki, hdd_datastore=wanted))
    assert done["_rc"] == 0 and done["changed"] is True and done["hdd_datastore"] == wanted, done["_output"]
    assert tls_exporter.api("/api/datastores/default")["hdd_datastore"] == wanted
    again = run_module(tls_args(tls_exporter, pki, hdd_datastore=wanted))
    assert again["_rc"] == 0 and again["changed"] is False, again["_output"]
    for result in (check, done, again):
        assert WRITER[1] not in result["_output"]


def test_a_user_who_may_only_read_is_refused_with_the_exporters_reason(tls_exporter, pki):
    current = tls_exporter.api("/api/datastores/default")["ssd_datastore"]
    wanted = "local" if current != "local" else "tank"
    result = run_module(tls_args(tls_exporter, pki, user=SCRAPER, ssd_datastore=wanted))
    assert result["failed"] is True and result["status"] == 403, result["_output"]
    assert "the exporter rejected user 'prometheus' (HTTP 403, forbidden)" in result["msg"]
    assert "EXPORTER_WRITE_USERS" in result["msg"] and SCRAPER[1] not in result["_output"]
    assert tls_exporter.api("/api/datastores/default")["ssd_datastore"] == current


def test_without_a_user_the_module_says_basic_auth_is_wanted(tls_exporter, pki):
    result = run_module({"url": tls_exporter.url, "ca_path": str(pki / "ca.crt"), "hdd_datastore": "tank"})
    assert result["failed"] is True and result["status"] == 401, result["_output"]
    assert result["msg"].startswith("the exporter wants basic auth (url_username and url_password")
    token = run_module({"url": tls_exporter.url, "ca_path": str(pki / "ca.crt"), "api_token": TOKEN,
                        "hdd_datastore": "tank"})
    assert token["failed"] is True and token["status"] == 401  # the token is no credential while basic auth is on


def test_a_wrong_password_is_a_clear_failure(tls_exporter, pki):
    result = run_module(tls_args(tls_exporter, pki, user=(WRITER[0], "not-the-password"), hdd_datastore="tank"))
    assert result["failed"] is True and result["status"] == 401
    assert "the exporter rejected user 'ansible' (HTTP 401, unauthorized)" in result["msg"]


@pytest.mark.parametrize("ca", [None, "other-ca.crt"])
def test_a_certificate_from_an_untrusted_ca_is_refused(tls_exporter, pki, ca):
    args = tls_args(tls_exporter, pki, hdd_datastore="tank")
    if ca:
        args["ca_path"] = str(pki / ca)
    else:
        del args["ca_path"]
    result = run_module(args)
    assert result["failed"] is True and result["msg"].startswith("cannot reach the exporter"), result["_output"]
    assert "CERTIFICATE_VERIFY_FAILED" in result["msg"] or "certificate verify failed" in result["msg"]


def test_validate_certs_false_skips_the_check(tls_exporter, pki):
    args = tls_args(tls_exporter, pki, hdd_datastore=tls_exporter.api("/api/datastores/default")["hdd_datastore"])
    del args["ca_path"]
    result = run_module(dict(args, validate_certs=False))
    assert result["_rc"] == 0 and result["changed"] is False, result["_output"]


def test_token_and_user_exclude_each_other(tls_exporter, pki):
    result = run_module(tls_args(tls_exporter, pki, api_token=TOKEN, hdd_datastore="tank"))
    assert result["failed"] is True and "mutually exclusive: api_token|url_username" in result["msg"]


def test_mutual_tls_with_a_client_certificate(sim, pki, tmp_path):
    exporter = start_tls_exporter(tmp_path, sim, pki, f"  client_auth_type: RequireAndVerifyClientCert\n"
                                                      f"  client_ca_file: {pki}/ca.crt\n",
                                  cert=(str(pki / "client.crt"), str(pki / "client.key")))
    try:
        current = exporter.api("/api/datastores/default")["hdd_datastore"]
        refused = run_module(tls_args(exporter, pki, hdd_datastore=current))
        assert refused["failed"] is True and refused["msg"].startswith("cannot reach the exporter"), refused["_output"]
        shown = run_module(tls_args(exporter, pki, hdd_datastore=current, client_cert=str(pki / "client.crt"),
                                    client_key=str(pki / "client.key")))
        assert shown["_rc"] == 0 and shown["changed"] is False, shown["_output"]
    finally:
        exporter.stop()
