"""The seed's behaviour over a real SQLite file, with a fake reader at the Proxmox boundary."""

import os
import sqlite3
import threading
import time

import pytest

from pve_datastore_exporter.records import RefreshFailed
from pve_datastore_exporter.service import Service, StoreError, default_warnings
from pve_datastore_exporter.store import Store

from .factories import FakeReader, cluster, config, record


class Clock:
    def __init__(self):
        self.now = 1_700_000_000.0

    def __call__(self):
        return self.now


def make(tmp_path, reader=None, **changes):
    c = config(tmp_path, **changes)
    clock = Clock()
    service = Service(c, reader or FakeReader(), Store(c.database_url), clock=clock)
    service.start()
    return service, clock


def test_first_call_on_empty_db_fetches_and_takes_env_defaults(tmp_path):
    reader = FakeReader()
    service, _ = make(tmp_path, reader, hdd_datastore="ceph-vm")
    view = service.datastores()
    assert reader.calls == 1
    assert (view.default_hdd, view.default_ssd, view.source) == ("ceph-vm", "local", "db")
    assert [r.id for r in view.rows if r.enabled] == ["ceph-vm", "local", "local-lvm"]
    service.datastores()
    assert reader.calls == 1  # later calls read the DB


def test_defaults_survive_refresh_restart_and_vanishing(tmp_path):
    service, _ = make(tmp_path)
    service.refresh()
    service.set_defaults(hdd="ceph-vm", ssd="local-lvm")
    reader = FakeReader([r for r in cluster() if r.id != "ceph-vm"])
    restarted, _ = make(tmp_path, reader)
    restarted.refresh()
    view = restarted.datastores()
    assert (view.default_hdd, view.default_ssd) == ("ceph-vm", "local-lvm")
    assert "default HDD datastore 'ceph-vm' is disabled or gone from the cluster" in default_warnings(view)


def test_configured_default_missing_is_reported_not_replaced(tmp_path):
    service, _ = make(tmp_path, hdd_datastore="HDD-Storage")
    view = service.datastores()
    assert view.default_hdd == "HDD-Storage"
    assert default_warnings(view) == ["default HDD datastore 'HDD-Storage' does not exist in the cluster"]
    assert not any(r.is_default_hdd for r in view.rows if r.id != "HDD-Storage")


def test_proxmox_down_keeps_cached_data_and_tells_its_age(tmp_path):
    reader = FakeReader()
    service, clock = make(tmp_path, reader)
    service.refresh()
    reader.error = RefreshFailed("connection", "Proxmox API call failed: connection refused")
    clock.now += 120
    with pytest.raises(RefreshFailed) as info:
        service.refresh()
    assert info.value.reason == "connection"
    view = service.datastores()
    assert len([r for r in view.rows if r.enabled]) == 3
    assert view.refresh.ok is False and view.refresh.reason == "connection"
    assert service.age() == 120


def test_proxmox_down_before_first_refresh_answers_empty_with_env_defaults(tmp_path):
    service, _ = make(tmp_path, FakeReader(error=RefreshFailed("timeout", "timed out")))
    view = service.datastores()
    assert view.rows == () or not any(r.enabled for r in view.rows)
    assert (view.default_hdd, view.default_ssd) == ("local-lvm", "local")
    assert view.refresh.reason == "timeout"


def test_garbage_db_falls_back_to_env_and_refuses_writes(tmp_path):
    path = tmp_path / "db.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    service, _ = make(tmp_path)
    with pytest.raises(RefreshFailed) as info:
        service.refresh()
    assert info.value.reason == "db"
    view = service.datastores()
    assert view.source == "env" and (view.default_hdd, view.default_ssd) == ("local-lvm", "local")
    assert [r.id for r in view.rows if r.enabled] == ["ceph-vm", "local", "local-lvm"]
    with pytest.raises(StoreError):
        service.set_defaults(hdd="ceph-vm")


def test_deleted_db_file_is_recreated_with_the_admins_defaults(tmp_path):
    service, _ = make(tmp_path)
    service.refresh()
    service.set_defaults(hdd="ceph-vm")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{tmp_path}/db.sqlite{suffix}"):
            os.remove(f"{tmp_path}/db.sqlite{suffix}")
    service.refresh()
    view = service.datastores()
    assert (view.default_hdd, view.source) == ("ceph-vm", "db")


def in_threads(count, call):
    """Start `count` threads running `call`; their results land in the returned list."""
    results = []
    threads = [threading.Thread(target=lambda: results.append(call())) for _ in range(count)]
    for t in threads:
        t.start()
    return threads, results


