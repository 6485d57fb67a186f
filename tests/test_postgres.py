"""DATABASE_URL=postgresql://...: the same store and service on a real PostgreSQL server."""

import threading
import time
from urllib.parse import quote

import pytest

from pve_datastore_exporter.answers import defaults_answer
from pve_datastore_exporter.config import ConfigError
from pve_datastore_exporter.coordination import Coordinator
from pve_datastore_exporter.metrics import Exposition
from pve_datastore_exporter.records import RefreshFailed, RefreshInfo
from pve_datastore_exporter.refreshing import ASK_AGAIN
from pve_datastore_exporter.service import Service
from pve_datastore_exporter.store import PROBE, Fenced, SessionError, Store, StoreError, UnknownDatastore
from pve_datastore_exporter.store.leader import LOCK_CLASS, PgLock
from pve_datastore_exporter.store.notify import CHANGES, REFRESH, NoSignals, PgSignals
from tools.relay import Relay

from .factories import FakeReader, cluster, config, record
from .pg import new_database, serving

DEFAULTS = {"hdd": "local-lvm", "ssd": "local"}
INFO = RefreshInfo(last_attempt=1.0, last_success=1.0, ok=True, duration=0.5, count=1)


def bookkeeping() -> RefreshInfo:
    """What the service records after a refresh, as replace_snapshot asks for it."""
    return INFO


@pytest.fixture(scope="module")
def postgres_server():
    yield from serving()


@pytest.fixture(scope="module")
def postgres_url(postgres_server):
    return new_database(postgres_server)


@pytest.fixture
def store(postgres_url):
    s = Store(postgres_url)
    s.migrate()
    yield s
    with s.database.connection_context():
        s.database.execute_sql("DROP TABLE IF EXISTS datastores, datastore_nodes, refresh_state, generation, leader, "
                               "node_reads")


def test_snapshot_defaults_and_vanishing_on_postgres(store):
    store.replace_snapshot(cluster(), DEFAULTS, DEFAULTS, bookkeeping)
    store.migrate()
    store.set_defaults(hdd="ceph-vm")
    # IDs that a linguistic collation (en_US) orders unlike Python: the views must not care.
    odd = [record(i) for i in ("cephfs", "ceph-pool", "Zeta", "a.b")]
    _, written = store.replace_snapshot([r for r in cluster() if r.id != "ceph-vm"] + odd, DEFAULTS, DEFAULTS,
                                        bookkeeping)
    view = store.load()[1]
    assert written == view  # what the snapshot returns is what PostgreSQL holds
    assert [r.id for r in view.rows] == sorted(r.id for r in view.rows)
    assert (view.default_hdd, view.default_ssd) == ("ceph-vm", "local")
    assert not view.row("ceph-vm").enabled and view.row("local").size == 2000
    assert sum(r.enabled for r in view.rows) == 6
    with pytest.raises(UnknownDatastore):
        store.set_defaults(ssd="old-iso")


def test_never_two_defaults_on_postgres(store):
    store.replace_snapshot(cluster(), DEFAULTS, DEFAULTS, bookkeeping)
    with pytest.raises(StoreError):
        with store.database.connection_context():
            store.database.execute_sql("UPDATE datastores SET is_default_hdd = true WHERE id = 'ceph-vm'")


def test_service_on_postgres(store, tmp_path):
    c = config(tmp_path, database_url=store.url, hdd_datastore="HDD-Storage")
    service = Service(c, FakeReader(), store)
    service.start()
    view = service.datastores()
    assert [r.id for r in view.rows if r.enabled] == ["ceph-vm", "local", "local-lvm"]
    assert defaults_answer(view)["warnings"] == ["default HDD datastore 'HDD-Storage' does not exist in the cluster"]
    assert service.refresh() == 3 and service.view.refresh.ok


def lock_sessions(server, url) -> list[int]:
    """The backend pids holding the leader's lock in `url`'s database."""
    database = url.rsplit("/", 1)[1]
    return [pid for (pid,) in server.sql(
        f"SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database WHERE l.locktype = 'advisory' "
        f"AND l.classid = {LOCK_CLASS} AND l.granted AND d.datname = '{database}'")]


