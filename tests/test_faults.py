"""Faults injected for real: Proxmox down, 401/5xx/595, hangs, a broken DB, kill -9. What survives?"""

import os
import random
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pve_datastore_exporter.simulator import Simulator
from tools.processes import BIN, ExporterProcess, free_port

from .needs import in_ci, require_tool

SECRET_API_TOKEN = "api-token-s3cret-0123"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return tmp_path_factory.mktemp("sim-certs")


@pytest.fixture
def sim(certs):
    s = Simulator(nodes=3, datastores=6, random_seed=7, state_dir=str(certs), auth_delay=0.05, drift=False)
    s.start()
    yield s
    s.stop()


@pytest.fixture
def exporter(tmp_path, sim):
    e = ExporterProcess(tmp_path, {**sim.env(), "PROXMOX_TIMEOUT": "2", "EXPORTER_API_TOKEN": SECRET_API_TOKEN})
    e.auth = {"Authorization": f"Bearer {SECRET_API_TOKEN}"}
    e.start()
    yield e
    e.stop()
    logs = e.logs()
    for secret in (sim.env()["PROXMOX_TOKEN_VALUE"], SECRET_API_TOKEN):
        assert secret not in logs, "a secret reached the log"


def quietly(call, *args):
    """Run a request whose answer cannot come (its server is about to die)."""
    try:
        call(*args, timeout=5)
    except Exception:  # noqa: BLE001
        pass


def enabled_ids(body):
    return sorted(d["id"] for d in body["datastores"])


def test_first_call_fetches_and_answers_from_the_simulated_cluster(exporter, sim):
    body = exporter.get("/api/datastores").json()
    assert enabled_ids(body) == ["ceph-vm", "local", "local-lvm", "nas-backup", "tank"]  # old-iso disabled
    assert (body["default_hdd"], body["default_ssd"], body["source"]) == ("local-lvm", "local", "db")
    ceph = next(d for d in body["datastores"] if d["id"] == "ceph-vm")
    assert ceph["size"] == ceph["nodes"][0]["size"] and len(ceph["nodes"]) == 3  # shared: counted once
    local = next(d for d in body["datastores"] if d["id"] == "local")
    assert local["size"] == sum(n["size"] for n in local["nodes"])  # local: summed
    before = sim.request_count
    for _ in range(5):
        exporter.get("/metrics")
        exporter.get("/api/datastores")
    assert sim.request_count == before  # answers come from the cache


def test_proxmox_down_before_the_first_refresh(tmp_path, sim):
    env = {**sim.env(), "PROXMOX_HOST": f"127.0.0.1:{free_port()}", "PROXMOX_TIMEOUT": "2"}
    e = ExporterProcess(tmp_path, env).start()
    try:
        body = e.get("/api/datastores").json()
        assert body["datastores"] == [] and (body["default_hdd"], body["source"]) == ("local-lvm", "env")
        assert body["last_refresh"]["ok"] is False and body["last_refresh"]["reason"] == "connection"
        response = e.post("/api/datastores/refresh")
        assert response.status_code == 502 and response.json()["error"] == "proxmox_error"
        assert "pve_datastore_up 0.0" in e.get("/metrics").text
    finally:
        e.stop()


@pytest.mark.parametrize("faults,reason", [
    ({"status": 503, "reason": "Service Unavailable"}, "http_5xx"),
    ({"status": 595, "reason": "No route to host"}, "http_5xx"),
    ({"auth_fail": True}, "auth"),
    ({"malformed": True}, "parse"),
    ({"hang": True, "hang_seconds": 10}, "timeout"),
])
def test_proxmox_failing_after_a_refresh_keeps_serving_the_cache(exporter, sim, faults, reason):
    first = exporter.get("/api/datastores").json()
    sim.set_faults(**faults)
    response = exporter.post("/api/datastores/refresh", headers=exporter.auth)
    assert response.status_code == 502 and f"({reason})" in response.json()["message"]
    body = exporter.get("/api/datastores").json()
    assert enabled_ids(body) == enabled_ids(first) and body["source"] == "db"
    assert body["last_refresh"]["ok"] is False and body["last_refresh"]["reason"] == reason
    assert body["last_refresh"]["age_seconds"] >= 0
    metrics = exporter.get("/metrics").text
    assert "pve_datastore_up 0.0" in metrics
    assert 'pve_datastore_size_bytes{pve_cluster="pve-sim",datastore="ceph-vm",node="pve1"}' in metrics
    assert f'pve_datastore_refresh_failures_total{{reason="{reason}"}} 1.0' in metrics
    sim.clear_faults()
    assert exporter.post("/api/datastores/refresh", headers=exporter.auth).status_code == 200
    assert "pve_datastore_up 1.0" in exporter.get("/metrics").text


