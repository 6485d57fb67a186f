"""The one importer of peewee: the seed's `datastores` table, per-node figures, refresh bookkeeping."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
from urllib.parse import urlparse

from peewee import (
    BigIntegerField,
    BooleanField,
    CharField,
    CompositeKey,
    DatabaseError,
    DatabaseProxy,
    DateTimeField,
    FloatField,
    IntegerField,
    Model,
    SqliteDatabase,
    TextField,
)
from peewee import __exception_wrapper__ as driver_errors  # turns DB-API errors into peewee's
from playhouse.db_url import connect
from playhouse.migrate import SchemaMigrator, migrate

from .records import DatastoreRecord, DatastoreRow, NodeFigures, RefreshInfo, View

StoreError = DatabaseError  # what callers catch: every peewee failure (locked, read-only, corrupt)

db = DatabaseProxy()


class UnknownDatastore(LookupError):
    """A default was asked for a datastore the cluster does not have (or has disabled)."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


class BaseModel(Model):
    """Every table lives in the one database the Store opened."""

    class Meta:
        database = db


class Datastore(BaseModel):
    """The seed's table, column for column; `shared`, `active`, `present` are ours."""

    id = CharField(max_length=100, primary_key=True)
    name = CharField(max_length=100)
    type = CharField(max_length=50)
    size = BigIntegerField(default=0)
    used = BigIntegerField(default=0)
    available = BigIntegerField(default=0)
    content = TextField(null=True)
    enabled = BooleanField(default=True)
    is_default_hdd = BooleanField(default=False)
    is_default_ssd = BooleanField(default=False)
    is_system_default = BooleanField(default=False)
    created_at = DateTimeField(default=_utcnow)
    updated_at = DateTimeField(default=_utcnow)
    shared = BooleanField(default=False)
    active = BooleanField(default=False)
    present = BooleanField(default=True)  # false: gone from Proxmox, or a default it never had

    class Meta:
        table_name = "datastores"


class DatastoreNode(BaseModel):
    """One datastore on one node; sizes are NULL when Proxmox reports it `unknown`."""

    datastore = CharField(max_length=100)
    node = CharField(max_length=100)
    active = BooleanField(default=False)
    size = BigIntegerField(null=True)
    used = BigIntegerField(null=True)
    available = BigIntegerField(null=True)

    class Meta:
        table_name = "datastore_nodes"
        # No surrogate id: every refresh rewrites ~10,000 rows, which would exhaust a SERIAL in months.
        primary_key = CompositeKey("datastore", "node")


class RefreshState(BaseModel):
    """A single row (id 1): the last attempt, the last success, the last error."""

    id = IntegerField(primary_key=True)
    last_attempt = FloatField(null=True)
    last_success = FloatField(null=True)
    ok = BooleanField(null=True)
    error = TextField(null=True)
    reason = CharField(max_length=20, null=True)
    duration = FloatField(null=True)
    count = IntegerField(default=0)

    class Meta:
        table_name = "refresh_state"


MODELS = (Datastore, DatastoreNode, RefreshState)
# A database-level guarantee of "never two default HDD (or SSD) datastores".
ONE_DEFAULT = ("CREATE UNIQUE INDEX IF NOT EXISTS datastores_one_default_{role} "
               "ON datastores (is_default_{role}) WHERE is_default_{role}")


def open_database(url: str, busy_timeout_ms: int = 5000):
    """Connect by URL; SQLite gets WAL and a busy timeout, and its folder is created."""
    parsed = urlparse(url)
    if parsed.scheme.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:" and os.path.dirname(path):
            # A folder that cannot be made surfaces as a DatabaseError at first use: the .env fallback.
            with contextlib.suppress(OSError):
                os.makedirs(os.path.dirname(path), exist_ok=True)
        return connect(url, pragmas={"journal_mode": "wal", "busy_timeout": busy_timeout_ms, "foreign_keys": 1})
    return connect(url)


