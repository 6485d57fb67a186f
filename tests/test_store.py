"""The store on a real SQLite file: schema, upgrade in place, snapshots, defaults."""

import sqlite3
import threading

import pytest

from pve_datastore_exporter.records import RefreshInfo
from pve_datastore_exporter.store import Store, StoreError, UnknownDatastore

from .factories import SEED_SCHEMA, cluster, record

DEFAULTS = {"hdd": "local-lvm", "ssd": "local"}
INFO = RefreshInfo(last_attempt=1.0, last_success=1.0, ok=True, duration=0.5, count=1)


def bookkeeping() -> RefreshInfo:
    """What the service records after a refresh, as replace_snapshot asks for it."""
    return INFO


@pytest.fixture
def path(tmp_path):
    return tmp_path / "instance" / "proxmox_manager.db"


@pytest.fixture
def store(path):
    s = Store(f"sqlite:///{path}")
    s.migrate()
    return s


def rows(path, sql="SELECT id, enabled, is_default_hdd, is_default_ssd FROM datastores ORDER BY id"):
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def test_fresh_file_gets_the_seed_table_in_wal_mode(store, path):
    assert path.exists()
    columns = [r[1] for r in rows(path, "PRAGMA table_info(datastores)")]
    assert columns[:13] == ["id", "name", "type", "size", "used", "available", "content", "enabled",
                            "is_default_hdd", "is_default_ssd", "is_system_default", "created_at", "updated_at"]
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]


def test_seed_era_database_is_upgraded_with_rows_and_flags_intact(path):
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as conn:
        conn.executescript(SEED_SCHEMA)
        conn.execute("INSERT INTO datastores (id, name, type, size, used, available, content, enabled, "
                     "is_default_hdd, is_default_ssd) VALUES ('HDD-Storage', 'HDD-Storage', 'lvm', 1073741824000, "
                     "536870912000, 536870912000, 'images', 1, 1, 0)")
        conn.execute("INSERT INTO datastores (id, name, type, is_default_ssd) VALUES ('local', 'local', 'dir', 1)")
    store = Store(f"sqlite:///{path}")
    store.migrate()
    store.migrate()  # idempotent
    assert rows(path) == [("HDD-Storage", 1, 1, 0), ("local", 1, 0, 1)]
    view = store.load()[1]
    assert (view.default_hdd, view.default_ssd) == ("HDD-Storage", "local")
    assert view.row("HDD-Storage").size == 1073741824000
    assert {"shared", "active", "present"} <= {r[1] for r in rows(path, "PRAGMA table_info(datastores)")}


def test_seed_era_database_with_two_default_hdd_keeps_one(path):
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as conn:
        conn.executescript(SEED_SCHEMA)
        conn.execute("INSERT INTO datastores (id, name, type, is_default_hdd, updated_at) "
                     "VALUES ('a1', 'a1', 'dir', 1, '2024-01-01 00:00:00'), ('b1', 'b1', 'dir', 1, '2025-01-01 00:00:00')")
    Store(f"sqlite:///{path}").migrate()
    assert rows(path, "SELECT id FROM datastores WHERE is_default_hdd") == [("b1",)]


def test_snapshot_takes_the_initial_defaults_from_env_once(store, path):
    store.replace_snapshot(cluster(), DEFAULTS, DEFAULTS, bookkeeping)
    assert rows(path) == [("ceph-vm", 1, 0, 0), ("local", 1, 0, 1), ("local-lvm", 1, 1, 0), ("old-iso", 0, 0, 0)]
    store.set_defaults(hdd="ceph-vm")
    store.replace_snapshot(cluster(), DEFAULTS, DEFAULTS, bookkeeping)
    assert store.load()[1].default_hdd == "ceph-vm"
    assert rows(path, "SELECT id FROM datastores WHERE is_system_default ORDER BY id") == [("local",), ("local-lvm",)]


def test_vanished_datastore_keeps_its_row_and_its_flag(store, path):
    store.replace_snapshot(cluster(), DEFAULTS, DEFAULTS, bookkeeping)
    store.set_defaults(hdd="ceph-vm")
    store.replace_snapshot([r for r in cluster() if r.id != "ceph-vm"], DEFAULTS, DEFAULTS, bookkeeping)
    assert ("ceph-vm", 0, 1, 0) in rows(path)
    view = store.load()[1]
    assert view.default_hdd == "ceph-vm" and not view.row("ceph-vm").enabled
    assert view.row("ceph-vm").nodes == ()
    store.replace_snapshot(cluster(), DEFAULTS, DEFAULTS, bookkeeping)
    assert ("ceph-vm", 1, 1, 0) in rows(path)