def test_one_session_holds_the_lock_and_its_end_releases_it(postgres_server, store):
    first, second = PgLock(store.url, "first"), PgLock(store.url, "second")
    other_url = new_database(postgres_server)
    Store(other_url).migrate()
    other = PgLock(other_url, "another cluster's")
    try:
        assert first.try_acquire() == 0.0 and second.try_acquire() is None
        assert other.try_acquire() == 0.0  # another database: another cluster, another lock
        first.check()
        [pid] = lock_sessions(postgres_server, store.url)
        postgres_server.sql(f"SELECT pg_terminate_backend({pid})")
        with pytest.raises(SessionError):
            first.check()
        assert second.try_acquire() == 0.0
        first.release()
        assert first.try_acquire() is None  # a new session, and the lock is the second's now
    finally:
        for lock in (first, second, other):
            lock.release()


def test_a_new_leader_waits_out_the_read_its_predecessor_marked(postgres_server, store):
    first, second = PgLock(store.url, "first"), PgLock(store.url, "second")
    try:
        assert first.try_acquire() == 0.0
        first.begin_read(6)
        first.end_read()
        started = time.monotonic()
        first.begin_read(6)  # this one never ends: the session goes first
        [pid] = lock_sessions(postgres_server, store.url)
        postgres_server.sql(f"SELECT pg_terminate_backend({pid})")
        with pytest.raises(SessionError):
            first.end_read()
        grace = second.try_acquire()
        # The mark's 6 s less what the database's clock ran between the mark and the take-over, which
        # both happened inside this window: no slack needed, whatever the machine's load.
        assert 6 - (time.monotonic() - started) <= grace <= 6
        assert postgres_server.sql("SELECT holder FROM leader", store.url.rsplit("/", 1)[1]) == [("second",)]
    finally:
        first.release()
        second.release()


def test_every_write_raises_the_generation_and_tells_the_listening_replicas(store):
    signals = PgSignals(store.url)
    try:
        assert signals.wait(0) == [(CHANGES, "")]  # a new session has missed everything before it
        written, _ = store.replace_snapshot(cluster(), DEFAULTS, DEFAULTS, bookkeeping)
        assert signals.wait(5) == [(CHANGES, str(written))] and signals.generation() == written
        with pytest.raises(UnknownDatastore):
            store.set_defaults(hdd="nope")  # rolled back: no new number, no notification
        assert store.set_defaults(hdd="local-lvm") == (written, False)  # no change: no number, no notification
        store.ask_for_refresh()
        assert signals.wait(5) == [(REFRESH, "")] and signals.generation() == written
        assert store.load()[0] == written
    finally:
        signals.close()


def test_refresh_times_made_real_by_an_older_version_are_widened_in_place(postgres_server):
    url = new_database(postgres_server)
    name = url.rsplit("/", 1)[1]
    postgres_server.sql("CREATE TABLE refresh_state (id INTEGER PRIMARY KEY, last_attempt REAL, last_success REAL, "
                        "ok BOOLEAN, error TEXT, reason VARCHAR(20), duration REAL, count INTEGER NOT NULL)", name)
    postgres_server.sql("INSERT INTO refresh_state VALUES (1, 1700000000, 1700000000, true, NULL, NULL, 0.5, 3)", name)
    store = Store(url)
    store.migrate()
    types = postgres_server.sql("SELECT column_name, data_type FROM information_schema.columns "
                                "WHERE table_name = 'refresh_state' AND data_type LIKE 'double%'", name)
    assert {column for column, _ in types} == {"last_attempt", "last_success", "duration"}
    store.record_refresh(RefreshInfo(last_attempt=1_700_000_123.25, last_success=1_700_000_123.25, ok=True, count=4))
    assert store.refresh_state()[1].last_success == 1_700_000_123.25  # to the quarter second, not two minutes


def test_the_per_node_reads_are_stored_and_followed_on_postgres(store, postgres_url):
    from pve_datastore_exporter.records import ThinPool

    store.replace_snapshot(cluster(), DEFAULTS, DEFAULTS, bookkeeping)
    pool = ThinPool("pve1", "pve", "data", 1000, 100, 64, 58, datastore="local-lvm")
    first, _ = store.save_node_reads("pools", {"pve1": [pool], "pve2": ("http_5xx", "595 'No route to host'")}, 100.0, 900)
    generation, risk = store.save_node_reads("pools", {"pve1": ("timeout", "no answer"), "pve2": []}, 200.0, 900)
    assert generation == first + 1 and risk.thin_pools == (pool,)  # pve1 failed: its last figures stay
    reads = {r.node: r for r in risk.reads}
    assert dict(reads["pve1"].failures) == {"timeout": 1} and reads["pve2"].last_success == 200.0
    assert Store(postgres_url).load()[1].risk == risk  # a follower reads the same