def test_a_hanging_cluster_never_blocks_the_answers(exporter, sim):
    exporter.get("/api/datastores")
    sim.set_faults(hang=True, hang_seconds=10)
    before = sim.request_count
    worker = threading.Thread(target=exporter.post, args=("/api/datastores/refresh",), kwargs={"headers": exporter.auth})
    worker.start()
    deadline = time.monotonic() + 10
    while sim.request_count == before and time.monotonic() < deadline:  # the refresh reached Proxmox
        time.sleep(0.05)
    assert sim.request_count > before
    assert exporter.get("/api/datastores").status_code == 200
    assert exporter.get("/metrics").status_code == 200
    assert worker.is_alive()  # both answered while the refresh still waits on the hanging cluster
    worker.join(15)
    sim.clear_faults()


def test_password_login_works_and_a_wrong_one_is_an_auth_failure(tmp_path, sim):
    env = {k: v for k, v in sim.env().items() if not k.startswith("PROXMOX_TOKEN")}
    good = ExporterProcess(tmp_path, {**env, "PROXMOX_PASSWORD": sim.password}).start()
    try:
        assert len(good.get("/api/datastores").json()["datastores"]) == 5
    finally:
        good.stop()
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad = ExporterProcess(bad_dir, {**env, "PROXMOX_PASSWORD": "wrong-pass-s3cret"}).start()
    try:
        body = bad.get("/api/datastores").json()
        assert body["last_refresh"]["reason"] == "auth"
    finally:
        bad.stop()
    assert "wrong-pass-s3cret" not in bad.logs()


def test_db_locked_by_another_writer(exporter):
    exporter.get("/api/datastores")
    holder = sqlite3.connect(exporter.db, timeout=1)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        response = exporter.post("/api/datastores/default", json={"hdd_datastore_id": "ceph-vm"}, headers=exporter.auth)
        assert response.status_code == 503 and response.json()["error"] == "db_unavailable"
        assert exporter.get("/api/datastores").status_code == 200
    finally:
        holder.rollback()
        holder.close()
    response = exporter.post("/api/datastores/default", json={"hdd_datastore_id": "ceph-vm"}, headers=exporter.auth)
    assert response.status_code == 200


def test_db_deleted_under_the_running_exporter(exporter):
    exporter.get("/api/datastores")
    exporter.post("/api/datastores/default", json={"hdd_datastore_id": "ceph-vm"}, headers=exporter.auth)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{exporter.db}{suffix}"):
            os.remove(f"{exporter.db}{suffix}")
    body = exporter.get("/api/datastores").json()
    assert exporter.get("/healthz").status_code == 200 and body["success"] is True
    assert exporter.post("/api/datastores/refresh", headers=exporter.auth).status_code == 200
    body = exporter.get("/api/datastores").json()
    assert (body["default_hdd"], body["source"]) == ("ceph-vm", "db")
    with sqlite3.connect(exporter.db) as conn:
        assert conn.execute("SELECT id FROM datastores WHERE is_default_hdd").fetchall() == [("ceph-vm",)]


def test_db_replaced_by_garbage(exporter):
    exporter.get("/api/datastores")
    for suffix in ("-wal", "-shm"):
        if os.path.exists(f"{exporter.db}{suffix}"):
            os.remove(f"{exporter.db}{suffix}")
    exporter.db.write_bytes(os.urandom(8192))
    body = exporter.get("/api/datastores").json()
    assert body["source"] == "env" and len(body["datastores"]) == 5
    response = exporter.post("/api/datastores/default", json={"hdd_datastore_id": "ceph-vm"}, headers=exporter.auth)
    assert response.status_code == 503
    response = exporter.post("/api/datastores/refresh", headers=exporter.auth)
    assert response.status_code == 503 and response.json()["error"] == "db_unavailable"
    metrics = exporter.get("/metrics").text
    assert 'pve_datastore_default{pve_cluster="pve-sim",role="hdd",datastore="local-lvm",source="env"} 1' in metrics
    assert 'pve_datastore_refresh_failures_total{reason="db"} 1.0' in metrics