def test_configured_default_missing_from_cluster_is_kept_by_name(store, path):
    store.replace_snapshot(cluster(), {"hdd": "HDD-Storage", "ssd": "local"}, DEFAULTS, bookkeeping)
    view = store.load()[1]
    assert view.default_hdd == "HDD-Storage"
    assert view.row("HDD-Storage").type == "unknown" and not view.row("HDD-Storage").enabled
    assert not any(r.is_default_hdd for r in view.rows if r.id != "HDD-Storage")


def test_set_defaults_refuses_unknown_and_disabled_and_changes_nothing(store, path):
    store.replace_snapshot(cluster(), DEFAULTS, DEFAULTS, bookkeeping)
    before = rows(path)
    for bad in ("nope", "old-iso"):
        with pytest.raises(UnknownDatastore):
            store.set_defaults(hdd="ceph-vm", ssd=bad)
    assert rows(path) == before


def test_never_two_defaults_of_a_kind_even_by_hand(store, path):
    store.replace_snapshot(cluster(), DEFAULTS, DEFAULTS, bookkeeping)
    assert store.set_defaults(hdd="local", ssd="local") == (2, True)
    assert store.set_defaults(hdd="local") == (2, False)  # nothing moved: neither does the generation
    assert rows(path, "SELECT count(*) FROM datastores WHERE is_default_hdd") == [(1,)]
    with pytest.raises(sqlite3.IntegrityError):
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE datastores SET is_default_hdd = 1 WHERE id = 'ceph-vm'")


def test_failed_snapshot_leaves_the_old_one(store, path):
    store.replace_snapshot(cluster(), DEFAULTS, DEFAULTS, bookkeeping)
    before = rows(path, "SELECT * FROM datastores ORDER BY id"), rows(path, "SELECT * FROM datastore_nodes")
    broken = cluster() + [record("dup", nodes=("pve1", "pve1"))]  # violates (datastore, node) uniqueness
    with pytest.raises(StoreError):
        store.replace_snapshot(broken, DEFAULTS, DEFAULTS, bookkeeping)
    assert (rows(path, "SELECT * FROM datastores ORDER BY id"), rows(path, "SELECT * FROM datastore_nodes")) == before


def test_per_node_figures_and_unknown_sizes_round_trip(store):
    recs = cluster()
    store.replace_snapshot(recs, DEFAULTS, DEFAULTS, bookkeeping)
    view = store.load()[1]
    assert view.row("local").nodes == recs[0].nodes
    assert view.row("ceph-vm").size == 5000  # shared: once
    assert view.row("local").size == 2000  # local: summed
    assert sum(r.enabled for r in view.rows) == 3


def test_a_refresh_and_a_default_change_at_once_never_see_a_locked_database(path):
    store = Store(f"sqlite:///{path}")  # the poller's thread and an HTTP thread share it
    store.migrate()
    store.replace_snapshot(cluster(), DEFAULTS, DEFAULTS, bookkeeping)
    errors = []

    def refreshes():
        for _ in range(40):
            try:
                store.replace_snapshot(cluster(), DEFAULTS, DEFAULTS, bookkeeping)
            except StoreError as exc:
                errors.append(exc)

    def defaults():
        for i in range(40):
            try:
                store.set_defaults(hdd=("ceph-vm", "local")[i % 2])
            except StoreError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=refreshes), threading.Thread(target=defaults)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []


def test_another_process_writing_waits_for_the_busy_timeout_not_fails(path):
    store = Store(f"sqlite:///{path}")
    store.migrate()
    store.replace_snapshot(cluster(), DEFAULTS, DEFAULTS, bookkeeping)
    other = sqlite3.connect(path, timeout=10)
    other.execute("BEGIN IMMEDIATE")
    done = []
    worker = threading.Thread(target=lambda: done.append(store.set_defaults(hdd="ceph-vm")))
    worker.start()
    worker.join(0.5)
    assert worker.is_alive() and done == []  # waiting on the other writer, not failed
    other.rollback()
    other.close()
    worker.join(10)
    assert done == [(2, True)]


def _refreshes(store):
    """A sequence of refreshes that exercises every path of replace_snapshot."""
    gone = [r for r in cluster() if r.id != "ceph-vm"]
    yield cluster(), {"hdd": "HDD-Storage", "ssd": "local"}  # a configured default the cluster lacks
    store.set_defaults(hdd="ceph-vm")
    yield gone, DEFAULTS  # ceph-vm vanishes, keeping its flag
    yield gone + [record("new-nfs", "nfs", shared=True, nodes=("pve1", "pve2"))], DEFAULTS
    yield cluster(), DEFAULTS  # ceph-vm comes back


