"""Plain records passed between the Proxmox reader, the store and the service."""

from __future__ import annotations

from dataclasses import dataclass, field

# Why a refresh failed: Proxmox's side (proxmox.py), the database's ("db"), or a bug ("internal").
FAILURE_REASONS = ("auth", "timeout", "connection", "http_4xx", "http_5xx", "parse", "db", "internal")


@dataclass(frozen=True)
class NodeFigures:
    """One datastore as one node reports it; sizes are None when Proxmox says `unknown`."""

    node: str
    active: bool
    size: int | None = None
    used: int | None = None
    available: int | None = None

    def as_dict(self) -> dict:
        """The JSON shape of a per-node entry."""
        return {"node": self.node, "size": self.size, "used": self.used,
                "available": self.available, "active": self.active}


@dataclass(frozen=True)
class DatastoreRecord:
    """One datastore of the cluster with cluster-wide figures (shared counted once)."""

    id: str
    type: str
    content: str = ""
    shared: bool = False
    enabled: bool = True
    size: int = 0
    used: int = 0
    available: int = 0
    nodes: tuple[NodeFigures, ...] = ()

    @property
    def active(self) -> bool:
        """True when at least one node reports the datastore available."""
        return any(n.active for n in self.nodes)


@dataclass(frozen=True)
class DatastoreRow:
    """A datastore as the store holds it: the record plus the flags and timestamps."""

    record: DatastoreRecord
    is_default_hdd: bool = False
    is_default_ssd: bool = False
    is_system_default: bool = False
    updated_at: str | None = None

    def as_dict(self) -> dict:
        """The seed's JSON keys plus ours."""
        r = self.record
        return {
            "id": r.id, "name": r.id, "type": r.type,
            "size": r.size, "used": r.used, "available": r.available,
            "content": r.content, "shared": r.shared, "enabled": r.enabled, "active": r.active,
            "is_default_hdd": self.is_default_hdd, "is_default_ssd": self.is_default_ssd,
            "is_system_default": self.is_system_default,
            "nodes": [n.as_dict() for n in r.nodes],
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class RefreshInfo:
    """Bookkeeping of refreshes: when, how long, what went wrong."""

    last_attempt: float | None = None
    last_success: float | None = None
    ok: bool | None = None
    error: str | None = None
    reason: str | None = None
    duration: float | None = None
    count: int = 0


@dataclass(frozen=True)
class View:
    """Everything the answers are built from: datastores, defaults, and where they came from."""

    rows: tuple[DatastoreRow, ...] = ()
    default_hdd: str | None = None
    default_ssd: str | None = None
    source: str = "db"
    refresh: RefreshInfo = field(default_factory=RefreshInfo)

    def row(self, datastore_id: str) -> DatastoreRow | None:
        """The row with that ID, or None."""
        return next((r for r in self.rows if r.record.id == datastore_id), None)