def wait_until(condition, seconds=10):
    """Poll `condition` until true or `seconds` pass (a bound for a stuck test, not a timing check)."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_concurrent_refreshes_share_one_call(tmp_path):
    gate = threading.Event()
    reader = FakeReader(gate=gate)
    service, _ = make(tmp_path, reader)
    threads, results = in_threads(3, service.refresh)
    # Release the one running refresh only once the two others wait on it (not before, not after).
    wait_until(lambda: len(service._cond._waiters) >= 2)
    assert reader.calls == 1 and len(service._cond._waiters) == 2
    gate.set()
    for t in threads:
        t.join(5)
    assert not any(t.is_alive() for t in threads)
    assert reader.calls == 1 and results == [3, 3, 3]


def test_listeners_see_every_change(tmp_path):
    service, _ = make(tmp_path)
    events = []
    service.subscribe(lambda view, event: events.append((event, view.default_hdd)))
    service.refresh()
    service.set_defaults(hdd="ceph-vm")
    assert events == [("load", None), ("refresh", "local-lvm"), ("defaults", "ceph-vm")]


def test_db_locked_during_a_refresh_keeps_the_dbs_defaults_and_the_fresh_figures(tmp_path):
    c = config(tmp_path)
    reader = FakeReader()
    service = Service(c, reader, Store(c.database_url, busy_timeout_ms=50))
    service.start()
    service.refresh()
    service.set_defaults(hdd="ceph-vm")
    reader.records = [r if r.id != "local" else record("local", size=7000, used=700) for r in cluster()]
    holder = sqlite3.connect(tmp_path / "db.sqlite", timeout=1)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock past the busy timeout
    try:
        with pytest.raises(RefreshFailed) as info:
            service.refresh()
    finally:
        holder.rollback()
        holder.close()
    assert info.value.reason == "db"
    view = service.view
    assert (view.default_hdd, view.source) == ("ceph-vm", "db")  # readable DB: its defaults, not .env
    assert view.row("local").size == 7000 and view.row("ceph-vm").is_default_hdd


def test_an_unforeseen_error_is_a_counted_failure_not_a_crash(tmp_path):
    class Broken(FakeReader):
        def read(self):
            raise ZeroDivisionError("a bug")

    service, _ = make(tmp_path, Broken())
    with pytest.raises(RefreshFailed) as info:
        service.refresh()
    assert info.value.reason == "internal" and service.view.refresh.reason == "internal"
    assert service.view.refresh.last_attempt is not None


def test_a_burst_of_first_gets_fetches_once_and_the_others_answer_at_once(tmp_path):
    gate = threading.Event()
    reader = FakeReader(gate=gate)
    service, _ = make(tmp_path, reader)
    threads, done = in_threads(6, service.datastores)
    wait_until(lambda: len(done) >= 5)
    assert len(done) == 5 and reader.calls == 1  # five answered while the one fetch still waits
    gate.set()
    for t in threads:
        t.join(5)
    assert len(done) == 6 and reader.calls == 1


def test_a_listener_failing_on_a_refresh_makes_it_a_failed_refresh_and_the_others_still_hear_of_it(tmp_path):
    service, clock = make(tmp_path)
    service.refresh()
    first = service.view.refresh.last_success
    heard = []

    def broken(view, event):
        if event == "refresh":
            raise RuntimeError("a listener's bug")

    service.subscribe(broken)
    service.subscribe(lambda view, event: heard.append((event, view.refresh.ok, view.refresh.reason)))
    clock.now += 60
    with pytest.raises(RefreshFailed) as info:
        service.refresh()
    assert info.value.reason == "internal" and "a listener's bug" in str(info.value)
    assert (service.view.refresh.ok, service.view.refresh.reason) == (False, "internal")
    assert service.view.refresh.last_success == first and service.age() == 60  # the data's true age
    assert heard[-2:] == [("refresh", True, None), ("refresh", False, "internal")]
    assert service.datastores().refresh.reason == "internal"
    restarted, _ = make(tmp_path)
    assert restarted.view.refresh.reason == "internal"  # the DB's bookkeeping says so too


class Bug(Exception):
    """An error nobody foresaw."""


class BrokenStore(Store):
    """A store whose snapshot write (and, if asked, its read-back) fails with a Bug once `broken` is set."""

    broken: tuple = ()

    def replace_snapshot(self, *args):
        if "write" in self.broken:
            raise Bug("\ud800 a driver refusing a value")  # not even its message is encodable
        return super().replace_snapshot(*args)

    def view(self):
        if "read" in self.broken:
            raise Bug("unreadable")
        return super().view()


@pytest.mark.parametrize("broken", [("write",), ("write", "read")])
def test_a_bug_past_the_read_is_a_counted_failure_and_concurrent_callers_hear_of_it(tmp_path, broken):
    gate, c = threading.Event(), config(tmp_path)
    store = BrokenStore(c.database_url)
    service = Service(c, FakeReader(gate=gate), store)
    service.start()
    store.broken = broken
    results = []
    callers = [threading.Thread(target=lambda: results.append(pytest.raises(RefreshFailed, service.refresh)))
               for _ in range(2)]
    for t in callers:
        t.start()
    wait_until(lambda: len(service._cond._waiters) >= 1)  # the second waits on the first
    gate.set()
    for t in callers:
        t.join(5)
    assert [r.value.reason for r in results] == ["internal", "internal"]
    assert service.view.refresh.reason == "internal" and service.view.refresh.error.encode()
