"""The HTTP API over real HTTP on loopback: the seed's keys, the error envelope, auth, bad input."""

import gzip
import sqlite3

import pytest

from pve_datastore_exporter.http.app import create_app
from pve_datastore_exporter.records import RefreshFailed

from .factories import FakeReader, config
from .servers import Exporter

TOKEN = "api-s3cret-token"


@pytest.fixture
def exporter(tmp_path):
    e = Exporter(config(tmp_path), FakeReader())
    yield e
    e.close()


@pytest.fixture
def guarded(tmp_path):
    e = Exporter(config(tmp_path, api_token=TOKEN), FakeReader())
    e.service.refresh()
    yield e
    e.close()


def db_rows(e):
    path = e.config.database_url.split(":///", 1)[1]
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT id, enabled, is_default_hdd, is_default_ssd FROM datastores ORDER BY id").fetchall()


def assert_envelope(response, status, code):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"success", "error", "message"}
    assert body["success"] is False and body["error"] == code and body["message"]
    return body


def test_list_has_the_seed_keys_and_only_enabled_datastores(exporter):
    body = exporter.get("/api/datastores").json()
    assert list(body)[:4] == ["success", "datastores", "default_hdd", "default_ssd"]
    assert (body["success"], body["default_hdd"], body["default_ssd"], body["source"]) == (True, "local-lvm", "local", "db")
    assert [d["id"] for d in body["datastores"]] == ["ceph-vm", "local", "local-lvm"]
    lvm = body["datastores"][2]
    for key in ("id", "name", "type", "size", "used", "available", "is_default_hdd", "is_default_ssd"):
        assert key in lvm
    assert (lvm["size"], lvm["used"], lvm["available"], lvm["is_default_hdd"]) == (2000, 200, 1800, True)
    assert body["datastores"][0]["size"] == 5000 and body["datastores"][0]["shared"] is True
    assert body["last_refresh"]["ok"] is True


def test_refresh_answers_the_seed_keys(exporter):
    body = exporter.post("/api/datastores/refresh").json()
    assert body == {"success": True, "message": "Refreshed 3 datastores from Proxmox.", "count": 3, "role": "leader"}


def test_refresh_failing_in_proxmox_is_502(exporter):
    exporter.service._reader.error = RefreshFailed("http_5xx", "Proxmox API call failed: 500 Internal Server Error")
    body = assert_envelope(exporter.post("/api/datastores/refresh"), 502, "proxmox_error")
    assert "http_5xx" in body["message"]


def test_set_default_answers_the_seed_keys_and_changes_the_db(exporter):
    exporter.get("/api/datastores")
    response = exporter.post("/api/datastores/default", json={"hdd_datastore_id": "ceph-vm", "ssd_datastore_id": "local"})
    body = response.json()
    assert response.status_code == 200
    assert list(body)[:4] == ["success", "message", "hdd_datastore", "ssd_datastore"]
    assert (body["hdd_datastore"], body["ssd_datastore"], body["changed"]) == ("ceph-vm", "local", True)
    assert ("ceph-vm", 1, 1, 0) in db_rows(exporter)
    again = exporter.get("/api/datastores/default").json()
    assert again == {"success": True, "hdd_datastore": "ceph-vm", "ssd_datastore": "local", "cluster": "pve-test",
                     "source": "db", "role": "leader", "warnings": []}
    assert exporter.post("/api/datastores/default", json={"hdd_datastore_id": "ceph-vm"}).json()["changed"] is False