def test_a_node_that_left_the_cluster_leaves_the_reads_after_the_bound(store):
    from pve_datastore_exporter.records import ThinPool

    pool = ThinPool("pve9", "pve", "data", 1000, 100, 64, 58)
    store.save_node_reads("pools", {"pve9": [pool], "pve1": []}, 100.0, 900)
    _, risk = store.save_node_reads("pools", {"pve1": []}, 500.0, 900)  # pve9 not in the snapshot any more
    assert {r.node for r in risk.reads} == {"pve1", "pve9"}  # within the bound: kept
    _, risk = store.save_node_reads("pools", {"pve1": []}, 1100.0, 900)
    assert {r.node for r in risk.reads} == {"pve1"} and risk.thin_pools == ()


# -- the fence around every write: a leader that lost its lock must not land its write (issue 22, item 1) --


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.02)
    raise AssertionError(f"no {what} within {timeout} s")


class Leading:
    """A coordinator that has taken the lock of `url`'s replicas and then looks away (its loop asleep):
    it cannot notice that its session was cut, nor take the lock again before the other replica."""

    def __init__(self, url: str, holder: str):
        self.asleep = threading.Event()
        self.coordinator = Coordinator(PgLock(url, holder), NoSignals(sleep=self.asleep.wait), tick=60)
        self.coordinator.start(prepare=lambda: None, follow=lambda generation: None, role_changed=lambda: None)
        assert self.coordinator.leads()

    def stop(self) -> None:
        self.asleep.set()
        self.coordinator.stop()


def take_over(server, url: str, holder: str) -> PgLock:
    """Cut the leader's lock session (pg_terminate_backend) and take the lock, as another replica would."""
    [pid] = lock_sessions(server, url)
    server.sql(f"SELECT pg_terminate_backend({pid})")
    new = PgLock(url, holder)
    wait_until(lambda: new.try_acquire() is not None, 5, "the lock, once the session ended")
    return new


class CutBeforeWrite(Store):
    """A store whose snapshot write waits, as behind a relay that held it, while `cut()` happens.

    The one Store of its test: the models follow the last Store made."""

    cut = staticmethod(lambda: None)

    def replace_snapshot(self, *args):
        self.cut()
        return super().replace_snapshot(*args)


def test_a_leader_whose_lock_session_is_cut_between_its_read_and_its_write_lands_nothing(
        postgres_server, store, tmp_path, caplog):
    a_store = CutBeforeWrite(store.url)
    leading = Leading(store.url, "A")
    a = Service(config(tmp_path, database_url=store.url), FakeReader([record("tank", used=200)]), a_store,
                coordinator=leading.coordinator)
    exposition = Exposition(process=False)
    a.subscribe(exposition)
    a.start()
    holders = []

    def b_leads_and_stores():  # B takes over, reads Proxmox (used=300) and stores it, before A's write arrives
        holders.append(take_over(postgres_server, store.url, "B"))
        Store.replace_snapshot(a_store, [record("tank", used=300)], DEFAULTS, DEFAULTS,
                                          lambda: RefreshInfo(last_attempt=5.0, last_success=5.0, ok=True, count=1))

    a_store.cut = b_leads_and_stores
    try:
        with pytest.raises(RefreshFailed, match="no longer leads"):
            a.refresh()  # a POST /api/datastores/refresh answers this failure
        stored = a_store.load()[1]
        assert stored.row("tank").used == 300 and stored.refresh.last_success == 5.0  # B's, not A's older read
        assert "refused" in caplog.text
        assert exposition.registry.get_sample_value("pve_datastore_fenced_writes_total") == 1
    finally:
        leading.stop()
        for lock in holders:
            lock.release()


