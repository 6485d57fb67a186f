"""The exposition follows the view: staleness is honest, vanished datastores drop out, fallback shows."""

import subprocess
import zlib

from prometheus_client.parser import text_string_to_metric_families

from pve_datastore_exporter.metrics import Exposition, render_datastores
from pve_datastore_exporter.records import Datastore, NodeFigures, RefreshFailed, View
from pve_datastore_exporter.service import Service
from pve_datastore_exporter.store import Store

from .factories import FakeReader, cluster, config
from .needs import require_tool
from .servers import Exporter


def samples(exposition: Exposition) -> dict:
    text = b"".join(exposition.scrape(use_gzip=False)).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found, name, **labels):
    return found.get((name, tuple(sorted(labels.items()))))


def running(tmp_path, reader, **changes):
    c = config(tmp_path, **changes)
    service = Service(c, reader, Store(c.database_url))
    exposition = Exposition(process=False)
    service.subscribe(exposition)
    service.start()
    return service, exposition


def test_unknown_node_has_active_zero_and_no_capacity_series():
    view = View(rows=(Datastore("tank", "zfspool", nodes=(
        NodeFigures(node="pve2", size=10, used=4, available=6, active=True), NodeFigures(node="pve3"))),))
    text = render_datastores(view).decode()
    assert 'pve_datastore_size_bytes{pve_cluster="",datastore="tank",node="pve2"} 10' in text
    assert 'node="pve3"} ' not in text.replace('pve_datastore_active{pve_cluster="",datastore="tank",node="pve3"} 0', "")
    assert 'pve_datastore_active{pve_cluster="",datastore="tank",node="pve3"} 0' in text


def test_label_values_are_escaped():
    view = View(rows=(Datastore("odd", 'we"ird\\type\n'),))
    assert 'type="we\\"ird\\\\type\\n"' in render_datastores(view).decode()


def test_proxmox_failing_keeps_last_series_and_counts_the_reason(tmp_path):
    reader = FakeReader()
    service, exposition = running(tmp_path, reader)
    service.refresh()
    assert value(samples(exposition), "pve_datastore_up") == 1
    reader.error = RefreshFailed("auth", "401 Unauthorized: Authentication failed!")
    for _ in range(2):
        try:
            service.refresh()
        except RefreshFailed:
            pass
    found = samples(exposition)
    assert value(found, "pve_datastore_up") == 0
    assert value(found, "pve_datastore_refresh_failures_total", reason="auth") == 2
    assert value(found, "pve_datastore_size_bytes", pve_cluster="pve-test", datastore="ceph-vm", node="pve1") == 5000
    assert value(found, "pve_datastore_refresh_duration_seconds_count") == 3
    reader.error = None
    service.refresh()
    assert value(samples(exposition), "pve_datastore_up") == 1


def test_vanished_datastore_drops_out_at_the_next_refresh(tmp_path):
    reader = FakeReader()
    service, exposition = running(tmp_path, reader)
    service.refresh()
    reader.records = [r for r in cluster() if r.id != "ceph-vm"]
    service.refresh()
    found = samples(exposition)
    assert value(found, "pve_datastore_size_bytes", pve_cluster="pve-test", datastore="ceph-vm", node="pve1") is None
    info = [k for k in found if k[0] == "pve_datastore_info" and ("datastore", "ceph-vm") in k[1]]
    assert info and ("enabled", "false") in info[0][1]


def test_db_fallback_shows_source_env(tmp_path):
    (tmp_path / "db.sqlite").write_bytes(b"garbage" * 1000)
    service, exposition = running(tmp_path, FakeReader())
    try:
        service.refresh()
    except RefreshFailed:
        pass
    found = samples(exposition)
    assert value(found, "pve_datastore_default", pve_cluster="pve-test", role="hdd", datastore="local-lvm", source="env") == 1
    assert value(found, "pve_datastore_refresh_failures_total", reason="db") == 1
    assert value(found, "pve_datastore_size_bytes", pve_cluster="pve-test", datastore="local", node="pve1") == 1000


def test_default_change_rerenders_without_a_refresh(tmp_path):
    reader = FakeReader()
    service, exposition = running(tmp_path, reader)
    service.refresh()
    service.set_defaults(ssd="ceph-vm")
    assert value(samples(exposition), "pve_datastore_default", pve_cluster="pve-test", role="ssd", datastore="ceph-vm", source="db") == 1
    assert reader.calls == 1


def test_gzip_body_is_one_member_holding_the_whole_plain_body(tmp_path):
    service, exposition = running(tmp_path, FakeReader())
    service.refresh()
    plain = b"".join(exposition.scrape(use_gzip=False))
    decoder = zlib.decompressobj(31)  # gzip framing, exactly one member
    assert decoder.decompress(b"".join(exposition.scrape(use_gzip=True))) == plain
    assert decoder.eof and decoder.unused_data == b""
    assert b"pve_datastore_up" in plain and b"pve_datastore_size_bytes" in plain


def test_curl_reads_the_whole_gzip_body(tmp_path):
    curl = require_tool("curl")
    e = Exporter(config(tmp_path), FakeReader())
    try:
        e.service.refresh()
        plain = e.get("/metrics", headers={"Accept-Encoding": "identity"}).text
        done = subprocess.run([curl, "-s", "--compressed", e.url + "/metrics"], capture_output=True, text=True, timeout=30)
        assert done.stdout == plain and "pve_datastore_refresh_failures_total" in done.stdout
    finally:
        e.close()