@pytest.mark.parametrize("kwargs,status,code", [
    ({"data": "{not json"}, 400, "invalid_json"),
    ({"data": b"\xff\xfe"}, 400, "invalid_json"),
    ({"json": ["ceph-vm"]}, 400, "invalid_json"),
    ({"json": "ceph-vm"}, 400, "invalid_json"),
    ({"data": ""}, 400, "invalid_json"),
    ({"json": {}}, 400, "invalid_field"),
    ({"json": {"hdd_datastore_id": None}}, 400, "invalid_field"),
    ({"json": {"hdd_datastore_id": 7}}, 400, "invalid_field"),
    ({"json": {"hdd_datastore_id": ["x"]}}, 400, "invalid_field"),
    ({"json": {"hdd_datastore_id": "bad id!"}}, 400, "invalid_field"),
    ({"json": {"hdd_datastore_id": "a"}}, 400, "invalid_field"),
    ({"json": {"hdd_datastore_id": "ceph-vm\n"}}, 400, "invalid_field"),
    ({"json": {"hdd_datastore_id": "ceph-v\u017fm"}}, 400, "invalid_field"),
    ({"json": {"hdd": "ceph-vm"}}, 400, "invalid_field"),
    ({"json": {"hdd_datastore_id": "ceph-vm", "extra": 1}}, 400, "invalid_field"),
    ({"json": {"hdd_datastore_id": "nope"}}, 404, "unknown_datastore"),
    ({"json": {"hdd_datastore_id": "ceph-vm", "ssd_datastore_id": "old-iso"}}, 404, "unknown_datastore"),
    ({"data": b'{"hdd_datastore_id": "' + b"a" * 40000 + b'"}'}, 413, "payload_too_large"),
    ({"data": b"[" * 5000 + b"]" * 5000}, 400, "invalid_json"),
])
def test_bad_input_is_a_4xx_envelope_and_changes_nothing(exporter, kwargs, status, code):
    exporter.get("/api/datastores")
    before = db_rows(exporter)
    assert_envelope(exporter.post("/api/datastores/default", **kwargs), status, code)
    assert db_rows(exporter) == before


def test_unknown_datastore_message_names_it(exporter):
    exporter.get("/api/datastores")
    body = assert_envelope(exporter.post("/api/datastores/default", json={"ssd_datastore_id": "HDD-Storage"}),
                           404, "unknown_datastore")
    assert "HDD-Storage" in body["message"]


@pytest.mark.parametrize("method,path,status,code", [
    ("GET", "/api/nope", 404, "not_found"),
    ("GET", "/api/datastores/refresh", 405, "method_not_allowed"),
    ("DELETE", "/api/datastores", 405, "method_not_allowed"),
    ("PUT", "/api/datastores/default", 405, "method_not_allowed"),
    ("POST", "/metrics", 405, "method_not_allowed"),
])
def test_unknown_routes_and_methods(exporter, method, path, status, code):
    assert_envelope(exporter.http.request(method, exporter.url + path, timeout=5), status, code)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                                     {"Authorization": TOKEN}])
def test_posts_need_the_token_when_one_is_set(guarded, headers):
    before = db_rows(guarded)
    for path, body in (("/api/datastores/default", {"hdd_datastore_id": "ceph-vm"}), ("/api/datastores/refresh", None)):
        response = guarded.post(path, json=body, headers=headers)
        message = assert_envelope(response, 401, "unauthorized")["message"]
        assert TOKEN not in message
    assert db_rows(guarded) == before


