"""The seed's behaviour over a real SQLite file, with a fake reader at the Proxmox boundary."""

import os
import sqlite3
import threading
import time

import pytest

from pve_datastore_exporter.answers import defaults_answer
from pve_datastore_exporter.coordination import MARGIN, Coordinator
from pve_datastore_exporter.metrics import Exposition
from pve_datastore_exporter.records import RefreshFailed
from pve_datastore_exporter.service import Service, StoreError
from pve_datastore_exporter.store import SessionError, Store
from pve_datastore_exporter.store.notify import SqliteWatcher

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
    assert "default HDD datastore 'ceph-vm' is disabled or gone from the cluster" in defaults_answer(view)["warnings"]


def test_configured_default_missing_is_reported_not_replaced(tmp_path):
    service, _ = make(tmp_path, hdd_datastore="HDD-Storage")
    view = service.datastores()
    assert view.default_hdd == "HDD-Storage"
    assert defaults_answer(view)["warnings"] == ["default HDD datastore 'HDD-Storage' does not exist in the cluster"]
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
    wait_until(lambda: len(service._refresher._cond._waiters) >= 2)
    assert reader.calls == 1 and len(service._refresher._cond._waiters) == 2
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
        def read(self, fence=None):
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
    wait_until(lambda: len(service._refresher._cond._waiters) >= 1)  # the second waits on the first
    gate.set()
    for t in callers:
        t.join(5)
    assert [r.value.reason for r in results] == ["internal", "internal"]
    assert service.view.refresh.reason == "internal" and service.view.refresh.error.encode()


# -- among replicas (coordination.py): fakes for the lock, a real SQLite file for the signals --------


class FakeLock:
    """The leader's lock: free or held elsewhere, with a grace to wait, and a session that can be cut."""

    def __init__(self, free=True, grace=0.0):
        self.free, self.grace, self.cut, self.marks = free, grace, False, []

    def try_acquire(self):
        return self.grace if self.free and not self.cut else None

    def begin_read(self, seconds):
        self._alive()
        self.marks.append(seconds)

    def end_read(self):
        self._alive()

    def check(self):
        self._alive()

    def release(self):
        pass

    def _alive(self):
        if self.cut:
            raise SessionError("terminating connection due to administrator command")


class TimedReader(FakeReader):
    """Notes when each read happened; may cut the lock's session while it reads."""

    def __init__(self, lock=None):
        super().__init__()
        self.lock, self.times = lock, []

    def read(self, fence=None):
        self.times.append(time.monotonic())
        if self.lock is not None:
            self.lock.cut = True  # pg_terminate_backend of the lock's session, mid-read
        return super().read()


def replica(tmp_path, lock, reader=None, store=None):
    """A service with a coordinator over `lock` and the SQLite file's watcher, its exposition, started."""
    c = config(tmp_path)
    coordinator = Coordinator(lock, SqliteWatcher(c.database_url.split(":///", 1)[1]), tick=0.05)
    service = Service(c, reader or FakeReader(), store or Store(c.database_url), coordinator=coordinator)
    exposition = Exposition(process=False)
    service.subscribe(exposition)
    service.start()
    coordinator.start(prepare=service.init_db, follow=service.display.follow, role_changed=service.display.announce_role)
    return service, coordinator, exposition


def leader_gauge(exposition) -> str:
    return next(line for line in b"".join(exposition.scrape(False)).decode().splitlines()
                if line.startswith("pve_datastore_leader "))


def test_a_read_during_which_the_lock_was_lost_is_dropped_unrecorded_and_the_replica_follows(tmp_path):
    lock = FakeLock()
    service, coordinator, exposition = replica(tmp_path, lock, TimedReader(lock))
    try:
        assert service.role == "leader" and leader_gauge(exposition) == "pve_datastore_leader 1.0"
        with pytest.raises(RefreshFailed) as failed:
            service.refresh()
        assert failed.value.reason == "db" and "no longer leads" in str(failed.value)
        assert service._store.is_empty() and service._store.refresh_state()[1].count == 0  # nothing written
        assert service.role == "follower" and leader_gauge(exposition) == "pve_datastore_leader 0.0"
        assert service.datastores().role == "follower"
    finally:
        coordinator.stop()