def test_a_snapshot_returns_exactly_what_a_later_read_finds(store):
    for number, (datastores, initial) in enumerate(_refreshes(store), 1):
        info = RefreshInfo(last_attempt=float(number), last_success=float(number), ok=True, duration=0.25,
                           count=number)
        generation, written = store.replace_snapshot(datastores, initial, DEFAULTS, lambda info=info: info)
        assert (generation, written) == store.load(), f"refresh {number}"
        assert written.refresh == info


def test_a_snapshot_is_one_transaction_that_never_reads_the_node_table(store, monkeypatch):
    store.replace_snapshot(cluster(), DEFAULTS, DEFAULTS, bookkeeping)
    statements, transactions = [], []
    execute, begin = store.database.execute_sql, store.database.begin
    monkeypatch.setattr(store.database, "execute_sql",
                        lambda sql, *args, **kw: statements.append(sql) or execute(sql, *args, **kw))
    monkeypatch.setattr(store.database, "begin", lambda *args, **kw: transactions.append(1) or begin(*args, **kw))
    store.replace_snapshot(cluster(), DEFAULTS, DEFAULTS, bookkeeping)
    assert len(transactions) == 1
    assert not [s for s in statements if s.upper().startswith("SELECT") and "datastore_nodes" in s]
    assert any("refresh_state" in s for s in statements)  # the bookkeeping in the same transaction


def test_a_datastore_field_gets_the_column_its_type_says_or_a_clear_error():
    from dataclasses import dataclass, fields

    from pve_datastore_exporter.records import from_proxmox
    from pve_datastore_exporter.store import tables

    @dataclass
    class Fields:  # annotations as records.py has them (postponed: strings)
        files: "int | None" = from_proxmox(None)
        ratio: "float" = from_proxmox(0.0)
        pool: "str" = from_proxmox("", max_length=50)
        nodes: "list" = from_proxmox(None)
        flag: "bool" = from_proxmox(False, max_length=5)

    files, ratio, pool, nodes, flag = fields(Fields)
    assert (type(tables._column(files)).__name__, tables._column(files).null) == ("BigIntegerField", True)
    assert (type(tables._column(ratio)).__name__, tables._column(ratio).null) == ("DoubleField", False)
    assert tables._column(pool).max_length == 50
    for refused in (nodes, flag):
        with pytest.raises(TypeError, match=f"records.Datastore.{refused.name}"):
            tables._column(refused)


def test_every_write_raises_the_generation_and_the_cluster_name_is_kept_for_the_replicas(store, path):
    assert store.load()[0] == 0
    assert store.replace_snapshot(cluster(), DEFAULTS, DEFAULTS, bookkeeping, "prod")[0] == 1
    assert store.set_defaults(hdd="ceph-vm") == (2, True)
    with pytest.raises(UnknownDatastore):
        store.set_defaults(hdd="nope")  # rolled back, the generation with it
    store.migrate()  # not a change
    generation, view = store.load()
    assert generation == 2 and rows(path, "SELECT value FROM generation") == [(2,)]
    assert view.cluster == "prod" and store.refresh_state() == (2, INFO)


def test_a_refresh_state_table_from_before_the_cluster_column_gets_it(path):
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE refresh_state (id INTEGER PRIMARY KEY, last_attempt REAL, last_success REAL, "
                     "ok INTEGER, error TEXT, reason VARCHAR(20), duration REAL, count INTEGER NOT NULL)")
        conn.execute("INSERT INTO refresh_state VALUES (1, 1.0, 1.0, 1, NULL, NULL, 0.5, 7)")
    store = Store(f"sqlite:///{path}")
    store.migrate()
    assert store.load()[1].refresh.count == 7 and store.load()[1].cluster == ""
    assert store.record_refresh(INFO, "prod") == 1
    assert store.load()[1].cluster == "prod"


def test_a_default_set_to_what_it_already_is_raises_no_generation(store, path):
    store.replace_snapshot(cluster(), DEFAULTS, DEFAULTS, bookkeeping)
    assert store.set_defaults(hdd="ceph-vm") == (2, True)
    assert store.set_defaults(hdd="ceph-vm", ssd="local") == (2, False)  # the generation it holds, unraised
    assert rows(path, "SELECT value FROM generation") == [(2,)]  # so no replica reloads for nothing