def test_a_write_whose_lock_session_ends_inside_its_transaction_is_rolled_back(postgres_server, store):
    leading = Leading(store.url, "A")
    coordinator = leading.coordinator
    holders = []

    def cut_then_bookkeeping() -> RefreshInfo:  # called last inside the write's transaction
        holders.append(take_over(postgres_server, store.url, "B"))
        return INFO

    try:
        before = store.load()
        with coordinator.reading(1) as fence:  # the read, fenced as always; its write comes after
            pass
        with pytest.raises(Fenced):
            store.replace_snapshot(cluster(), DEFAULTS, DEFAULTS, cut_then_bookkeeping, "", fence)
        assert store.load() == before  # nothing of the write, not even the generation
        with pytest.raises(Fenced):
            store.record_refresh(INFO, "", fence)
        assert store.load() == before
        # The new holder's writes go through; an unfenced one (SQLite's, a lone process's) too.
        store.record_refresh(INFO, "", holders[0].epoch)
        assert store.load()[0] == before[0] + 1
    finally:
        leading.stop()
        for lock in holders:
            lock.release()


# -- DATABASE_URL: a percent-encoded password, as every PostgreSQL client reads it (issue 22, item 5) --


PASSWORD = "p@ss/w?rd#%41:x"  # every character a URL's userinfo cannot hold as it is, and a literal %41


def test_a_percent_encoded_password_logs_in_everywhere(postgres_server):
    url = new_database(postgres_server)
    name = url.rsplit("/", 1)[1]
    hba = postgres_server.data / "pg_hba.conf"  # this role, and only it, must give its password
    hba.write_text(f"host all pvedx_pw 127.0.0.1/32 scram-sha-256\n{hba.read_text()}")
    postgres_server.sql("SELECT pg_reload_conf()")
    postgres_server.sql(f"CREATE ROLE pvedx_pw LOGIN PASSWORD '{PASSWORD}'")
    postgres_server.sql(f"GRANT ALL ON SCHEMA public TO pvedx_pw; ALTER DATABASE {name} OWNER TO pvedx_pw", name)
    encoded = url.replace("postgresql://postgres@", f"postgresql://pvedx_pw:{quote(PASSWORD, safe='')}@")
    assert "%40" in encoded and "%2F" in encoded and "%3F" in encoded and "%23" in encoded and "%2541" in encoded
    with pytest.raises(StoreError, match="password authentication failed"):  # the server does check it
        Store(url.replace("postgres@", "pvedx_pw:wrong@")).load()
    store = Store(encoded)
    store.migrate()  # the store's connections
    store.replace_snapshot(cluster(), DEFAULTS, DEFAULTS, bookkeeping)
    lock, signals = PgLock(encoded, "encoded"), PgSignals(encoded)  # the lock's and the signals' sessions
    try:
        assert lock.try_acquire() == 0.0
        assert signals.wait(0) == [(CHANGES, "")] and signals.generation() == store.load()[0]
    finally:
        lock.release()
        signals.close()


# -- the database away: answers from memory, /metrics saying what the API says (issue 22, item 3) ----------


CONNECT_TIMEOUT = 3.0  # s: store/sessions.py MAIN's connect_timeout, what one connect to a vanished host costs
FROM_MEMORY = 0.25  # s: an answer that touches no network (~1 ms), with the slack of a loaded 2-core machine


def relayed(server, relay: Relay) -> str:
    """A new database's URL through `relay`."""
    return new_database(server).replace(f":{server.port}/", f":{relay.port}/")


def default_line(exposition: Exposition) -> str:
    text = b"".join(exposition.scrape(False)).decode()
    return next(line for line in text.splitlines() if line.startswith("pve_datastore_default{") and 'role="hdd"' in line)


@pytest.fixture
def relay(postgres_server):
    r = Relay(postgres_server.port)
    yield r
    r.close()


def answers(call) -> bool:
    """Whether `call` gets an answer from the database (no StoreError)."""
    try:
        call()
    except StoreError:
        return False
    return True


def serving_through(relay: Relay, server, tmp_path) -> tuple[Service, Exposition]:
    """A service whose database is reached through `relay`, refreshed, with HDD default ceph-vm set in the database."""
    url = relayed(server, relay)
    service = Service(config(tmp_path, database_url=url), FakeReader(), Store(url))
    exposition = Exposition(process=False)
    service.subscribe(exposition)
    service.start()
    service.refresh()
    service.set_defaults(hdd="ceph-vm")
    return service, exposition


