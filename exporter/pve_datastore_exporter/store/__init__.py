"""The one door to the database (peewee is imported in this package only): snapshots and defaults."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import sys
import threading
from collections.abc import Callable

from ..records import REFRESHED, Datastore, NodeFigures, RefreshInfo, Risk, View
from .drivers import peewee  # first: peewee without psycopg2 (store/drivers.py)
from .leader import EPOCH, LOCK_CLASS, LOCK_KEY, HeldLock
from .notify import CHANGES, GENERATION, REFRESH, NoSignals
from .reach import PROBE, DatabaseAway, Reach
from .replicas import AlreadyServed, open_coordination
from .risk import load as load_reads
from .risk import save as save_reads
from .sessions import SessionError, is_sqlite
from .tables import (
    KINDS,
    DatastoreModel,
    DatastoreNodeModel,
    GenerationModel,
    RefreshStateModel,
    db,
    drop_placeholders,
    ensure_schema,
    iso,
    migrate_schema,
    open_database,
    to_datastore,
    to_refresh_info,
    to_view,
    utcnow,
)

DatabaseError = peewee.DatabaseError
driver_errors = peewee.__exception_wrapper__  # turns DB-API errors into peewee's
StoreError = DatabaseError  # what callers catch: every peewee failure (locked, read-only, corrupt)
CHUNK = 200  # rows per multi-row INSERT: well under SQLite's limit of bound parameters
WRITER_LOCK = f"SELECT pg_advisory_xact_lock({LOCK_CLASS + 1}, {LOCK_KEY})"  # released at COMMIT or ROLLBACK


class UnknownDatastore(LookupError):
    """A default was asked for a datastore the cluster does not have (or has disabled)."""


class ForeignCluster(DatabaseError):
    """The database holds another cluster's datastores: never written over (a write refused, rolled back), nor shown as ours.

    `ours` names this replica's cluster as the operator knows it; `outcome` says what was not done.
    """

    def __init__(self, stored: str, ours: str, outcome: str = "refused to store over them (one database per "
                 "cluster; a renamed cluster: see docs/runbooks.md)"):
        super().__init__(f"the database holds the datastores of cluster {stored!r}, not of {ours}: {outcome}")


class Fenced(Exception):
    """A leader's write refused, rolled back: another replica took the lock since this one took it (its epoch moved)."""

    def __init__(self, fence: int, found: int | None):
        super().__init__(f"this replica no longer leads (its lock's epoch {fence}, the database's {found}): "
                         "its write was refused")


@dataclasses.dataclass
class Commit:
    """What a write committed: the generation it raised the database to, or the one it holds for a write that changed nothing."""

    generation: int = 0
    changed: bool = True  # the body sets it False when it moved nothing: no generation, no NOTIFY


