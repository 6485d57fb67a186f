"""A datastore declared once, and the other plain records passed between proxmox, store and service."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

# Why a refresh failed: Proxmox's side (proxmox.py), the database's ("db"), or a bug ("internal").
FAILURE_REASONS = ("auth", "timeout", "connection", "http_4xx", "http_5xx", "parse", "db", "internal")
MAX_MESSAGE = 500  # characters of a failure's message kept in the answers, the DB and the log


class RefreshFailed(Exception):
    """A refresh failed; `reason` is one of FAILURE_REASONS, the message is free of secrets, encodable and short."""

    def __init__(self, reason: str, message: str):
        # Whatever an exception or an error page carried: a lone surrogate fits no UTF-8 output, and
        # a whole page does not belong in an answer or a log line.
        message = message.encode("utf-8", "backslashreplace").decode()
        super().__init__(message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE - 6] + " [...]")
        self.reason = reason


def from_proxmox(default, **column):
    """A field the parser fills from Proxmox: a column of `datastores`, rewritten by every refresh."""
    return field(default=default, metadata={"column": column, "refreshed": True})


def kept(default, **column):
    """A field the store owns (the default flags): a column the refresh's upsert leaves alone."""
    return field(default=default, metadata={"column": column, "refreshed": False})


@dataclass(frozen=True, slots=True)  # slots: 40 bytes less each, and 100 x 100 clusters hold 10,000
class NodeFigures:
    """One datastore as one node reports it; sizes are None when Proxmox says `unknown`."""

    node: str
    size: int | None = None
    used: int | None = None
    available: int | None = None
    active: bool = False

    def as_dict(self) -> dict:
        """The JSON shape of a per-node entry: the fields, in order."""
        # Not dataclasses.asdict: it deep-copies, and a 100-node cluster has 10,000 of these.
        return {name: getattr(self, name) for name in NODE_KEYS}


@dataclass(frozen=True)
class Datastore:
    """One datastore of the cluster: cluster-wide figures (a shared one counted once) and its flags.

    The one declaration of a datastore. The store derives the columns of its `datastores` table,
    their upsert and their migration from the fields marked `from_proxmox`/`kept`, and the JSON
    its keys from the field order (the seed's keys, with `name` after `id`). A new Proxmox field:
    a `from_proxmox` line here, its value where proxmox.py reads it, and where it is shown
    (docs/architecture.md#where-to-change-what).
    """

    id: str
    type: str = from_proxmox("unknown", max_length=50)
    size: int = from_proxmox(0)
    used: int = from_proxmox(0)
    available: int = from_proxmox(0)
    content: str = from_proxmox("")  # a sorted comma list, "" for none
    shared: bool = from_proxmox(False)
    enabled: bool = from_proxmox(True)
    active: bool = from_proxmox(False)  # at least one node reports it available
    # What backs it, from /storage: "vg/thinpool" for lvmthin, the dataset ("rpool/data") for zfspool, "" otherwise.
    pool: str = from_proxmox("")
    is_default_hdd: bool = kept(False)
    is_default_ssd: bool = kept(False)
    is_system_default: bool = kept(False)  # named by PROXMOX_HDD/SSD_DATASTORE in .env
    nodes: tuple[NodeFigures, ...] = ()  # the store keeps them in `datastore_nodes`
    updated_at: str | None = None  # ISO 8601 UTC of the row's last write; the store sets it

    def as_dict(self) -> dict:
        """The seed's JSON keys plus ours, in the declared order."""
        answer = {name: getattr(self, name) for name in DATASTORE_KEYS}
        answer["nodes"] = [n.as_dict() for n in self.nodes]
        return {"id": self.id, "name": self.id, **answer}


NODE_KEYS = tuple(f.name for f in dataclasses.fields(NodeFigures))
DATASTORE_KEYS = tuple(f.name for f in dataclasses.fields(Datastore))
COLUMNS = tuple(f for f in dataclasses.fields(Datastore) if "column" in f.metadata)
REFRESHED = tuple(f.name for f in COLUMNS if f.metadata["refreshed"])


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


# -- the per-node reads: will a datastore fill, or break? (docs/proxmox-api.md#risk) -----------------