def test_while_the_database_cannot_be_read_metrics_say_env_as_the_answers_do(postgres_server, relay, tmp_path):
    service, exposition = serving_through(relay, postgres_server, tmp_path)
    assert 'datastore="ceph-vm",source="db"' in default_line(exposition)
    relay.refuse()
    view = service.datastores()
    assert (view.source, view.default_hdd) == ("env", "local-lvm")
    assert 'datastore="local-lvm",source="env"' in default_line(exposition)  # /metrics agrees with the API
    relay.restore()
    # While the fallback is shown, no ETag: a conditional GET answered 304 would never reach the read that
    # finds the database again (the generation alone has not moved).
    wait_until(lambda: answers(service._store.generation), 2 * PROBE + CONNECT_TIMEOUT, "the probe's reconnect")
    assert service.version() is None
    wait_until(lambda: service.datastores().source == "db", 2 * PROBE + CONNECT_TIMEOUT, "the database again")
    assert 'datastore="ceph-vm",source="db"' in default_line(exposition)


def test_a_black_holed_database_costs_one_connect_timeout_then_answers_come_from_memory(
        postgres_server, relay, tmp_path, caplog):
    service, _ = serving_through(relay, postgres_server, tmp_path)
    relay.black_hole()
    started = time.monotonic()
    assert service.datastores().source == "env"
    assert time.monotonic() - started <= CONNECT_TIMEOUT + 2  # the one connect that finds the host gone
    for answer in (service.datastores, service.defaults, service.datastores):
        started = time.monotonic()
        assert answer().source == "env"
        assert time.monotonic() - started < FROM_MEMORY, answer
    started = time.monotonic()  # a conditional GET's tag (the store's generation) is asked first: no connect either
    assert service.version() is None
    assert time.monotonic() - started < FROM_MEMORY, "version"
    with pytest.raises(StoreError):  # a write is refused at once too (503), without a connect
        started = time.monotonic()
        service.set_defaults(hdd="local")
    assert time.monotonic() - started < FROM_MEMORY
    assert caplog.text.count("answering from memory") == 1
    relay.restore()
    # A probe every PROBE s, each waiting up to CONNECT_TIMEOUT on the host: then the database's answers again.
    wait_until(lambda: service.defaults().source == "db", PROBE + 2 * CONNECT_TIMEOUT + 2, "the database again")
    assert service.defaults().default_hdd == "ceph-vm"


def test_a_burst_of_requests_when_the_database_vanishes_pays_one_connect_timeout_in_all(postgres_server, relay, tmp_path):
    service, _ = serving_through(relay, postgres_server, tmp_path)
    relay.black_hole()
    took: list[float] = []
    started = time.monotonic()

    def get():
        assert service.datastores().source == "env"
        took.append(time.monotonic() - started)

    burst = [threading.Thread(target=get, daemon=True) for _ in range(6)]  # each its own connection, as GETs' threads
    for thread in burst:
        thread.start()
    for thread in burst:
        thread.join(6 * CONNECT_TIMEOUT + 5)
    # One connect finds the host gone; the calls queued behind it then answer from memory, not one timeout each.
    assert len(took) == len(burst) and max(took) <= CONNECT_TIMEOUT + 2, sorted(took)


# -- two clusters' exporters on one database: never relabelled (issue 22, item 15) --------------------------


class NamedReader(FakeReader):
    """A reader with PROXMOX_CLUSTER_NAME set: its name is always the configured one, as reader.Reader's."""

    def __init__(self, name: str, records=None):
        super().__init__(records)
        self.cluster = name

    def name(self, stored: str = "") -> str:
        return self.cluster


def named(tmp_path, store, name: str, records=()) -> Service:
    return Service(config(tmp_path, database_url=store.url, proxmox_cluster_name=name),
                   NamedReader(name, list(records) or None), store)


def test_a_replica_of_another_cluster_refuses_the_database_and_never_relabels(store, tmp_path, caplog):
    a = named(tmp_path, store, "prod-a")
    b = named(tmp_path, store, "prod-b")
    b.start()  # an empty database: nothing to compare yet
    a.start()
    a.refresh()  # cluster A's leader stores its datastores
    with pytest.raises(StoreError):  # a notification reaches B: its coordinator's loop takes it as unreadable
        b.display.follow(store.load()[0])
    answer = b.datastores()
    assert b.view.cluster == "prod-b" and not b.view.rows  # nothing of A's shown under B's name
    assert answer.source == "env" and not answer.rows
    assert "'prod-a'" in caplog.text and "PROXMOX_CLUSTER_NAME='prod-b'" in caplog.text
    restarted = named(tmp_path, store, "prod-b")
    with pytest.raises(ConfigError, match="PROXMOX_CLUSTER_NAME: the database holds the datastores of cluster 'prod-a'"):
        restarted.start()  # `serve` stops with this one line
    again = named(tmp_path, store, "prod-a")
    again.start()
    assert again.datastores().cluster == "prod-a" and again.view.rows  # its own cluster's replica follows