def test_a_new_leader_waits_out_the_last_leaders_read_before_its_own(tmp_path):
    lock, reader = FakeLock(grace=0.3), TimedReader()
    started = time.monotonic()
    service, coordinator, _ = replica(tmp_path, lock, reader)
    try:
        assert service.refresh() == 3
        assert reader.times[0] - started >= 0.3
        assert lock.marks == [service.config.refresh_deadline + MARGIN]
    finally:
        coordinator.stop()


def test_a_follower_shows_what_another_process_commits_and_its_refresh_is_the_leaders(tmp_path):
    leader, _ = make(tmp_path)
    reader = FakeReader()
    follower, coordinator, exposition = replica(tmp_path, FakeLock(free=False), reader, leader._store)
    try:
        leader.refresh()
        wait_until(lambda: follower.view.rows)
        assert follower.view.refresh.ok and follower.role == "follower" and reader.calls == 0
        leader.set_defaults(hdd="ceph-vm")  # as the set-default command does, in another process
        wait_until(lambda: follower.view.default_hdd == "ceph-vm")
        assert 'datastore="ceph-vm"' in b"".join(exposition.scrape(False)).decode()
        threading.Timer(0.2, leader.refresh).start()  # the leader, asked to, refreshes
        assert follower.refresh() == 3 and reader.calls == 0
        leader._reader.error = RefreshFailed("auth", "401 Unauthorized: permission denied")
        threading.Timer(0.2, lambda: pytest.raises(RefreshFailed, leader.refresh)).start()
        with pytest.raises(RefreshFailed) as failed:
            follower.refresh()
        assert failed.value.reason == "auth" and "permission denied" in str(failed.value)  # as the leader stored it
    finally:
        coordinator.stop()


def test_a_follower_asked_to_refresh_with_no_leader_takes_the_lead_and_refreshes(tmp_path):
    lock, reader = FakeLock(free=False), FakeReader()
    follower, coordinator, exposition = replica(tmp_path, lock, reader)
    try:
        assert follower.role == "follower"
        threading.Timer(0.2, lambda: setattr(lock, "free", True)).start()  # the leader is gone: the lock is free
        assert follower.refresh() == 3 and reader.calls == 1
        assert follower.role == "leader" and leader_gauge(exposition) == "pve_datastore_leader 1.0"
    finally:
        coordinator.stop()


class RenamingReader(FakeReader):
    """Learns the cluster's name with its first read, as reader.Reader does from /cluster/status."""

    cluster = "127.0.0.1"

    def read(self, fence=None):
        self.cluster = "pve-sim"
        return super().read()


def test_fresh_data_the_database_cannot_take_is_shown_under_the_name_read_with_it(tmp_path):
    service, _ = make(tmp_path, RenamingReader(), database_url="sqlite:////proc/no-such-folder/db.sqlite")
    with pytest.raises(RefreshFailed) as failed:
        service.refresh()
    assert failed.value.reason == "db"
    assert service.view.source == "env" and len(service.view.enabled) == 3
    assert service.view.cluster == "pve-sim"  # not the name the process started with


class ScriptedSignals:
    """Change signals that say what the test scripts, and count reads of the generation row."""

    def __init__(self, *heard):
        self.heard, self.reads = list(heard), 0

    def wait(self, timeout):
        return self.heard.pop(0) if self.heard else []

    def generation(self):
        self.reads += 1
        return 40

    def close(self):
        pass


