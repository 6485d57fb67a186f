"""The simulated cluster's parts: storage catalogue, nodes, datastores and their drifting usage.

Pure data, no I/O. Every rule below follows docs/proxmox-api.md; the comments name the fact they
rely on.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

GIB = 1 << 30
TIB = 1 << 40
SHARED = ""  # usage key of a shared datastore: one figure, the same on every node

# pve-storage's config parser forces shared=1 for these types; lvmthin and zfspool are never shared
# (docs/proxmox-api.md#shared-datastores).
FORCED_SHARED = frozenset({"nfs", "cifs", "cephfs", "rbd", "pbs", "iscsi", "iscsidirect", "zfs"})
# These report statfs numbers: avail excludes root's blocks, so used + avail < total
# (docs/proxmox-api.md#root-reserved-blocks).
STATFS_TYPES = frozenset({"dir", "nfs", "cifs", "cephfs", "btrfs"})
STATFS_RESERVED = 0.05  # ext4 keeps about 5 % of the blocks for root
PLUGIN_TYPES = ("btrfs", "cephfs", "cifs", "dir", "esxi", "iscsi", "iscsidirect", "lvm",
                "lvmthin", "nfs", "pbs", "rbd", "zfs", "zfspool")
CONTENT_TYPES = ("images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import")
# The content pve fills in when storage.cfg names none (docs/proxmox-api.md#default-content).
DEFAULT_CONTENT = {"dir": ("images", "rootdir"), "lvmthin": ("images", "rootdir"),
                   "zfspool": ("images", "rootdir"), "nfs": ("images",), "cifs": ("images",),
                   "rbd": ("images",), "cephfs": ("backup",), "pbs": ("backup",)}
SIZE_RANGE = {"dir": (64 * GIB, 2 * TIB), "lvmthin": (512 * GIB, 4 * TIB),
              "zfspool": (1 * TIB, 16 * TIB), "nfs": (4 * TIB, 64 * TIB),
              "cifs": (2 * TIB, 32 * TIB), "cephfs": (8 * TIB, 96 * TIB),
              "rbd": (16 * TIB, 192 * TIB), "pbs": (4 * TIB, 64 * TIB)}
# Numbered datastores: about 45 % shared, like the named mix (3 of 7).
NUMBERED_TYPES = (("dir", "data", 3), ("lvmthin", "thin", 3), ("zfspool", "zfs", 2),
                  ("nfs", "nfs", 2), ("rbd", "rbd", 2), ("cephfs", "cephfs", 1),
                  ("cifs", "smb", 1), ("pbs", "pbs", 1))
NAMED = (
    {"id": "local", "type": "dir", "content": ("iso", "vztmpl", "backup"),
     "config": {"path": "/var/lib/vz", "prune-backups": "keep-all=1"},
     "size_range": (64 * GIB, 512 * GIB)},
    {"id": "local-lvm", "type": "lvmthin", "content": ("images", "rootdir"),
     "config": {"vgname": "pve", "thinpool": "data"}},
    {"id": "ceph-vm", "type": "rbd", "content": ("images", "rootdir"),
     "config": {"pool": "vm-pool", "krbd": 0}},
    {"id": "nas-backup", "type": "nfs", "content": ("backup", "iso"),
     "config": {"server": "192.0.2.50", "export": "/volume1/pve", "path": "/mnt/pve/nas-backup",
                "options": "vers=4.2", "prune-backups": "keep-daily=7,keep-last=3"}},
    {"id": "tank", "type": "zfspool", "content": ("images", "rootdir"),
     "config": {"pool": "tank", "sparse": 1}, "restricted": True},
    {"id": "old-iso", "type": "dir", "content": ("iso",), "config": {"path": "/srv/iso"},
     "disabled": True},
    {"id": "pbs1", "type": "pbs", "content": ("backup",),
     "config": {"server": "192.0.2.5", "datastore": "store1", "username": "backup@pbs",
                "fingerprint": ":".join(["5e"] * 32)}},
)


class SimError(ValueError):
    """A model operation that cannot be done (unknown datastore or node, bad value)."""


class Usage:
    """Used bytes drifting at `rate` bytes/s, reflected between 0 and size, computed on demand."""

    __slots__ = ("rate", "size", "t0", "used0")

    def __init__(self, size, used, now, rate=0.0):
        self.size, self.used0, self.t0, self.rate = size, used, now, rate

    def used(self, now):
        """Used bytes at `now`; a triangle wave so it never leaves [0, size]."""
        if not self.rate:
            return self.used0
        period = 2 * self.size
        pos = (self.used0 + self.rate * (now - self.t0)) % period
        return int(pos if pos <= self.size else period - pos)

    def rebase(self, now, used=None, rate=None):
        """Restart the drift from `used` (default: the current value) at `now`."""
        self.used0 = min(max(int(self.used(now) if used is None else used), 0), self.size)
        self.t0 = now
        if rate is not None:
            self.rate = float(rate)


@dataclass
class Node:
    """One cluster member."""

    name: str
    nodeid: int
    ip: str
    maxcpu: int
    maxmem: int
    rootfs: int
    boot: float
    online: bool = True


@dataclass
class Datastore:
    """One storage.cfg section plus its live usage per node (one figure when shared)."""

    id: str
    type: str
    content: tuple
    config: dict
    shared: bool
    nodes: tuple | None = None  # `nodes` restriction in storage.cfg; None means every node
    disabled: bool = False
    string_bools: bool = False  # third-party plugin style: 0/1 sent as "0"/"1"
    usage: dict = field(default_factory=dict)  # node name (SHARED when shared) -> Usage
    inactive: set = field(default_factory=set)  # nodes where activation fails (server down)

    def enabled_on(self, node):
        """Enabled on `node`: not disabled and not restricted to other nodes."""
        return not self.disabled and (self.nodes is None or node in self.nodes)

    def usage_on(self, node):
        """The Usage that `node` reports."""
        return self.usage[SHARED if self.shared else node]

    def flag(self, value):
        """A 0/1 field the way this datastore's plugin sends it."""
        return ("1" if value else "0") if self.string_bools else (1 if value else 0)


def rng_for(random_seed, *parts):
    """A Random that depends only on the random seed and the names, not on cluster size."""
    return random.Random(":".join(map(str, (random_seed, *parts))))


def block(value):
    """Round to a 4 KiB block, as a filesystem reports."""
    return int(value) // 4096 * 4096


def type_config(kind, sid):
    """Type-specific storage.cfg keys for a numbered datastore."""
    mount = {"path": f"/mnt/pve/{sid}"}
    return {"dir": {"path": f"/mnt/{sid}"}, "lvmthin": {"vgname": f"vg-{sid}", "thinpool": "data"},
            "zfspool": {"pool": f"rpool/{sid}", "sparse": 1},
            "nfs": {"server": "192.0.2.60", "export": f"/export/{sid}", "options": "vers=4.2", **mount},
            "cifs": {"server": "192.0.2.70", "share": sid, "username": "pve", "smbversion": "3", **mount},
            "cephfs": {"fs-name": "cephfs", **mount}, "rbd": {"pool": sid, "krbd": 0},
            "pbs": {"server": "192.0.2.5", "datastore": sid, "username": "backup@pbs",
                    "fingerprint": ":".join(["5e"] * 32)}}.get(kind, {})


def valid_storage_id(value):
    """PVE::JSONSchema::parse_id: case-insensitive, at least 2 characters (docs/proxmox-api.md#storage-ids)."""
    return bool(re.fullmatch(r"[a-z][a-z0-9\-_.]*[a-z0-9]", value or "", re.IGNORECASE))