def read_only(path: Path) -> list[str]:
    """A command prefix running the exporter with `path` mounted read-only (its own mount namespace).

    Even root cannot write there, so the fault holds in CI (root) and with any folder permissions.
    """
    remount = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"'
    return [require_tool("unshare"), "--mount", "--propagation", "private", "sh", "-c", remount, str(path)]


# A read-only file can still be read (SQLite makes its -wal/-shm beside it); in a read-only folder
# WAL cannot even be read, and the answers fall back to .env.
@pytest.mark.parametrize("what,source,hdd", [("file", "db", "ceph-vm"), ("folder", "env", "local-lvm")])
def test_db_read_only(tmp_path, sim, what, source, hdd):
    if os.geteuid() != 0:  # CI runs as root
        (pytest.fail if in_ci() else pytest.skip)("needs root for a read-only mount", pytrace=False)
    first = ExporterProcess(tmp_path, sim.env()).start()
    first.get("/api/datastores")
    first.post("/api/datastores/default", json={"hdd_datastore_id": "ceph-vm"})
    first.stop()
    e = ExporterProcess(tmp_path, sim.env(), prefix=read_only(first.db if what == "file" else tmp_path)).start()
    try:
        body = e.get("/api/datastores").json()
        assert (body["success"], body["default_hdd"], body["source"]) == (True, hdd, source)
        response = e.post("/api/datastores/default", json={"hdd_datastore_id": "local"})
        assert response.status_code == 503 and response.json()["error"] == "db_unavailable"
        response = e.post("/api/datastores/refresh")
        assert response.status_code == 503, e.logs()[-3000:]
        assert 'pve_datastore_size_bytes{pve_cluster="pve-sim",datastore="ceph-vm",node="pve1"}' in e.get("/metrics").text, e.logs()[-4000:]
    finally:
        e.stop()
    with sqlite3.connect(first.db) as conn:
        assert conn.execute("SELECT id FROM datastores WHERE is_default_hdd").fetchall() == [("ceph-vm",)]