class Store:
    """The cache and the defaults, each call in its own connection and transaction.

    One Store per process: the models are bound to the database of the last Store made.
    """

    def __init__(self, url: str, busy_timeout_ms: int = 5000):
        self.url = url
        self.database = open_database(url, busy_timeout_ms)
        self._writing = threading.Lock()  # one writer at a time inside the process
        self._postgres = not is_sqlite(url)
        self._connection = Reach(self.database, self._postgres).connection  # a connection per call
        db.initialize(self.database)

    @contextlib.contextmanager
    def _write(self, announce: bool = True, fence: int | None = None, migrate: bool = False):
        """One transaction; it yields the Commit whose generation is set when the body is done.

        A leader's write carries `fence`, the epoch its lock was taken with: checked last, just before
        COMMIT, so that a take-over at any moment of the write refuses it (Fenced, rolled back). A
        take-over after the check cannot overtake it: the new leader's writes wait for WRITER_LOCK.
        """
        # SQLite: take the write lock at BEGIN. A deferred transaction that reads first cannot be
        # upgraded while another writer holds the lock, and then fails at once ("database is locked").
        immediate = {} if self._postgres else {"lock_type": "IMMEDIATE"}
        commit = Commit()
        with self._writing, self._connection(), self.database.atomic(**immediate):
            if self._postgres:  # one writer at a time among replicas too: two CREATE TABLEs at once collide
                self.database.execute_sql(WRITER_LOCK)
            # `migrate`: every table and column; else only a missing table (a DB file deleted under us) is made.
            (migrate_schema if migrate else ensure_schema)(self.database)
            yield commit
            self._check_fence(fence)
            if announce and commit.changed:
                commit.generation = self._announce()
            elif announce:
                commit.generation = self._generation()

    def _announce(self) -> int:
        """Raise the generation in the write's transaction, and tell the listening replicas on commit."""
        g = GenerationModel
        g.insert(id=1, value=1).on_conflict(conflict_target=[g.id], update={g.value: g.value + 1}).execute()
        generation = self._generation()
        if self._postgres:  # NOTIFY is transactional: delivered at COMMIT, never for a rolled-back write
            self.database.execute_sql("SELECT pg_notify(%s, %s)", (CHANGES, str(generation)))
        return generation

    def _check_fence(self, fence: int | None) -> None:
        if fence is None or not self._postgres:  # SQLite: one process serves the file (its lock file)
            return
        row = self.database.execute_sql(EPOCH).fetchone()
        if row is None or row[0] != fence:
            raise Fenced(fence, row and row[0])

    def migrate(self) -> None:
        """Create missing tables and columns in place; a seed-era file keeps its rows and flags."""
        with self._write(announce=False, migrate=True):
            pass

    def is_empty(self) -> bool:
        """True before the first refresh ever stored a datastore."""
        with self._connection():
            return not DatastoreModel.select().where(DatastoreModel.present == True).exists()  # noqa: E712

    def replace_snapshot(self, datastores: list[Datastore], initial_defaults: dict[str, str],
                         system_defaults: dict[str, str], bookkeeping: Callable[[], RefreshInfo],
                         cluster: str = "", fence: int | None = None,
                         label: Callable[[str], str | None] | None = None) -> tuple[int, View]:
        """Swap in a new snapshot and its bookkeeping in one transaction; return its generation and the view it wrote.

        Every default flag is kept; a kind of default no row carries yet takes `initial_defaults[kind]`. Of what
        is stored only the small `datastores` table is read: the flags and the datastores that vanished.
        `bookkeeping()` is called last, so that the refresh's duration includes its write. `cluster` is
        the cluster's name as the reader knows it, kept for the replicas that do not read. `fence`: the
        leader's epoch (Fenced when another replica took the lock since). `label(stored name)`: the
        name to store over the one stored, None when that is another cluster's (ForeignCluster, nothing written).
        """
        now = utcnow()
        with self._write(fence=fence) as commit:
            cluster = self._name(cluster, label)
            before = {row.id: row for row in self._locked(DatastoreModel.select())}
            self._upsert(datastores, now)
            seen = {d.id for d in datastores}
            vanished = [i for i, row in before.items() if row.present and i not in seen]
            (DatastoreModel.update(enabled=False, present=False, active=False, updated_at=now)
             .where(DatastoreModel.id.in_(vanished)).execute())
            DatastoreNodeModel.delete().execute()
            self._insert_nodes([(d.id, n.node, n.active, n.size, n.used, n.available)
                                for d in datastores for n in d.nodes])
            defaults, added = self._apply_initial_defaults(before, seen, initial_defaults, now)
            system = sorted(set(system_defaults.values()))
            DatastoreModel.update(is_system_default=DatastoreModel.id.in_(system)).execute()
            self._save_refresh(refresh := bookkeeping(), cluster)
        rows = {i: to_datastore(row, ()) for i, row in {**before, **added}.items()}
        rows.update({i: dataclasses.replace(rows[i], enabled=False, active=False, updated_at=iso(now))
                     for i in vanished})
        rows.update({d.id: dataclasses.replace(d, updated_at=iso(now)) for d in datastores})
        return commit.generation, to_view([dataclasses.replace(rows[i], is_system_default=i in system,
                                                               **{f"is_default_{r}": defaults[r] == i for r in KINDS})
                                           for i in sorted(rows)], refresh, cluster)

    def _locked(self, query):
        # PostgreSQL: a default changed by another process waits for this snapshot, so the view it
        # returns holds the flags in force. SQLite's BEGIN IMMEDIATE already locks the whole file.
        return query.for_update() if self._postgres else query

    def _apply_initial_defaults(self, before: dict[str, DatastoreModel], seen: set[str],
                                initial: dict[str, str], now: dt.datetime) -> tuple[dict, dict]:
        """Flag the initial default of each kind no row carries; return the defaults and new rows."""
        defaults = {kind: next((i for i, row in before.items() if getattr(row, f"is_default_{kind}")), None)
                    for kind in KINDS}
        added = {}
        for kind in KINDS:
            if defaults[kind] is not None or kind not in initial:
                continue  # the .env value is only the first default: once a row has the flag, the DB rules
            defaults[kind] = datastore_id = initial[kind]
            if datastore_id not in seen and datastore_id not in before and datastore_id not in added:
                # Keep the configured name though the cluster lacks it, so that the answers can say so.
                added[datastore_id] = DatastoreModel.create(id=datastore_id, name=datastore_id, type="unknown",
                                                            enabled=False, present=False, created_at=now,
                                                            updated_at=now)
            DatastoreModel.update({f"is_default_{kind}": True}).where(DatastoreModel.id == datastore_id).execute()
        return defaults, added

    def _insert_nodes(self, rows: list[tuple]) -> None:
        # executemany on the driver: peewee's per-value SQL building costs ~1 s at 10,000 rows.
        mark = self.database.param
        sql = (f"INSERT INTO {DatastoreNodeModel._meta.table_name} (datastore, node, active, size, used, available) "
               f"VALUES ({', '.join([mark] * 6)})")
        with driver_errors:  # the driver's errors become peewee's, like every other query's
            self.database.cursor().executemany(sql, rows)

    def _upsert(self, datastores: list[Datastore], now: dt.datetime) -> None:
        # The refreshed columns are overwritten; the kept ones (the default flags) never are.
        rewritten = [getattr(DatastoreModel, name) for name in (*REFRESHED, "name", "present", "updated_at")]
        for start in range(0, len(datastores), CHUNK):
            chunk = [{**{name: getattr(d, name) for name in REFRESHED}, "id": d.id, "name": d.id,
                      "present": True, "created_at": now, "updated_at": now}
                     for d in datastores[start:start + CHUNK]]
            (DatastoreModel.insert_many(chunk)
             .on_conflict(conflict_target=[DatastoreModel.id], preserve=rewritten).execute())

    def set_defaults(self, hdd: str | None = None, ssd: str | None = None) -> tuple[int, bool]:
        """Move the default flags; the generation and whether a flag moved; UnknownDatastore unless each target is enabled."""
        changed = False
        with self._write() as commit:
            commit.changed = False  # until a flag moves
            for kind, datastore_id in (("hdd", hdd), ("ssd", ssd)):
                if datastore_id is None:
                    continue
                row = DatastoreModel.get_or_none(DatastoreModel.id == datastore_id)
                if row is None or not row.enabled or not row.present:
                    raise UnknownDatastore(datastore_id)
                if getattr(row, f"is_default_{kind}"):
                    continue
                flag = getattr(DatastoreModel, f"is_default_{kind}")
                DatastoreModel.update({flag: False}).where(flag == True).execute()  # noqa: E712
                DatastoreModel.update({flag: True}).where(DatastoreModel.id == datastore_id).execute()
                changed = commit.changed = True
            if changed:
                drop_placeholders()  # the stand-in of a .env default the cluster lacks, now that none names it
        return commit.generation, changed

    def load(self) -> tuple[int, View]:
        """The view and the generation it belongs to, read from one snapshot of the database."""
        node = DatastoreNodeModel
        with self._connection(), self._snapshot():
            generation = self._generation()
            nodes: dict[str, list[NodeFigures]] = {}
            query = node.select(node.datastore, node.node, node.active, node.size, node.used, node.available)
            for datastore, name, active, size, used, available in self.database.execute(query).fetchall():
                nodes.setdefault(datastore, []).append(
                    NodeFigures(node=sys.intern(name), size=size, used=used, available=available, active=bool(active)))
            # Sorted here, not by ORDER BY: PostgreSQL's collation may order IDs unlike the parser.
            rows = [to_datastore(row, sorted(nodes.get(row.id, ()), key=lambda n: n.node))
                    for row in sorted(DatastoreModel.select(), key=lambda row: row.id)]
            state = RefreshStateModel.get_or_none(RefreshStateModel.id == 1)
            risk = load_reads()
        return generation, dataclasses.replace(to_view(rows, to_refresh_info(state), state and state.cluster), risk=risk)

    def save_node_reads(self, read: str, outcomes: dict, now: float, keep_for: float,
                        fence: int | None = None) -> tuple[int, Risk]:
        """Store one per-node read (node -> its records, or (reason, error)); the generation and every read's figures.

        A node that failed keeps its last good figures until they are `keep_for` s old (store/risk.py). `fence`
        is the epoch the read's batches were made under (Fenced when another replica took the lock since).
        """
        with self._write(fence=fence) as commit:
            save_reads(read, outcomes, now, keep_for)
            risk = load_reads()
        return commit.generation, risk

    def refresh_state(self) -> tuple[int, RefreshInfo]:
        """The generation and the bookkeeping of the last refresh, whichever process made it."""
        with self._connection(), self._snapshot():
            return self._generation(), to_refresh_info(RefreshStateModel.get_or_none(RefreshStateModel.id == 1))

    def generation(self) -> int:
        """The number every write raises: one small query, what a conditional GET compares (service.version)."""
        with self._connection():  # through Reach: no connect while the database is known to be away
            return self._generation()

    def _snapshot(self):
        # One snapshot for every statement: PostgreSQL's default isolation lets each see a later commit.
        return self.database.atomic(**({"isolation_level": "REPEATABLE READ"} if self._postgres else {}))

    def _generation(self) -> int:
        row = self.database.execute_sql(GENERATION).fetchone()
        return row[0] if row else 0

    def ask_for_refresh(self) -> None:
        """Ask the leader (the replica holding the lock) to refresh now; PostgreSQL only."""
        if self._postgres:
            with self._connection():
                self.database.execute_sql("SELECT pg_notify(%s, '')", (REFRESH,))

    def record_refresh(self, info: RefreshInfo, cluster: str = "", fence: int | None = None,
                       label: Callable[[str], str | None] | None = None) -> int:
        """Write the bookkeeping of a refresh that stored no snapshot; the generation it raised the database to."""
        with self._write(fence=fence) as commit:
            self._save_refresh(info, self._name(cluster, label))
        return commit.generation

    @staticmethod
    def _name(cluster: str, label: Callable[[str], str | None] | None) -> str:
        """The cluster's name to store (inside the write): `cluster`, or `label`'s over the stored one."""
        if label is None:
            return cluster
        state = RefreshStateModel.get_or_none(RefreshStateModel.id == 1)
        stored = (state and state.cluster) or ""
        name = label(stored)
        if name is None:
            raise ForeignCluster(stored, repr(cluster))
        return name

    def _save_refresh(self, info: RefreshInfo, cluster: str = "") -> None:
        fields = dataclasses.asdict(info) | ({"cluster": cluster} if cluster else {})
        (RefreshStateModel.insert(id=1, **fields)
         .on_conflict(conflict_target=[RefreshStateModel.id], update=fields).execute())


# What the coordination (coordination.py) takes from here: the store stays the one door to the database.
__all__ = ["PROBE", "AlreadyServed", "DatabaseAway", "Fenced", "ForeignCluster", "HeldLock", "NoSignals", "SessionError", "Store",
           "StoreError", "UnknownDatastore", "is_sqlite", "open_coordination"]