class Store:
    """The cache and the defaults, each call in its own connection and transaction.

    One Store per process: the models are bound to the database of the last Store made.
    """

    def __init__(self, url: str, busy_timeout_ms: int = 5000):
        self.url = url
        self.database = open_database(url, busy_timeout_ms)
        self._writing = threading.Lock()  # one writer at a time inside the process
        db.initialize(self.database)

    @contextlib.contextmanager
    def _write(self):
        # SQLite: take the write lock at BEGIN. A deferred transaction that reads first cannot be
        # upgraded while another writer holds the lock, and then fails at once ("database is locked").
        immediate = {"lock_type": "IMMEDIATE"} if isinstance(self.database, SqliteDatabase) else {}
        with self._writing, self.database.connection_context(), self.database.atomic(**immediate):
            self._migrate()
            yield

    def migrate(self) -> None:
        """Create missing tables and columns in place; a seed-era file keeps its rows and flags."""
        with self._write():
            pass

    def _migrate(self) -> None:
        if "id" in {c.name for c in self.database.get_columns("datastore_nodes")}:
            DatastoreNode.drop_table()  # a per-refresh cache from before the composite key
        self.database.create_tables(MODELS, safe=True)
        have = {c.name for c in self.database.get_columns("datastores")}
        migrator = SchemaMigrator.from_database(self.database)
        missing = [(name, Datastore._meta.fields[name]) for name in ("shared", "active", "present")
                   if name not in have]
        if missing:
            migrate(*(migrator.add_column("datastores", name, field) for name, field in missing))
        for role in ("hdd", "ssd"):
            self._keep_one_default(role)
            self.database.execute_sql(ONE_DEFAULT.format(role=role))

    def _keep_one_default(self, role: str) -> None:
        # A seed-era DB may hold two flagged rows; keep the most recently updated one.
        flag = getattr(Datastore, f"is_default_{role}")
        rows = list(Datastore.select(Datastore.id).where(flag == True)  # noqa: E712
                    .order_by(Datastore.updated_at.desc(), Datastore.id))
        if len(rows) > 1:
            Datastore.update({flag: False}).where(Datastore.id.in_([r.id for r in rows[1:]])).execute()

    def is_empty(self) -> bool:
        """True before the first refresh ever stored a datastore."""
        with self.database.connection_context():
            return not Datastore.select().where(Datastore.present == True).exists()  # noqa: E712

    def replace_snapshot(self, records: list[DatastoreRecord], seed: dict[str, str],
                         system: dict[str, str]) -> None:
        """Swap in a new snapshot atomically, keeping every default flag; seed defaults if none."""
        now = _utcnow()
        with self._write():
            self._upsert(records, now)
            seen = [r.id for r in records]
            (Datastore.update(enabled=False, present=False, active=False, updated_at=now)
             .where(Datastore.id.not_in(seen) & (Datastore.present == True)).execute())  # noqa: E712
            DatastoreNode.delete().execute()
            self._insert_nodes([(r.id, n.node, n.active, n.size, n.used, n.available)
                                for r in records for n in r.nodes])
            for role, datastore_id in seed.items():
                self._seed_default(role, datastore_id, now)
            Datastore.update(is_system_default=Datastore.id.in_(list(system.values()))).execute()

    def _insert_nodes(self, rows: list[tuple]) -> None:
        # executemany on the driver: peewee's per-value SQL building costs ~1 s at 10,000 rows.
        mark = self.database.param
        sql = (f"INSERT INTO {DatastoreNode._meta.table_name} (datastore, node, active, size, used, available) "
               f"VALUES ({', '.join([mark] * 6)})")
        with driver_errors:  # the driver's errors become peewee's, like every other query's
            self.database.cursor().executemany(sql, rows)

    def _upsert(self, records: list[DatastoreRecord], now: dt.datetime) -> None:
        for start in range(0, len(records), 200):
            chunk = [{"id": r.id, "name": r.id, "type": r.type, "size": r.size, "used": r.used,
                      "available": r.available, "content": r.content, "enabled": r.enabled,
                      "shared": r.shared, "active": r.active, "present": True,
                      "created_at": now, "updated_at": now} for r in records[start:start + 200]]
            keep = ("name", "type", "size", "used", "available", "content", "enabled",
                    "shared", "active", "present", "updated_at")
            (Datastore.insert_many(chunk)
             .on_conflict(conflict_target=[Datastore.id], preserve=[getattr(Datastore, k) for k in keep])
             .execute())

    def _seed_default(self, role: str, datastore_id: str, now: dt.datetime) -> None:
        # The .env value is only the initial default: once a row carries the flag, the DB rules.
        flag = getattr(Datastore, f"is_default_{role}")
        if Datastore.select().where(flag == True).exists():  # noqa: E712
            return
        if not Datastore.select().where(Datastore.id == datastore_id).exists():
            # Keep the configured name even though the cluster lacks it, so answers can say so.
            Datastore.create(id=datastore_id, name=datastore_id, type="unknown", enabled=False,
                             present=False, created_at=now, updated_at=now)
        Datastore.update({flag: True}).where(Datastore.id == datastore_id).execute()

    def set_defaults(self, hdd: str | None = None, ssd: str | None = None) -> bool:
        """Move the default flags; raise UnknownDatastore unless each target is an enabled datastore."""
        changed = False
        with self._write():
            for role, datastore_id in (("hdd", hdd), ("ssd", ssd)):
                if datastore_id is None:
                    continue
                row = Datastore.get_or_none(Datastore.id == datastore_id)
                if row is None or not row.enabled or not row.present:
                    raise UnknownDatastore(datastore_id)
                flag = getattr(Datastore, f"is_default_{role}")
                if getattr(row, f"is_default_{role}"):
                    continue
                Datastore.update({flag: False}).where(flag == True).execute()  # noqa: E712
                Datastore.update({flag: True}).where(Datastore.id == datastore_id).execute()
                changed = True
        return changed

    def view(self) -> View:
        """Every datastore with its nodes, the defaults, and the refresh bookkeeping."""
        with self.database.connection_context():
            nodes: dict[str, list[NodeFigures]] = {}
            query = (DatastoreNode.select(DatastoreNode.datastore, DatastoreNode.node, DatastoreNode.active,
                                          DatastoreNode.size, DatastoreNode.used, DatastoreNode.available)
                     .order_by(DatastoreNode.datastore, DatastoreNode.node))
            for datastore, node, active, size, used, available in self.database.execute(query).fetchall():
                nodes.setdefault(datastore, []).append(NodeFigures(node, bool(active), size, used, available))
            rows = tuple(_row(d, nodes.get(d.id, ())) for d in Datastore.select().order_by(Datastore.id))
            state = RefreshState.get_or_none(RefreshState.id == 1)
        hdd = next((r.record.id for r in rows if r.is_default_hdd), None)
        ssd = next((r.record.id for r in rows if r.is_default_ssd), None)
        return View(rows=rows, default_hdd=hdd, default_ssd=ssd, source="db", refresh=_refresh_info(state))

    def record_refresh(self, info: RefreshInfo) -> None:
        """Write the bookkeeping row."""
        with self._write():
            fields = {"last_attempt": info.last_attempt, "last_success": info.last_success, "ok": info.ok,
                      "error": info.error, "reason": info.reason, "duration": info.duration, "count": info.count}
            (RefreshState.insert(id=1, **fields)
             .on_conflict(conflict_target=[RefreshState.id], update=fields).execute())


def _row(d: Datastore, nodes) -> DatastoreRow:
    record = DatastoreRecord(
        id=d.id, type=d.type, content=d.content or "", shared=bool(d.shared),
        enabled=bool(d.enabled) and bool(d.present), size=d.size or 0, used=d.used or 0,
        available=d.available or 0, nodes=tuple(nodes))
    updated = d.updated_at.isoformat() + "Z" if isinstance(d.updated_at, dt.datetime) else d.updated_at
    return DatastoreRow(record=record, is_default_hdd=bool(d.is_default_hdd),
                        is_default_ssd=bool(d.is_default_ssd),
                        is_system_default=bool(d.is_system_default), updated_at=updated)


def _refresh_info(state: RefreshState | None) -> RefreshInfo:
    if state is None:
        return RefreshInfo()
    return RefreshInfo(last_attempt=state.last_attempt, last_success=state.last_success, ok=state.ok,
                       error=state.error, reason=state.reason, duration=state.duration, count=state.count)
