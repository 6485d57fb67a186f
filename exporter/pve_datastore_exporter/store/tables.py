"""The tables of the store: the seed's `datastores`, per-node figures, refresh bookkeeping, and their migration."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import os

from peewee import (
    BigIntegerField,
    BooleanField,
    CharField,
    CompositeKey,
    DatabaseProxy,
    DateTimeField,
    DoubleField,
    IntegerField,
    Model,
    PostgresqlDatabase,
    TextField,
)
from playhouse.db_url import connect
from playhouse.migrate import SchemaMigrator, migrate

from ..records import COLUMNS, Datastore, RefreshInfo, View
from .drivers import bind_psycopg2
from .sessions import MAIN, is_sqlite, pg_params, sqlite_path

db = DatabaseProxy()


def utcnow() -> dt.datetime:
    """Now in UTC, naive and to the second, as the seed's DATETIME columns hold it."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


class BaseModel(Model):
    """Every table lives in the one database the Store opened."""

    class Meta:
        database = db


# A records.Datastore field's type and its column; `X | None` makes the column nullable.
# Floats are DOUBLE: peewee's FloatField is REAL, 4 bytes on PostgreSQL (a Unix time to ~2 minutes).
COLUMN_TYPES = {"bool": BooleanField, "int": BigIntegerField, "float": DoubleField, "str": TextField}


def _column(spec):
    """The peewee column of a records.Datastore field, from its type, its default and `max_length`."""
    kind, optional = spec.type.removesuffix(" | None"), spec.type.endswith(" | None")
    options = spec.metadata["column"]
    if kind not in COLUMN_TYPES or set(options) - {"max_length"} or ("max_length" in options and kind != "str"):
        raise TypeError(f"records.Datastore.{spec.name}: no column for type {spec.type!r} with {options}")
    if "max_length" in options:
        return CharField(max_length=options["max_length"], default=spec.default, null=optional)
    # A str without max_length is TEXT, nullable like the seed's `content`: NULL reads as the default.
    return COLUMN_TYPES[kind](default=spec.default, null=optional or kind == "str")


# The seed's `datastores` table, in its order; an upgraded seed-era file keeps it, a new one gets it.
SEED_COLUMNS = ("id", "name", "type", "size", "used", "available", "content", "enabled", "is_default_hdd",
                "is_default_ssd", "is_system_default", "created_at", "updated_at")


def _datastore_columns() -> dict:
    """The columns of `datastores` but the key: the seed's first, then ours, made in that order."""
    makers = {"name": lambda: CharField(max_length=100),  # the seed's display name; here always the ID
              **{f.name: functools.partial(_column, f) for f in COLUMNS},
              "created_at": lambda: DateTimeField(default=utcnow),
              "updated_at": lambda: DateTimeField(default=utcnow),
              "present": lambda: BooleanField(default=True)}  # false: gone from Proxmox, or never there
    # peewee lays out a new table's columns in the order their fields were made.
    order = sorted(makers, key=lambda name: SEED_COLUMNS.index(name) if name in SEED_COLUMNS else len(SEED_COLUMNS))
    return {name: makers[name]() for name in order}


class DatastoreModel(BaseModel):
    """The seed's table, column for column; a datastore's columns come from records.COLUMNS."""

    id = CharField(max_length=100, primary_key=True)

    class Meta:
        table_name = "datastores"


for _name, _column_field in _datastore_columns().items():
    DatastoreModel._meta.add_field(_name, _column_field)


class DatastoreNodeModel(BaseModel):
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


class RefreshStateModel(BaseModel):
    """A single row (id 1): the last attempt, the last success, the last error."""

    id = IntegerField(primary_key=True)
    last_attempt = DoubleField(null=True)
    last_success = DoubleField(null=True)
    ok = BooleanField(null=True)
    error = TextField(null=True)
    reason = CharField(max_length=20, null=True)
    duration = DoubleField(null=True)
    count = IntegerField(default=0)
    cluster = TextField(null=True)  # the name the leader's reader knew: every replica labels with it

    class Meta:
        table_name = "refresh_state"


class GenerationModel(BaseModel):
    """A single row (id 1): a number every write raises in its own transaction; replicas compare it to theirs."""

    id = IntegerField(primary_key=True)
    value = BigIntegerField(default=0)

    class Meta:
        table_name = "generation"


class LeaderModel(BaseModel):
    """A single row (id 1) that only the session holding the leader's lock writes (store/leader.py)."""

    id = IntegerField(primary_key=True)
    holder = TextField(null=True)  # host, pid and listen address of the replica that took the lock last
    since = DoubleField(null=True)  # the database's clock, epoch seconds
    reading_until = DoubleField(null=True)  # set before each read of Proxmox, cleared after; NULL between reads
    epoch = BigIntegerField(null=True)  # raised by each take-over; a leader's write carries the one it took

    class Meta:
        table_name = "leader"


class NodeReadModel(BaseModel):
    """One per-node read of one node: its last good figures (JSON) and bookkeeping."""

    read = CharField(max_length=20)
    node = CharField(max_length=100)
    last_attempt = DoubleField(null=True)
    last_success = DoubleField(null=True)
    reason = CharField(max_length=20, null=True)
    error = TextField(null=True)
    failures = TextField(default="{}")  # {reason: count}
    figures = TextField(default="[]")  # [[record name, {field: value}], ...] of the last good read

    class Meta:
        table_name = "node_reads"
        primary_key = CompositeKey("read", "node")