class ReadName(FakeReader):
    """A reader with PROXMOX_CLUSTER_NAME unset that read `name` from /cluster/status (as reader.Reader.label)."""

    def __init__(self, name: str, records=None):
        super().__init__(records)
        self.cluster, self.read_name = name, False

    def known(self) -> str:
        return self.cluster if self.read_name else ""

    def read(self, fence=None):
        self.read_name = True  # the name comes with the refresh's reads
        return super().read()


def test_a_leader_that_reads_another_clusters_name_never_stores_over_the_database(store, tmp_path, caplog):
    a = Service(config(tmp_path, database_url=store.url), ReadName("prod-a"), store)
    a.start()
    a.refresh()  # cluster A's leader stores its datastores
    before = store.load()
    b = Service(config(tmp_path, database_url=store.url), ReadName("prod-b", [record("b-only")]), store)
    b.start()  # its name unset and not read yet: nothing to compare at start
    with pytest.raises(RefreshFailed, match="cluster 'prod-a', not of 'prod-b'"):
        b.refresh()  # it leads (alone), reads Proxmox, learns it is prod-b: the write is refused
    assert store.load() == before and before[1].cluster == "prod-a"  # nothing written: no relabel, no overwrite
    assert (b.view.refresh.ok, b.view.refresh.reason, b.view.cluster, b.view.rows) == (False, "db", "prod-b", ())
    answer = b.datastores()  # and A's datastores are not shown as B's
    assert answer.source == "env" and not answer.rows
    assert "refused to store over them" in caplog.text
    assert a.datastores().cluster == "prod-a" and {r.id for r in a.datastores().rows} == {r.id for r in cluster()}


# -- a follower's refresh request lost while the leader's listening session reconnects (issue 22, item 4) ---


def test_a_followers_refresh_request_lost_by_the_leader_is_asked_again(postgres_server, store, tmp_path):
    held = PgLock(store.url, "the leader")  # the test is the leader: it holds the lock and answers requests
    assert held.try_acquire() == 0.0
    c = config(tmp_path, database_url=store.url, proxmox_timeout=1, proxmox_cluster_name="pve-test")
    follower = Service(c, FakeReader(), store, coordinator=Coordinator(PgLock(store.url, "follower"), PgSignals(store.url)))
    follower.start()
    follower._coordinator.start(prepare=lambda: None, follow=follower.display.follow,
                                role_changed=follower.display.announce_role)
    answered = []
    asking = threading.Thread(target=lambda: answered.append(follower.refresh()), daemon=True)
    listening = None
    try:
        asking.start()  # its request goes out while the leader's listening session is down: lost
        time.sleep(0.5)
        listening = PgSignals(store.url)  # the leader's listener, reconnected
        started = time.monotonic()
        wait_until(lambda: any(channel == REFRESH for channel, _ in listening.wait(0.2)),
                   ASK_AGAIN + 2, "the request asked again")
        assert time.monotonic() - started <= ASK_AGAIN + 2
        generation, view = store.replace_snapshot(cluster(), DEFAULTS, DEFAULTS,
                                                  lambda: RefreshInfo(last_attempt=9.0, last_success=9.0, ok=True, count=1))
        asking.join(5)  # the follower hears the change and answers at once
        assert answered == [len(view.enabled)]
    finally:
        follower._coordinator.stop()
        held.release()
        if listening:
            listening.close()


def test_a_per_node_read_of_a_leader_that_lost_its_lock_is_not_stored(postgres_server, store):
    from pve_datastore_exporter.records import ThinPool

    leading = Leading(store.url, "A")
    holders = []
    try:
        with leading.coordinator.reading(1) as fence:  # a batch of the pools read, fenced as the refresh is
            pass
        holders.append(take_over(postgres_server, store.url, "B"))
        before = store.load()
        pool = ThinPool("pve1", "pve", "data", 1000, 100, 64, 58)
        with pytest.raises(Fenced):
            store.save_node_reads("pools", {"pve1": [pool]}, 100.0, 900, fence)
        assert store.load() == before  # nothing of it, not even the generation
        store.save_node_reads("pools", {"pve1": [pool]}, 100.0, 900, holders[0].epoch)  # the new leader's lands
        assert store.load()[1].risk.thin_pools == (pool,)
    finally:
        leading.stop()
        for lock in holders:
            lock.release()