def test_self_metrics_are_reused_for_a_second_but_every_change_shows_at_once(tmp_path):
    now = [100.0]
    c = config(tmp_path)
    service = Service(c, FakeReader(), Store(c.database_url))
    exposition = Exposition(process=False, clock=lambda: now[0])
    service.subscribe(exposition)
    service.start()
    assert value(samples(exposition), "pve_datastore_up") == 0
    service.refresh()  # a change: shown by the very next scrape
    assert value(samples(exposition), "pve_datastore_up") == 1
    exposition.failures.labels("parse").inc()  # not through the service: the cached rendering stands
    now[0] += 0.5
    assert value(samples(exposition), "pve_datastore_refresh_failures_total", reason="parse") == 0
    now[0] += 0.6
    assert value(samples(exposition), "pve_datastore_refresh_failures_total", reason="parse") == 1


def test_a_refresh_the_store_and_the_renderer_cannot_take_is_counted_honestly_not_a_500(tmp_path):
    reader = FakeReader()
    e = Exporter(config(tmp_path), reader)
    try:
        assert e.post("/api/datastores/refresh").status_code == 200
        before = e.get("/api/datastores").json()["last_refresh"]["last_success"]
        # Past the parser (a fake reader): text neither SQLite nor the exposition can encode.
        reader.records = [*cluster(), Datastore("odd", "dir\udfff", nodes=(NodeFigures("pve\ud800x"),))]
        response = e.post("/api/datastores/refresh")
        assert response.status_code == 502 and response.json()["error"] == "proxmox_error"
        assert "(internal)" in response.json()["message"]
        found = samples(e.exposition)
        assert value(found, "pve_datastore_up") == 0
        assert value(found, "pve_datastore_refresh_failures_total", reason="internal") == 1
        assert value(found, "pve_datastore_refresh_duration_seconds_count") == 2
        assert value(found, "pve_datastore_size_bytes", pve_cluster="pve-test", datastore="ceph-vm", node="pve1") == 5000  # the cached data
        body = e.get("/api/datastores").json()["last_refresh"]
        assert (body["ok"], body["reason"], body["last_success"]) == (False, "internal", before)
        assert e.get("/").status_code == 200
    finally:
        e.close()


def test_a_refresh_published_again_after_a_listener_failed_is_counted_once(tmp_path):
    service, exposition = running(tmp_path, FakeReader())
    service.refresh()

    def broken(view, event):
        if event == "refresh":
            raise RuntimeError("a listener's bug")

    service.subscribe(broken)
    try:
        service.refresh()
    except RefreshFailed:
        pass
    found = samples(exposition)
    assert value(found, "pve_datastore_up") == 0
    assert value(found, "pve_datastore_refresh_failures_total", reason="internal") == 1
    assert value(found, "pve_datastore_refresh_duration_seconds_count") == 2  # two refreshes, not three


def test_every_datastore_series_names_its_cluster_first_and_self_metrics_none():
    view = View(rows=(Datastore("tank", "zfspool", nodes=(NodeFigures("pve2", 10, 4, 6, True), NodeFigures("pve3"))),),
                default_hdd="tank", default_ssd="tank", cluster='pr"od')
    exposition = Exposition(process=False)
    exposition(view, "refresh")
    text = b"".join(exposition.scrape(use_gzip=False)).decode()
    series = [line for line in text.splitlines() if line.startswith("pve_datastore_")]
    datastore_series = [line for line in series if "{" in line and not line.startswith(
        ("pve_datastore_refresh_", "pve_datastore_up", "pve_datastore_last_refresh", "pve_datastore_http_"))]
    assert len(datastore_series) == 3 + 2 + 1 + 2  # size/used/available, active x2, info, default x2
    assert all(line.split("{", 1)[1].startswith('pve_cluster="pr\\"od",') for line in datastore_series)
    assert all("pve_cluster" not in line for line in series if line not in datastore_series)


def test_an_env_default_the_cluster_lacks_leaves_no_series_once_the_default_moves(tmp_path):
    c = config(tmp_path, hdd_datastore="nowhere")
    s = Service(c, FakeReader(cluster()), Store(c.database_url))
    s.start()
    s.refresh()
    assert 'datastore="nowhere",type="unknown"' in render_datastores(s.view).decode()  # said while it is the default
    s.set_defaults(hdd="local-lvm")
    s.refresh()
    assert '"nowhere"' not in render_datastores(s.view).decode()  # before the fix: info{type="unknown"} stayed
    assert s.view.row("nowhere") is None


def test_a_stand_in_an_earlier_version_left_behind_is_gone_at_the_next_write(tmp_path):
    import sqlite3

    c = config(tmp_path)
    s = Service(c, FakeReader(cluster()), Store(c.database_url))
    s.start()
    s.refresh()
    with sqlite3.connect(f"{tmp_path}/db.sqlite") as conn:  # what the unfixed set_defaults left: no flag, never seen
        conn.execute("INSERT INTO datastores (id, name, type, size, used, available, enabled, present, is_default_hdd, "
                     "is_default_ssd, is_system_default, shared, active, pool, created_at, updated_at) VALUES "
                     "('nowhere', 'nowhere', 'unknown', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, '', '2026-01-01', '2026-01-01')")
    s.refresh()
    assert '"nowhere"' not in render_datastores(s.view).decode() and s.view.row("nowhere") is None