def test_kill_9_while_a_refresh_waits_on_proxmox_loses_nothing(tmp_path, sim):
    e = ExporterProcess(tmp_path, {**sim.env(), "PROXMOX_TIMEOUT": "30"}).start()
    e.get("/api/datastores")
    e.post("/api/datastores/default", json={"hdd_datastore_id": "ceph-vm", "ssd_datastore_id": "tank"})
    sim.set_faults(hang=True, hang_seconds=20)
    before = sim.request_count
    threading.Thread(target=quietly, args=(e.post, "/api/datastores/refresh"), daemon=True).start()
    deadline = time.monotonic() + 10
    while sim.request_count == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sim.request_count > before  # the refresh waits on Proxmox: the kill lands inside it
    e.kill9()
    sim.clear_faults()
    with sqlite3.connect(e.db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    again = ExporterProcess(tmp_path, sim.env()).start()
    try:
        body = again.get("/api/datastores").json()
        assert (body["default_hdd"], body["default_ssd"], body["source"]) == ("ceph-vm", "tank", "db")
        assert len(body["datastores"]) == 5
    finally:
        again.stop()


def test_kill_9_at_random_moments_of_refreshes_keeps_one_whole_snapshot(tmp_path, certs):
    big = Simulator(nodes=40, datastores=25, random_seed=11, state_dir=str(certs), auth_delay=0.01, drift=True)
    big.start()
    try:
        e = ExporterProcess(tmp_path, {**big.env(), "EXPORTER_REFRESH_INTERVAL": "0"}).start()
        e.get("/api/datastores")
        e.post("/api/datastores/default", json={"hdd_datastore_id": "ceph-vm"})
        e.stop()
        with sqlite3.connect(e.db) as conn:
            expected_nodes = conn.execute("SELECT count(*) FROM datastore_nodes").fetchone()[0]
        rng = random.Random(5)
        for _ in range(4):
            e = ExporterProcess(tmp_path, big.env()).start()
            for _ in range(3):  # refreshes in a row; the kill lands in a fetch, a DB write or between
                threading.Thread(target=quietly, args=(e.post, "/api/datastores/refresh"), daemon=True).start()
                time.sleep(rng.uniform(0.0, 0.08))
            e.kill9()
            with sqlite3.connect(e.db) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
                nodes = conn.execute("SELECT count(*) FROM datastore_nodes").fetchone()[0]
                stamps = conn.execute("SELECT count(DISTINCT updated_at) FROM datastores WHERE present").fetchone()[0]
                defaults = conn.execute("SELECT id FROM datastores WHERE is_default_hdd").fetchall()
            assert defaults == [("ceph-vm",)]
            assert (nodes, stamps) == (expected_nodes, 1)  # one whole snapshot (old or new), never half
    finally:
        big.stop()


def test_sigterm_stops_cleanly(tmp_path, sim):
    e = ExporterProcess(tmp_path, {**sim.env(), "EXPORTER_REFRESH_INTERVAL": "1"}).start()
    time.sleep(0.5)
    assert e.stop() == 0
    assert "stopping" in e.logs()


def test_tls_is_verified_by_default_and_can_be_turned_off_with_one_warning(tmp_path, sim):
    no_ca = {k: v for k, v in sim.env().items() if k != "PROXMOX_CA_BUNDLE"}
    (tmp_path / "strict").mkdir()
    strict = ExporterProcess(tmp_path / "strict", no_ca).start()
    try:
        body = strict.get("/api/datastores").json()
        assert body["datastores"] == [] and body["last_refresh"]["reason"] == "connection"
        assert "certificate verify failed" in body["last_refresh"]["error"].lower()
    finally:
        strict.stop()
    (tmp_path / "loose").mkdir()
    loose = ExporterProcess(tmp_path / "loose", {**no_ca, "PROXMOX_VERIFY_SSL": "false"}).start()
    try:
        assert len(loose.get("/api/datastores").json()["datastores"]) == 5
        loose.post("/api/datastores/refresh")
    finally:
        loose.stop()
    logs = loose.logs()
    assert logs.count("PROXMOX_VERIFY_SSL=false") == 1 and "InsecureRequestWarning" not in logs


def test_a_body_that_drips_forever_ends_the_refresh_at_the_deadline(tmp_path, sim):
    e = ExporterProcess(tmp_path, {**sim.env(), "PROXMOX_TIMEOUT": "1"}).start()  # deadline (3 + 1) x 1 + 5 s
    try:
        e.get("/api/datastores")
        sim.set_faults(drip=True, path="/storage")
        results = []
        worker = threading.Thread(target=lambda: results.append(e.post("/api/datastores/refresh", timeout=30)))
        worker.start()
        deadline = time.monotonic() + 5
        while sim.requests_by_path.get("/api2/json/storage", 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert e.get("/metrics").status_code == 200 and worker.is_alive()  # answers while it drips
        worker.join(30)
        body = results[0].json()
        assert results[0].status_code == 502 and "(timeout)" in body["message"] and "9 s" in body["message"]
        sim.clear_faults()
        assert e.post("/api/datastores/refresh").status_code == 200  # a fresh session afterwards
    finally:
        e.stop()


def test_password_login_recovers_after_the_cluster_refused_it(tmp_path, sim):
    env = {k: v for k, v in sim.env().items() if not k.startswith("PROXMOX_TOKEN")}
    e = ExporterProcess(tmp_path, {**env, "PROXMOX_PASSWORD": sim.password}).start()
    try:
        assert e.post("/api/datastores/refresh").status_code == 200
        sim.set_faults(auth_fail=True)  # tickets and logins refused, as after a cluster's key rotation
        assert "(auth)" in e.post("/api/datastores/refresh").json()["message"]
        sim.clear_faults()
        assert e.post("/api/datastores/refresh").status_code == 200
    finally:
        e.stop()


# -- odd text from Proxmox: the simulator's `rename` fault (docs/proxmox-api.md#text-from-proxmox) --


@pytest.mark.parametrize("rename,path", [({"pve2": "pve\ud800x"}, "resources"),  # JSON "\ud800": a lone surrogate
                                         ({"dir": "dir\udfff"}, "/storage$"),
                                         ({"images": "images\x00"}, "resources")])
def test_text_no_output_can_encode_is_a_parse_failure_and_the_cache_keeps_its_age(exporter, sim, rename, path):
    first = exporter.get("/api/datastores").json()
    sim.set_faults(rename=rename, path=path)
    response = exporter.post("/api/datastores/refresh", headers=exporter.auth)
    assert response.status_code == 502 and "(parse)" in response.json()["message"], response.text
    body = exporter.get("/api/datastores").json()
    assert enabled_ids(body) == enabled_ids(first) and body["last_refresh"]["reason"] == "parse"
    assert body["last_refresh"]["last_success"] == first["last_refresh"]["last_success"]
    metrics = exporter.get("/metrics").text
    assert "pve_datastore_up 0.0" in metrics and 'pve_datastore_refresh_failures_total{reason="parse"} 1.0' in metrics
    assert 'pve_datastore_size_bytes{pve_cluster="pve-sim",datastore="ceph-vm",node="pve2"}' in metrics
    assert exporter.get("/").status_code == 200
    sim.clear_faults()
    assert exporter.post("/api/datastores/refresh", headers=exporter.auth).status_code == 200
    assert "pve_datastore_up 1.0" in exporter.get("/metrics").text


def command(tmp_path, sim, *args, **env):
    """Run a one-shot command of the exporter against the simulator; (exit code, stdout, stderr)."""
    env = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": f"sqlite:///{tmp_path}/cli.sqlite", **sim.env(), **env}
    done = subprocess.run([str(BIN), "--env-file", os.devnull, *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout, done.stderr


def test_list_shows_terminal_escapes_from_proxmox_escaped_and_no_forged_row(tmp_path, sim):
    sim.set_faults(rename={"dir": "dir\x1b[2J\x1b]0;pwned\x07", "tank": "tank\nforged       dir   active"})
    code, out, err = command(tmp_path, sim, "list")
    assert code == 0, err
    assert not any(c in out + err for c in "\x1b\x07"), out
    lines = out.splitlines()
    assert len(lines) == 1 + 5 + 1  # header, the five enabled datastores, the defaults
    assert "dir\\x1b[2J\\x1b]0;pwned\\x07" in out and "tank\\nforged" in out


def test_an_error_line_from_proxmox_reaches_the_terminal_escaped(tmp_path, sim):
    sim.set_faults(status=500, reason="boom\x1b]0;pwned\x07\x1b[2J")
    code, out, err = command(tmp_path, sim, "refresh")
    assert code == 1 and "refresh failed (http_5xx)" in err
    assert "\x1b" not in err and "\x07" not in err and "boom\\x1b]0;pwned" in err


def test_check_config_and_its_error_line_show_a_setting_escaped(tmp_path, sim):
    code, out, err = command(tmp_path, sim, "check-config", PROXMOX_CA_BUNDLE="/nowhere\x1b]0;pwned\x07.pem")
    assert code == 2 and "\x1b" not in out + err and "\x07" not in out + err
    assert "/nowhere\\x1b]0;pwned\\x07.pem" in out and "cannot read /nowhere\\x1b]0;pwned" in err


def test_an_id_forging_a_log_line_is_logged_escaped(exporter, sim):
    forged = "a" * 101 + "\n2030-01-01 00:00:00,000 ERROR pve_datastore_exporter.http.app: FORGED"
    sim.set_faults(rename={"local": forged})
    assert exporter.post("/api/datastores/refresh", headers=exporter.auth).status_code == 200
    logs = exporter.logs()
    assert "left out" in logs and "\\n2030-01-01" in logs
    assert not [line for line in logs.splitlines() if line.startswith("2030-01-01")], logs[-2000:]


@pytest.mark.parametrize("old", ["pve2", "dir", "images"])
def test_absurdly_long_text_from_proxmox_is_left_out_and_metrics_stay_small(exporter, sim, old):
    sim.set_faults(rename={old: old[0] * 200_000})
    assert exporter.post("/api/datastores/refresh", headers=exporter.auth).status_code == 200
    metrics = exporter.get("/metrics")
    assert len(metrics.content) < 200_000 and "pve_datastore_up 1.0" in metrics.text
    assert 'pve_datastore_size_bytes{pve_cluster="pve-sim",datastore="local-lvm",node="pve1"}' in metrics.text or old == "images"
    assert len(exporter.get("/").content) < 200_000 and len(exporter.get("/api/datastores").content) < 200_000
    assert "left out" in exporter.logs() and len(exporter.logs()) < 100_000