@pytest.mark.parametrize("heard,due,followed,reads", [
    ([("pve_datastore_changes", "7"), ("pve_datastore_changes", "9")], False, [9], 0),  # the payload is enough
    ([("pve_datastore_changes", "")], False, [40], 1),  # a reconnect says no number: read the row
    ([("pve_datastore_changes", "7"), ("pve_datastore_changes", "")], False, [40], 1),
    ([("pve_datastore_changes", "x7")], False, [40], 1),  # not a number: read the row, never trust it
    ([], False, [], 0),  # nothing heard, no check due: nothing to do
    ([], True, [40], 1),  # the periodic check
    ([("pve_datastore_changes", "7")], True, [40], 1),  # due anyway: the row wins over the payload
])
def test_the_coordinator_follows_the_generation_a_notification_carries(heard, due, followed, reads):
    clock = Clock()
    signals = ScriptedSignals(heard)
    coordinator = Coordinator(FakeLock(free=False), signals, clock=clock, tick=0)
    seen = []
    coordinator._follow = seen.append
    coordinator._due["generation"] = clock.now + (0 if due else 60)
    coordinator._listen()
    assert (seen, signals.reads) == (followed, reads)


class NamelessReader(FakeReader):
    """A reader whose reads fail before it ever learned the cluster's name, as a one-shot `refresh` against a 595."""

    cluster = "127.0.0.1"  # PROXMOX_HOST standing in

    def known(self):
        return ""


def test_a_failed_refresh_by_a_reader_that_never_learned_the_name_keeps_the_stored_one(tmp_path):
    service, _ = make(tmp_path)
    service.refresh()  # stores "pve-test"
    cli = Service(config(tmp_path), NamelessReader(error=RefreshFailed("http_5xx", "595 No route to host")),
                  Store(config(tmp_path).database_url))
    cli.start()
    with pytest.raises(RefreshFailed):
        cli.refresh()
    assert service._store.load()[1].cluster == "pve-test"
    assert service._store.refresh_state()[1].reason == "http_5xx"  # the failure is recorded all the same


def test_a_default_set_after_another_process_refreshed_shows_that_refresh_as_it_was_stored(tmp_path):
    service, clock = make(tmp_path)
    service.refresh()  # generation 1, shown
    other = Service(config(tmp_path), FakeReader(), service._store, clock=lambda: clock.now + 60)
    other.start()
    other.refresh()  # generation 2, committed by "another process", not yet followed here
    view, changed = service.set_defaults(hdd="ceph-vm")  # generation 3
    assert changed and view.default_hdd == "ceph-vm"
    stored = service._store.refresh_state()[1]
    assert stored.count == 2 and service.view.refresh == stored  # not this process's older bookkeeping
    service.display.follow(service._store.load()[0])  # nothing left to follow: the view is the DB's
    assert service.view.refresh == stored


class CountingLock(FakeLock):
    """A FakeLock that notes each clear of the mark."""

    def __init__(self):
        super().__init__()
        self.cleared = 0

    def end_read(self):
        super().end_read()
        self.cleared += 1


def test_overlapping_reads_share_the_mark_which_the_last_one_clears_and_a_cut_session_drops_both(tmp_path):
    lock = CountingLock()
    coordinator = Coordinator(lock, SqliteWatcher(str(tmp_path / "w.sqlite")))
    coordinator._leading = True
    with coordinator.reading(10):  # a per-node batch
        with coordinator.reading(2):  # the refresh: no wait, and its shorter read keeps the longer mark
            pass
        assert lock.marks == [10 + MARGIN] and lock.cleared == 0  # the batch still reads under the mark
        with coordinator.reading(20):  # a longer read extends the mark
            pass
    assert lock.marks == [10 + MARGIN, 20 + MARGIN] and lock.cleared == 1
    with pytest.raises(Exception) as caught:
        with coordinator.reading(10):
            with coordinator.reading(2):
                lock.cut = True
    assert type(caught.value).__name__ == "NotLeader" and coordinator.role == "follower"