class Retaking:
    """A replica leading on `url` whose loop notices a cut lock session and takes the lock again (a new epoch),
    over a simulated cluster of five nodes: its settings, reader and service."""

    def __init__(self, server, store: Store, state_dir, **settings):
        from pve_datastore_exporter.config import Config
        from pve_datastore_exporter.reader import Reader
        from pve_datastore_exporter.simulator import Simulator

        self.server = server
        self.url = url = store.url
        self.lock = PgLock(url, "A")
        self.coordinator = Coordinator(self.lock, NoSignals(), tick=0.05)
        self.coordinator.start(prepare=lambda: None, follow=lambda generation: None, role_changed=lambda: None)
        self.sim = Simulator(nodes=5, datastores=2, drift=False, state_dir=str(state_dir), auth_delay=0.01).start()
        env = self.sim.env()
        self.settings = Config(proxmox_host=env["PROXMOX_HOST"], proxmox_user=env["PROXMOX_USER"],
                               proxmox_token_name=env["PROXMOX_TOKEN_NAME"], proxmox_token_value=env["PROXMOX_TOKEN_VALUE"],
                               proxmox_ca_bundle=env["PROXMOX_CA_BUNDLE"], proxmox_timeout=2, proxmox_cluster_name="sim",
                               database_url=url, **settings)
        self.reader = Reader(self.settings)
        self.service = Service(self.settings, self.reader, store, coordinator=self.coordinator)  # one Store per process
        self.exposition = Exposition(process=False)
        self.service.subscribe(self.exposition)
        self.service.start()

    def take_again(self) -> None:
        """Cut the lock's session; wait until this replica took the lock again, with a new epoch."""
        before = self.lock.epoch
        [pid] = lock_sessions(self.server, self.url)
        self.server.sql(f"SELECT pg_terminate_backend({pid})")
        wait_until(lambda: self.coordinator.leads() and self.lock.epoch != before, 10, "the lock taken again")

    def fenced(self) -> float:
        return self.exposition.registry.get_sample_value("pve_datastore_fenced_writes_total")

    def stop(self) -> None:
        self.sim.stop()
        self.coordinator.stop()


@pytest.fixture
def retaking(postgres_server, store, tmp_path):
    made = []
    yield lambda **settings: made.append(Retaking(postgres_server, store, tmp_path, **settings)) or made[-1]
    for replica in made:
        replica.stop()


def test_a_per_node_read_whose_lock_was_lost_and_taken_again_between_its_batches_is_refused(retaking, store):
    from pve_datastore_exporter.node_reads import NodeReads

    a, epochs = retaking(), []

    def reading(seconds: float):
        """The coordinator's fence; before the second batch, this replica loses its lock's session and takes the lock again."""
        if len(epochs) == 1:
            a.take_again()
        epochs.append(a.lock.epoch)
        return a.coordinator.reading(seconds)

    a.service.refresh()
    reads = NodeReads(a.settings, a.reader, store, a.service.display, a.coordinator.leads, reading, a.coordinator.epoch)
    reads.run("pools")  # five online nodes: a batch of four, then one
    assert len(epochs) == 2 and epochs[1] > epochs[0]
    # Before the fix the second batch's epoch replaced the first's: the read was stored under the new lock.
    assert store.load()[1].risk.reads == ()
    assert a.fenced() == 1
    reads.run("pools")  # a read made wholly under the lock taken again lands
    assert {r.node for r in store.load()[1].risk.reads} == {f"pve{i}" for i in range(1, 6)}


def test_a_refreshs_per_node_storage_outcomes_are_refused_once_the_lock_was_taken_again(retaking, store):
    a = retaking(exact_available=True, pools_interval=0)
    a.service.refresh()  # each node's /storage read under the first epoch: stored by the next tick of the per-node reads
    a.take_again()
    a.service.node_reads.tick()
    # Before the fix the tick stored them under the epoch in force then: the new lock's, which never read them.
    assert store.load()[1].risk.reads == ()
    assert a.fenced() == 1
    a.service.refresh()
    a.service.node_reads.tick()
    assert {(r.read, r.node) for r in store.load()[1].risk.reads} == {("storage", f"pve{i}") for i in range(1, 6)}