def test_right_token_is_accepted(guarded):
    response = guarded.post("/api/datastores/default", json={"hdd_datastore_id": "ceph-vm"},
                            headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200 and response.json()["hdd_datastore"] == "ceph-vm"


def test_without_token_only_loopback_may_post(tmp_path):
    e = Exporter(config(tmp_path), FakeReader())
    try:
        client = create_app(e.service, e.config, refresh_waiters=1).test_client()
        response = client.post("/api/datastores/refresh", environ_base={"REMOTE_ADDR": "192.0.2.10"})
        assert response.status_code == 403 and response.get_json()["error"] == "forbidden"
        response = client.post("/api/datastores/refresh", environ_base={"REMOTE_ADDR": "::1"})
        assert response.status_code == 200
    finally:
        e.close()


def test_db_unavailable_for_a_write_is_503(tmp_path):
    (tmp_path / "db.sqlite").write_bytes(b"garbage" * 1000)
    e = Exporter(config(tmp_path), FakeReader())
    try:
        assert_envelope(e.post("/api/datastores/default", json={"hdd_datastore_id": "ceph-vm"}), 503, "db_unavailable")
        assert_envelope(e.post("/api/datastores/refresh"), 503, "db_unavailable")
        body = e.get("/api/datastores").json()
        assert body["source"] == "env" and body["default_hdd"] == "local-lvm"
        assert [d["id"] for d in body["datastores"]] == ["ceph-vm", "local", "local-lvm"]
        assert e.get("/api/datastores/default").json()["source"] == "env"
    finally:
        e.close()


@pytest.mark.parametrize("accept,zipped", [("gzip", True), ("GZIP", True), ("deflate, gzip;q=0.8", True),
                                           ("gzip;q=0", False), ("identity", False), ("", False)])
def test_metrics_plain_and_gzip(exporter, accept, zipped):
    exporter.service.refresh()
    plain = exporter.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert plain.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert 'pve_datastore_size_bytes{pve_cluster="pve-test",datastore="ceph-vm",node="pve1"} 5000' in plain.text
    answer = exporter.get("/metrics", headers={"Accept-Encoding": accept}, stream=True)
    raw = answer.raw.read(decode_content=False)
    assert (answer.headers.get("Content-Encoding") == "gzip") is zipped
    assert (gzip.decompress(raw) if zipped else raw).decode() == plain.text


def test_healthz(exporter):
    assert exporter.get("/healthz").json() == {"success": True, "status": "ok"}


def test_metrics_head_has_headers_and_no_body(exporter):
    exporter.service.refresh()
    plain = {"Accept-Encoding": "identity"}
    head = exporter.http.head(exporter.url + "/metrics", headers=plain, timeout=5)
    full = exporter.get("/metrics", headers=plain)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["Content-Length"]) == len(full.content)


def test_cross_site_post_from_a_browser_is_refused(exporter):
    exporter.get("/api/datastores")
    before = db_rows(exporter)
    response = exporter.post("/api/datastores/default", data='{"hdd_datastore_id": "ceph-vm"}',
                             headers={"Origin": "http://evil.example", "Content-Type": "text/plain"})
    assert_envelope(response, 403, "forbidden")
    assert db_rows(exporter) == before
    same = exporter.post("/api/datastores/default", json={"hdd_datastore_id": "ceph-vm"},
                         headers={"Origin": exporter.url})
    assert same.status_code == 200


@pytest.mark.parametrize("host,allowed", [("localhost:9863", True), ("localhost.:9863", True),
                                          ("127.0.0.1:9863", True), ("[::1]:9863", True),
                                          ("rebind.attacker.example:9863", False), ("10.0.0.5:9863", False),
                                          ("evil.localhost:9863", False), ("localhost.evil.example", False)])
def test_without_token_the_host_header_must_name_this_machine(exporter, host, allowed):
    exporter.get("/api/datastores")
    before = db_rows(exporter)
    response = exporter.post("/api/datastores/default", data='{"hdd_datastore_id": "ceph-vm"}', headers={"Host": host})
    if allowed:
        assert response.status_code == 200
    else:
        assert_envelope(response, 403, "forbidden")
        assert db_rows(exporter) == before


def test_every_answer_forbids_framing(exporter):
    for path in ("/", "/api/datastores", "/nope", "/metrics"):
        headers = exporter.get(path).headers
        assert headers["X-Frame-Options"] == "DENY" and "frame-ancestors 'none'" in headers["Content-Security-Policy"]


def test_refresh_with_a_huge_body_is_413(exporter):
    assert_envelope(exporter.post("/api/datastores/refresh", data=b"x" * 40000), 413, "payload_too_large")



def test_the_page_serves_its_status_part_alone_and_refuses_other_parts(exporter):
    part = exporter.http.get(exporter.url + "/?part=status", timeout=5)
    assert part.status_code == 200 and part.text.lstrip().startswith('<section class="status" id="status"')
    assert "data-version=" in part.text and "<table" not in part.text
    body = assert_envelope(exporter.http.get(exporter.url + "/?part=table", timeout=5), 404, "not_found")
    assert "'table'" in body["message"]