READS = ("storage", "pools", "disks", "provisioned")  # the per-node reads, as the `read` label names them
# Why a per-node read failed: the refresh's reasons, "forbidden" (the token lacks the privilege: the figure
# is absent, never a 0), "busy" (earlier calls to Proxmox still unanswered hold every thread), "offline"
# (the snapshot shows the node down: not asked).
NODE_READ_REASONS = ("auth", "timeout", "connection", "http_4xx", "http_5xx", "parse", "forbidden", "busy", "offline")


@dataclass(frozen=True)
class ThinPool:
    """An LVM thin pool of a node (/disks/lvmthin); `datastore` is the lvmthin datastore it backs, "" for none."""

    node: str
    vg: str
    lv: str
    size: int
    used: int
    metadata_size: int
    metadata_used: int
    active: bool = True  # an inactive pool reads 0 used: its figures say nothing
    datastore: str = ""


@dataclass(frozen=True)
class ZfsPool:
    """A zpool of a node (/disks/zfs); `frag` is 0-1 (0 when ZFS does not know), `dedup` a ratio."""

    node: str
    name: str
    size: int
    alloc: int
    free: int
    frag: float
    dedup: float
    health: str


@dataclass(frozen=True)
class Disk:
    """A disk of a node (/disks/list); `healthy` None when SMART says nothing, `life_left` None for HDDs ("N/A")."""

    node: str
    devpath: str
    type: str
    model: str
    serial: str
    size: int
    health: str
    healthy: bool | None
    life_left: float | None


@dataclass(frozen=True)
class Provisioned:
    """The bytes promised to guests' disks on one datastore, as read on one node (once for a shared one)."""

    datastore: str
    node: str
    bytes: int


@dataclass(frozen=True)
class NodeRead:
    """One per-node read's bookkeeping: its last success and attempt, its last failure, its failures by reason."""

    read: str
    node: str
    last_attempt: float | None = None
    last_success: float | None = None
    reason: str | None = None  # of the last attempt, None when it worked
    error: str | None = None
    failures: tuple[tuple[str, int], ...] = ()  # (reason, count) since the database was made


@dataclass(frozen=True)
class Partial:
    """A per-node read that got some figures and was refused others: both are stored, and the refusal counted."""

    figures: tuple
    reason: str
    error: str


@dataclass(frozen=True)
class Risk:
    """What the per-node reads found, as stored: each node's last good figures, and every read's bookkeeping."""

    thin_pools: tuple[ThinPool, ...] = ()
    zfs_pools: tuple[ZfsPool, ...] = ()
    disks: tuple[Disk, ...] = ()
    provisioned: tuple[Provisioned, ...] = ()
    reads: tuple[NodeRead, ...] = ()


@dataclass(frozen=True)
class View:
    """Everything the answers are built from: datastores, defaults, and where they came from."""

    rows: tuple[Datastore, ...] = ()
    default_hdd: str | None = None
    default_ssd: str | None = None
    source: str = "db"
    refresh: RefreshInfo = field(default_factory=RefreshInfo)
    cluster: str = ""  # the cluster's name: the `pve_cluster` label and the answers' "cluster" (reader.Reader.cluster)
    role: str = "leader"  # of the replica answering: "leader" reads Proxmox, a "follower" shows what it stored
    risk: Risk = field(default_factory=Risk)  # the per-node reads (thin pools, zpools, disks, provisioned)

    def row(self, datastore_id: str) -> Datastore | None:
        """The datastore with that ID, or None."""
        return next((r for r in self.rows if r.id == datastore_id), None)

    def flagged(self, hdd: str | None, ssd: str | None) -> View:
        """This view with `hdd` and `ssd` as its defaults, every row's flags set to match."""
        rows = tuple(dataclasses.replace(r, is_default_hdd=r.id == hdd, is_default_ssd=r.id == ssd) for r in self.rows)
        return dataclasses.replace(self, rows=rows, default_hdd=hdd, default_ssd=ssd)

    @property
    def enabled(self) -> tuple[Datastore, ...]:
        """The datastores the seed lists: enabled and present in the cluster."""
        return tuple(r for r in self.rows if r.enabled)