MODELS = (DatastoreModel, DatastoreNodeModel, RefreshStateModel, GenerationModel, LeaderModel, NodeReadModel)
# A database-level guarantee of "never two default HDD (or SSD) datastores".
ONE_DEFAULT = ("CREATE UNIQUE INDEX IF NOT EXISTS datastores_one_default_{kind} "
               "ON datastores (is_default_{kind}) WHERE is_default_{kind}")
KINDS = ("hdd", "ssd")  # the kinds of default datastore (the metric labels them `role`)


def open_database(url: str, busy_timeout_ms: int = 5000):
    """Connect by URL; SQLite gets WAL and a busy timeout, and its folder is created; PostgreSQL short timeouts."""
    if is_sqlite(url):
        path = sqlite_path(url)
        if path and os.path.dirname(path):
            # A folder that cannot be made surfaces as a DatabaseError at first use: the .env fallback.
            with contextlib.suppress(OSError):
                os.makedirs(os.path.dirname(path), exist_ok=True)
        return connect(url, pragmas={"journal_mode": "wal", "busy_timeout": busy_timeout_ms, "foreign_keys": 1})
    bind_psycopg2()
    return PostgresqlDatabase(**pg_params(url, MAIN))  # config.py refused a URL without the database's name


def ensure_schema(database) -> None:
    """migrate_schema when a table is missing (a database file deleted under us, an empty new database), else two queries.

    A whole migration is ~15 statements (20 ms a write on PostgreSQL): made at start (Store.migrate) and after the
    lock's session failed (Coordinator's prepare), not on every write.
    """
    if not {m._meta.table_name for m in MODELS} <= set(database.get_tables()):
        migrate_schema(database)
    else:
        drop_placeholders()  # an older replica beside us (a rolling upgrade) may still leave a stand-in


def migrate_schema(database) -> None:
    """Create missing tables and columns in place; a seed-era file keeps its rows and flags."""
    if "id" in {c.name for c in database.get_columns("datastore_nodes")}:
        DatastoreNodeModel.drop_table()  # a per-refresh cache from before the composite key
    database.create_tables(MODELS, safe=True)
    for model in (DatastoreModel, RefreshStateModel, LeaderModel):
        table = model._meta.table_name
        have = {c.name for c in database.get_columns(table)}
        missing = [f for f in model._meta.sorted_fields if f.column_name not in have]
        if missing:
            migrator = SchemaMigrator.from_database(database)
            migrate(*(migrator.add_column(table, f.column_name, f) for f in missing))
    for kind in KINDS:
        _keep_one_default(kind)
        database.execute_sql(ONE_DEFAULT.format(kind=kind))
    _widen_floats(database)
    drop_placeholders()  # a stand-in an earlier version left behind after its default moved


def drop_placeholders() -> None:
    """Forget a `.env` default the cluster never had once no default names it (replace_snapshot made its row)."""
    # A datastore that was seen keeps its type; only the stand-in of _apply_initial_defaults reads "unknown".
    m = DatastoreModel
    stale = ((m.present == False) & (m.type == "unknown") & (m.is_default_hdd == False)  # noqa: E712
             & (m.is_default_ssd == False))  # noqa: E712
    # Looked for first: a DELETE that removes nothing still writes, and a read-only database refuses it.
    if m.select(m.id).where(stale).exists():
        m.delete().where(stale).execute()


def _widen_floats(database) -> None:
    # Made before DoubleField was used here: PostgreSQL's REAL rounds a Unix time to ~2 minutes.
    if database.field_types.get("DOUBLE") == "DOUBLE PRECISION":
        for column in database.get_columns("refresh_state"):
            if column.data_type == "real":
                database.execute_sql(f'ALTER TABLE refresh_state ALTER COLUMN "{column.name}" TYPE DOUBLE PRECISION')


def _keep_one_default(kind: str) -> None:
    # A seed-era DB may hold two flagged rows; keep the most recently updated one.
    flag = getattr(DatastoreModel, f"is_default_{kind}")
    rows = list(DatastoreModel.select(DatastoreModel.id).where(flag == True)  # noqa: E712
                .order_by(DatastoreModel.updated_at.desc(), DatastoreModel.id))
    if len(rows) > 1:
        DatastoreModel.update({flag: False}).where(DatastoreModel.id.in_([r.id for r in rows[1:]])).execute()


def iso(moment) -> str | None:
    """A DATETIME column's value as the JSON's ISO 8601 UTC text."""
    return moment.isoformat() + "Z" if isinstance(moment, dt.datetime) else moment


def to_datastore(row: DatastoreModel, nodes) -> Datastore:
    """A row of `datastores` as the record; a datastore gone from Proxmox reads as disabled."""
    # NULL in a seed-era row (size, content) reads as the field's default.
    values = {f.name: f.default if getattr(row, f.name) is None else getattr(row, f.name) for f in COLUMNS}
    return Datastore(**{**values, "id": row.id, "enabled": values["enabled"] and bool(row.present),
                        "nodes": tuple(nodes), "updated_at": iso(row.updated_at)})


def to_view(rows: list[Datastore], refresh: RefreshInfo, cluster: str | None = None) -> View:
    """The view of these datastores: the defaults are the flagged rows."""
    hdd = next((r.id for r in rows if r.is_default_hdd), None)
    ssd = next((r.id for r in rows if r.is_default_ssd), None)
    return View(rows=tuple(rows), default_hdd=hdd, default_ssd=ssd, source="db", refresh=refresh,
                cluster=cluster or "")


def to_refresh_info(state: RefreshStateModel | None) -> RefreshInfo:
    """The bookkeeping row as the record."""
    if state is None:
        return RefreshInfo()
    return RefreshInfo(**{f.name: getattr(state, f.name) for f in dataclasses.fields(RefreshInfo)})
