"""The simulated Proxmox VE cluster: nodes, datastores with drifting usage, and its API answers.

Pure model, no I/O: `simulator.py` puts it behind HTTPS. Every rule below follows
/work/shared/pve-api.md (sections 1-5 and 9); the comments name the fact they rely on.
"""

from __future__ import annotations

import hashlib
import random
import re
import threading
import time
from dataclasses import dataclass, field

GIB = 1 << 30
TIB = 1 << 40
SHARED = ""  # usage key of a shared datastore: one figure, the same on every node

# pve-storage's config parser forces shared=1 for these types; lvmthin and zfspool are never shared.
FORCED_SHARED = frozenset({"nfs", "cifs", "cephfs", "rbd", "pbs", "iscsi", "iscsidirect", "zfs"})
# These report statfs numbers (Filesys::Df): avail is bavail, so used + avail < total.
STATFS_TYPES = frozenset({"dir", "nfs", "cifs", "cephfs", "btrfs"})
STATFS_RESERVED = 0.05  # ext4 keeps about 5 % of the blocks for root
PLUGIN_TYPES = ("btrfs", "cephfs", "cifs", "dir", "esxi", "iscsi", "iscsidirect", "lvm",
                "lvmthin", "nfs", "pbs", "rbd", "zfs", "zfspool")
CONTENT_TYPES = ("images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import")
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


def _seeded(seed, *parts):
    """A Random that depends only on the seed and the names, not on cluster size."""
    return random.Random(":".join(map(str, (seed, *parts))))


def _block(value):
    """Round to a 4 KiB block, as a filesystem reports."""
    return int(value) // 4096 * 4096


class Cluster:
    """The simulated cluster: its model operations and the Proxmox API answers, thread-safe."""

    def __init__(self, nodes=3, datastores=6, seed=1, drift=True, drift_rate=0.05,
                 shuffle=True, vms=0, quirks=False, clock=time.time, name="pve-sim"):
        if nodes < 1 or datastores < 0 or vms < 0:
            raise SimError("need nodes >= 1, datastores >= 0 and vms >= 0")
        self._lock = threading.RLock()
        self._clock = clock
        self._requests = 0
        self._digest = None
        self.seed, self.name, self.shuffle, self.quirks = seed, name, shuffle, quirks
        # drift_rate: the fastest drift, as a fraction of the size per hour.
        self.drift_rate = drift_rate if drift else 0.0
        self.nodes = {n.name: n for n in (self._make_node(i) for i in range(1, nodes + 1))}
        self.datastores = {}
        for index in range(datastores):
            self._insert(self._spec(index))
        self.guests = [self._make_guest(i) for i in range(vms)]

    # -- building -----------------------------------------------------------------------

    def _make_node(self, i):
        """Node pve<i> with deterministic hardware."""
        rng = _seeded(self.seed, "node", i)
        return Node(f"pve{i}", i, f"10.0.{i // 250}.{i % 250 + 1}", rng.choice((8, 16, 32, 64)),
                    rng.choice((64, 128, 256, 512)) * GIB, _block(rng.uniform(64, 128) * GIB),
                    self._clock() - rng.uniform(3600, 90 * 86400))

    def _spec(self, index):
        """The datastore spec at position `index`: the named mix, then numbered ones."""
        if index < len(NAMED):
            return dict(NAMED[index])
        rng = _seeded(self.seed, "ds", index + 1)
        kinds = [(t, p) for t, p, w in NUMBERED_TYPES for _ in range(w)]
        kind, prefix = rng.choice(kinds)
        spec = {"id": f"{prefix}-{index + 1:03d}", "type": kind}
        if kind in STATFS_TYPES:  # file-based storages usually carry several content types
            extra = rng.sample(("iso", "vztmpl", "backup", "snippets"), rng.randint(0, 3))
            spec["content"] = DEFAULT_CONTENT[kind] + tuple(extra)
        spec["restricted"] = kind == "zfspool" and rng.random() < 0.5
        spec["disabled"] = rng.random() < 0.05
        return spec

    def _insert(self, spec):
        """Create a datastore from a spec and add it to storage.cfg."""
        sid, kind = spec["id"], spec["type"]
        rng = _seeded(self.seed, "ds", sid)
        nodes = spec.get("nodes")
        if spec.get("restricted") and len(self.nodes) > 1:
            names = list(self.nodes)[1:]
            nodes = tuple(names if len(names) <= 2 else sorted(rng.sample(names, len(names) // 2)))
        ds = Datastore(sid, kind, tuple(spec.get("content") or DEFAULT_CONTENT.get(kind, ("images",))),
                       dict(spec.get("config") or _type_config(kind, sid)),
                       kind in FORCED_SHARED or bool(spec.get("shared")), tuple(nodes) if nodes else None,
                       bool(spec.get("disabled")), self.quirks)
        low, high = spec.get("size_range") or SIZE_RANGE.get(kind, (100 * GIB, 2 * TIB))
        for key in [SHARED] if ds.shared else list(self.nodes):
            krng = _seeded(self.seed, "usage", sid, key)
            size = _block(spec.get("size_bytes") or krng.uniform(low, high))
            used = spec.get("used")
            used = _block(krng.uniform(0.05, 0.85) * size) if used is None else min(int(used), size)
            ds.usage[key] = Usage(size, used, self._clock(), self._drift(krng, size))
        self.datastores[sid] = ds
        self._digest = None

    def _drift(self, rng, size):
        """A per-datastore rate in bytes/s: mostly growing, sometimes shrinking."""
        rate = size * self.drift_rate / 3600 * rng.uniform(0.2, 1.0)
        return rate if rng.random() < 0.75 else -rate

    def _make_guest(self, i):
        """A small VM or container, round-robin over the nodes."""
        rng = _seeded(self.seed, "guest", i)
        node = list(self.nodes)[i % len(self.nodes)]
        kind = "lxc" if i % 3 == 2 else "qemu"
        vmid = 100 + i
        return {"vmid": vmid, "type": kind, "node": node, "name": f"{'ct' if kind == 'lxc' else 'vm'}{vmid}",
                "running": i % 5 != 4, "maxcpu": rng.choice((1, 2, 4)), "maxmem": rng.choice((1, 2, 4, 8)) * GIB,
                "maxdisk": rng.choice((8, 32, 64)) * GIB, "boot": self._clock() - rng.uniform(600, 86400)}

    # -- model operations (also reachable over POST /_sim/cluster) ---------------------

    def set_usage(self, datastore, used=None, fraction=None, node=None, rate=0.0):
        """Set used bytes (or a fraction of the size) on a node or all; drift stops unless `rate` is given.

        A shared datastore has one figure for every node, so `node` does not matter for it.
        """
        with self._lock:
            now = self._clock()
            for usage in self._usages(datastore, node):
                value = used if fraction is None else float(fraction) * usage.size
                if value is None:
                    raise SimError("give used or fraction")
                usage.rebase(now, used=value, rate=rate)

    def set_rate(self, datastore, rate, node=None):
        """Change the drift rate (bytes/s) from now on."""
        with self._lock:
            now = self._clock()
            for usage in self._usages(datastore, node):
                usage.rebase(now, rate=rate)

    def set_node_online(self, node, online=True):
        """Take a node offline (its /nodes/{node}/... calls fail with 595) or back online."""
        with self._lock:
            self._node(node).online = bool(online)

    def set_active(self, datastore, active=True, node=None):
        """Make a datastore fail activation on one node or all (e.g. its NFS server is down)."""
        with self._lock:
            ds = self._ds(datastore)
            names = [self._node(node).name] if node else list(self.nodes)
            if active:
                ds.inactive.difference_update(names)
            else:
                ds.inactive.update(names)

    def disable(self, datastore):
        """Set `disable 1` in storage.cfg."""
        self._set(datastore, disabled=True)

    def enable(self, datastore):
        """Remove `disable` from storage.cfg."""
        self._set(datastore, disabled=False)

    def set_string_bools(self, on=True, datastore=None):
        """Third-party plugin quirk: send 0/1 fields as strings, for one datastore or all."""
        with self._lock:
            for ds in [self._ds(datastore)] if datastore else self.datastores.values():
                ds.string_bools = bool(on)

    def vanish(self, datastore):
        """Remove a datastore from storage.cfg."""
        with self._lock:
            self._ds(datastore)
            del self.datastores[datastore]
            self._digest = None

    def add(self, datastore, type="dir", content=None, shared=None, nodes=None, size=None,
            used=None, disabled=False, config=None):
        """Add a datastore to storage.cfg (`size`/`used` in bytes, else seeded)."""
        with self._lock:
            if datastore in self.datastores or not _valid_storage_id(datastore):
                raise SimError(f"datastore ID '{datastore}' exists or is invalid")
            if type not in PLUGIN_TYPES:
                raise SimError(f"unknown storage type '{type}'")
            for name in nodes or ():
                self._node(name)
            self._insert({"id": datastore, "type": type, "content": tuple(content or ()) or None,
                          "shared": shared, "nodes": nodes, "size_bytes": size, "used": used,
                          "disabled": disabled, "config": config})

    def _set(self, datastore, **changes):
        """Change storage.cfg attributes of a datastore."""
        with self._lock:
            ds = self._ds(datastore)
            for key, value in changes.items():
                setattr(ds, key, value)
            self._digest = None

    def _usages(self, datastore, node):
        """The Usage objects an operation on (datastore, node or all) touches."""
        ds = self._ds(datastore)
        if ds.shared:  # one figure for every node, as pve reports for shared storages
            return [ds.usage[SHARED]]
        return [ds.usage[self._node(node).name]] if node else list(ds.usage.values())

    def _ds(self, datastore):
        """The datastore by ID, or SimError."""
        try:
            return self.datastores[datastore]
        except KeyError:
            raise SimError(f"no such datastore '{datastore}'") from None

    def _node(self, node):
        """The node by name, or SimError."""
        try:
            return self.nodes[node]
        except KeyError:
            raise SimError(f"no such node '{node}'") from None

    # -- helpers for the API answers -----------------------------------------------------

    def node_state(self, node):
        """'online', 'offline' or None when the cluster has no such node ('localhost' = pve1)."""
        found = self.nodes.get(self.local_name() if node == "localhost" else node)
        return None if found is None else ("online" if found.online else "offline")

    def local_name(self):
        """The node the API client is connected to: the first one."""
        return next(iter(self.nodes))

    def request_rng(self):
        """A Random for one answer's order, or None when shuffling is off."""
        if not self.shuffle:
            return None
        with self._lock:
            self._requests += 1
            return _seeded(self.seed, "request", self._requests)

    def digest(self):
        """SHA1 of the rendered storage.cfg, the same on every /storage item."""
        with self._lock:
            if self._digest is None:
                text = "".join(f"{d.type}: {d.id}\n\tcontent {','.join(d.content)}\n"
                               f"\tdisable {int(d.disabled)}\n\tnodes {d.nodes}\n\t{sorted(d.config.items())}\n\n"
                               for d in self.datastores.values())
                self._digest = hashlib.sha1(text.encode()).hexdigest()
            return self._digest


def _type_config(kind, sid):
    """Type-specific storage.cfg keys for a numbered datastore."""
    mount = {"path": f"/mnt/pve/{sid}"}
    return {"dir": {"path": f"/mnt/{sid}"}, "lvmthin": {"vgname": f"vg-{sid}", "thinpool": "data"},
            "zfspool": {"pool": f"rpool/{sid}", "sparse": 1},
            "nfs": {"server": "192.0.2.60", "export": f"/export/{sid}", "options": "vers=4.2", **mount},
            "cifs": {"server": "192.0.2.70", "share": sid, "username": "pve", "smbversion": "3", **mount},
            "cephfs": {"fs-name": "cephfs", **mount}, "rbd": {"pool": sid, "krbd": 0},
            "pbs": {"server": "192.0.2.5", "datastore": sid, "username": "backup@pbs",
                    "fingerprint": ":".join(["5e"] * 32)}}.get(kind, {})


def _valid_storage_id(value):
    """PVE::JSONSchema::parse_id: case-insensitive, at least 2 characters."""
    return bool(re.fullmatch(r"[a-z][a-z0-9\-_.]*[a-z0-9]", value or "", re.IGNORECASE))


# -- the API answers ---------------------------------------------------------------------


class ApiError(Exception):
    """A Proxmox error: HTTP status, message (its first line becomes the reason phrase), errors."""

    def __init__(self, status, message, errors=None):
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors


def _no_such_storage():
    """The 400 pve answers for an unknown storage ID."""
    return ApiError(400, "Parameter verification failed.", {"storage": "No such storage."})


def _boolean(value):
    """JSONSchema::check_type takes only '1'/'0' over HTTP, so proxmoxer's True ('True') fails."""
    if value not in ("0", "1"):
        raise ValueError(f"type check ('boolean') failed - got '{value}'")
    return value == "1"


def _enum(*choices):
    """A validator for an enum parameter, with pve's error text."""
    def check(value):
        if value not in choices:
            raise ValueError(f"value '{value}' does not have a value in the enumeration "
                             f"'{', '.join(choices)}'")
        return value
    return check


def _storage_param(value):
    """A storage ID (pve-storage-id format)."""
    if len(value) < 2:
        raise ValueError(f"invalid format - storage ID '{value}' cannot be shorter than 2 characters\n")
    if not _valid_storage_id(value):
        raise ValueError(f"invalid format - storage ID '{value}' contains illegal characters\n")
    return value


def _content_param(value):
    """A content list (pve-storage-content-list); the error text is an approximation."""
    items = [item for item in re.split(r"[,;\s]+", value) if item]
    for item in items:
        if item not in CONTENT_TYPES and item != "none":
            raise ValueError(f"invalid format - invalid content type '{item}'\n")
    return frozenset(items)


def _node_param(value):
    """A node name (pve-node format)."""
    if not re.fullmatch(r"[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?", value):
        raise ValueError("invalid format - value does not look like a valid node name\n")
    return value


def _integer(value):
    """An integer parameter."""
    if not re.fullmatch(r"-?\d+", value):
        raise ValueError(f"type check ('integer') failed - got '{value}'")
    return int(value)


# (method, path template, Answers method, {parameter: validator}); None = the transport's own.
ROUTES = (
    ("GET", "/version", "version", {}),
    ("GET", "/cluster/resources", "resources", {"type": _enum("vm", "storage", "node", "sdn")}),
    ("GET", "/cluster/status", "cluster_status", {}),
    ("GET", "/cluster/backup-info/not-backed-up", "not_backed_up", {}),
    ("GET", "/cluster/config/qdevice", "qdevice", {}),
    ("GET", "/storage", "storage_config", {"type": _enum(*PLUGIN_TYPES)}),
    ("GET", "/nodes", "nodes_list", {}),
    ("GET", "/nodes/{node}/storage", "node_storage",
     {"content": _content_param, "enabled": _boolean, "format": _boolean,
      "storage": _storage_param, "target": _node_param}),
    ("GET", "/nodes/{node}/storage/{storage}/status", "storage_status", {}),
    ("GET", "/nodes/{node}/{kind:qemu|lxc}", "node_guests", {"full": _boolean}),
    ("GET", "/nodes/{node}/{kind:qemu|lxc}/{vmid}/config", "guest_config", {"current": _boolean}),
    ("GET", "/nodes/{node}/replication", "replication", {"guest": _integer}),
    ("GET", "/nodes/{node}/subscription", "subscription", {}),
    ("POST", "/access/ticket", None, {}),
)


def _compile(template):
    """'/nodes/{node}/{kind:qemu|lxc}' -> an anchored regex with named groups."""
    def group(match):
        name, _, choices = match[1].partition(":")
        return f"(?P<{name}>{choices or '[^/]+'})"
    return re.compile("^" + re.sub(r"\{([^}]+)\}", group, template) + "$")


NOT_IN_SCHEMA = "property is not defined in schema and the schema does not allow additional properties"
_ROUTES = [(method, _compile(path), name, params) for method, path, name, params in ROUTES]


@dataclass
class Call:
    """A resolved API call: which answer, its path arguments, its parameter validators."""

    name: str | None
    path_args: dict
    params: dict

    @property
    def node(self):
        """The {node} of a /nodes/{node}/... call: pveproxy proxies those to that node."""
        return self.path_args.get("node")

    def arguments(self, query):
        """Validate query parameters like pve's JSONSchema, or raise the 400."""
        errors, values = {}, {}
        for key, value in query.items():
            check = self.params.get(key)
            if check is None:
                errors[key] = NOT_IN_SCHEMA
                continue
            try:
                values[key] = check(value)
            except ValueError as exc:
                errors[key] = str(exc)
        if errors:
            raise ApiError(400, "Parameter verification failed.", errors)
        return {**self.path_args, **values}


def resolve(method, path):
    """The Call for `method path` (path below /api2/json), or the 501 pve answers."""
    for route_method, regex, name, params in _ROUTES:
        match = regex.match(path)
        if match and route_method == method:
            return Call(name, match.groupdict(), params)
    raise ApiError(501, f"Method '{method} {path}' not implemented")


def _order(items, rng):
    """Items in a fresh random order per answer, as pve's hash order gives (kept when rng is None)."""
    items = list(items)
    if rng is not None:
        rng.shuffle(items)
    return items


def _csv(items, rng, empty=""):
    """A comma list in random order, `empty` when there is nothing to list."""
    return ",".join(_order(items, rng)) if items else empty


# PVE >= 8 answers "X.Y.Z" with a 16-hex repoid.
VERSION = {"version": "9.1.4", "release": "9.1", "repoid": "8e1bb0f6c0de5ab1"}


class PveApi:
    """What the simulated cluster answers to each API call: the `data` of the envelope."""

    def __init__(self, cluster):
        self.cluster = cluster

    def answer(self, call, query):
        """The data for a resolved call and its raw query parameters, or ApiError."""
        args = call.arguments(query)
        cluster = self.cluster
        with cluster._lock:
            return getattr(self, call.name)(now=cluster._clock(), rng=cluster.request_rng(), **args)

    def version(self, now, rng):
        """GET /version."""
        return dict(VERSION)

    def resources(self, now, rng, type=None):
        """GET /cluster/resources: one storage entry per (datastore, node) where enabled."""
        parts = {"vm": self._guest_resources, "storage": self._storage_resources,
                 "node": self._node_resources, "sdn": self._sdn_resources}
        rows = []
        for kind, build in parts.items():
            if type in (None, kind):
                rows.extend(build(now, rng))
        return _order(rows, rng)

    def _storage_resources(self, now, rng):
        """Storage rows: disabled ones omitted, restricted ones only on their nodes."""
        nodes, rows = self.cluster.nodes, []
        for ds in self.cluster.datastores.values():
            if ds.disabled:
                continue
            shared, content = ds.flag(ds.shared), _csv(ds.content, rng)  # one order per answer
            for name in ds.nodes or nodes:
                row = {"id": f"storage/{name}/{ds.id}", "type": "storage", "storage": ds.id,
                       "node": name, "plugintype": ds.type, "shared": shared, "content": content,
                       "status": "unknown"}
                # pvestatd publishes total/used only for active storages of online nodes:
                # without them the entry is "unknown" and carries no disk/maxdisk.
                if nodes[name].online and name not in ds.inactive:
                    usage = ds.usage_on(name)
                    row["status"], row["disk"], row["maxdisk"] = "available", usage.used(now), usage.size
                rows.append(row)
        return rows

    def _node_resources(self, now, rng):
        """Node rows of /cluster/resources: stats only while online."""
        return [self._node_row(node, now, {"type": "node", "cgroup-mode": 2})
                for node in self.cluster.nodes.values()]

    def _node_row(self, node, now, extra):
        """A node entry, as /nodes and /cluster/resources show it."""
        row = {"id": f"node/{node.name}", "node": node.name, "status": "offline", "level": "", **extra}
        if node.online:
            row.update(status="online", uptime=int(now - node.boot), cpu=round(0.02 + node.nodeid % 7 / 100, 4),
                       maxcpu=node.maxcpu, mem=node.maxmem * 3 // 8, maxmem=node.maxmem,
                       disk=node.rootfs // 5, maxdisk=node.rootfs)
        return row

    def _sdn_resources(self, now, rng):
        """The default SDN zone every node has."""
        return [{"id": f"sdn/{name}/localnetwork", "type": "sdn", "sdn": "localnetwork", "node": name,
                 "status": "ok" if node.online else "unknown"} for name, node in self.cluster.nodes.items()]

    def _guest_resources(self, now, rng):
        """VM and container rows (an empty list unless the simulator was asked for guests)."""
        return [self._guest_row(guest, now, {"id": f"{guest['type']}/{guest['vmid']}", "type": guest["type"],
                                             "node": guest["node"], "template": 0})
                for guest in self.cluster.guests]

    def _guest_row(self, guest, now, extra):
        """A guest entry with its (static) stats; 'unknown' when its node is offline."""
        row = {"vmid": guest["vmid"], "name": guest["name"], "maxcpu": guest["maxcpu"],
               "maxmem": guest["maxmem"], "maxdisk": guest["maxdisk"], **extra}
        if not self.cluster.nodes[guest["node"]].online:
            return {**row, "status": "unknown"}
        running = guest["running"]
        up = int(now - guest["boot"]) if running else 0
        return {**row, "status": "running" if running else "stopped", "uptime": up,
                "cpu": 0.01 if running else 0, "mem": guest["maxmem"] // 3 if running else 0,
                "disk": 0, "netin": up * 1200, "netout": up * 800, "diskread": up * 4096,
                "diskwrite": up * 8192}

    def cluster_status(self, now, rng):
        """GET /cluster/status: the cluster entry, then one per member (standalone: node only)."""
        nodes = list(self.cluster.nodes.values())
        local = self.cluster.local_name()
        rows = [{"type": "node", "id": f"node/{n.name}", "name": n.name, "ip": n.ip, "level": "",
                 "local": int(n.name == local), "online": int(n.online),
                 "nodeid": n.nodeid if len(nodes) > 1 else 0} for n in nodes]
        if len(nodes) == 1:
            return rows
        quorate = int(sum(n.online for n in nodes) * 2 > len(nodes))
        head = {"type": "cluster", "id": "cluster", "name": self.cluster.name, "nodes": len(nodes),
                "version": len(nodes) + 2, "quorate": quorate}
        return [head] + _order(rows, rng)

    def not_backed_up(self, now, rng):
        """GET /cluster/backup-info/not-backed-up: no backup jobs, so every guest."""
        return [{"type": g["type"], "vmid": g["vmid"], "name": g["name"]} for g in self.cluster.guests]

    def qdevice(self, now, rng):
        """GET /cluster/config/qdevice: {} when no QDevice is configured."""
        return {}

    def storage_config(self, now, rng, type=None):
        """GET /storage: every storage.cfg section, disabled ones too."""
        digest, rows = self.cluster.digest(), []
        for ds in self.cluster.datastores.values():
            if type is not None and ds.type != type:
                continue
            # content is re-encoded as a comma list, "none" when empty; `nodes` only if restricted.
            row = {"storage": ds.id, "type": ds.type, "content": _csv(ds.content, rng, "none"),
                   "digest": digest, **ds.config}
            if ds.shared:
                row["shared"] = ds.flag(True)
            if ds.disabled:
                row["disable"] = ds.flag(True)
            if ds.nodes:
                row["nodes"] = _csv(ds.nodes, rng)
            rows.append(row)
        return _order(rows, rng)

    def nodes_list(self, now, rng):
        """GET /nodes."""
        return _order((self._node_row(n, now, {"type": "node", "ssl_fingerprint": _fingerprint(n.name)})
                       for n in self.cluster.nodes.values()), rng)

    def node_storage(self, now, rng, node, content=None, enabled=False, format=False,
                     storage=None, target=None):
        """GET /nodes/{node}/storage, with the filters of PVE::API2::Storage::Status::index."""
        node = self._node_name(node)
        candidates = self._storage_info(node, content)
        if storage is not None and storage not in candidates:
            raise _no_such_storage()
        rows = []
        for ds in candidates.values():
            if storage is not None and ds.id != storage:
                continue
            if enabled and ds.disabled:  # enabled=1 drops `disable`d ones, not node-restricted ones
                continue
            if target and target != node and not (ds.shared and ds.enabled_on(target)):
                continue
            row = {"storage": ds.id, **self._status(ds, node, now, rng, format)}
            if row["total"]:  # used_fraction only when total is non-zero
                row["used_fraction"] = row["used"] / row["total"]
            rows.append(row)
        return _order(rows, rng)

    def storage_status(self, now, rng, node, storage):
        """GET /nodes/{node}/storage/{storage}/status: no `storage` key, no used_fraction."""
        node = self._node_name(node)
        ds = self._storage_info(node, None).get(storage)
        if ds is None:
            raise _no_such_storage()
        return self._status(ds, node, now, rng, False)

    def _storage_info(self, node, content):
        """storage_info(): every configured storage; a content filter also drops those off this node."""
        return {sid: ds for sid, ds in self.cluster.datastores.items()
                if content is None or (ds.enabled_on(node) and not content.isdisjoint(ds.content))}

    def _status(self, ds, node, now, rng, formats):
        """One storage_info() entry: zeros unless enabled and active."""
        enabled = ds.enabled_on(node)
        active = enabled and node not in ds.inactive
        row = {"type": ds.type, "content": _csv(ds.content, rng), "shared": ds.flag(ds.shared),
               "enabled": ds.flag(enabled), "active": ds.flag(active), "total": 0, "used": 0, "avail": 0}
        if active:
            usage = ds.usage_on(node)
            used, total = usage.used(now), usage.size
            reserved = int(total * STATFS_RESERVED) if ds.type in STATFS_TYPES else 0
            row.update(total=total, used=used, avail=max(total - used - reserved, 0))
        if formats and enabled:
            supported = ["raw", "qcow2", "vmdk"] if ds.type in STATFS_TYPES else ["raw"]
            row["formats"] = {"supported": supported, "default": "raw"}
            row["format"] = [{name: 1 for name in supported}, "raw"]
        return row

    def node_guests(self, now, rng, node, kind, full=False):
        """GET /nodes/{node}/qemu and /lxc."""
        node = self._node_name(node)
        return _order((self._guest_row(g, now, {}) for g in self.cluster.guests
                       if g["node"] == node and g["type"] == kind), rng)

    def guest_config(self, now, rng, node, kind, vmid, current=False):
        """GET /nodes/{node}/{qemu,lxc}/{vmid}/config."""
        node = self._node_name(node)
        for guest in self.cluster.guests:
            if guest["node"] == node and guest["type"] == kind and str(guest["vmid"]) == vmid:
                name_key = "hostname" if kind == "lxc" else "name"
                return {name_key: guest["name"], "onboot": 1, "cores": guest["maxcpu"],
                        "memory": str(guest["maxmem"] >> 20), "digest": self.cluster.digest()}
        raise ApiError(500, f"Configuration file 'nodes/{node}/{kind}-server/{vmid}.conf' does not exist")

    def replication(self, now, rng, node, guest=None):
        """GET /nodes/{node}/replication: no replication jobs."""
        return []

    def subscription(self, now, rng, node):
        """GET /nodes/{node}/subscription: a node without a subscription key."""
        return {"status": "notfound", "message": "There is no subscription key",
                "serverid": _fingerprint(node).replace(":", "")[:32],
                "url": "https://www.proxmox.com/en/proxmox-virtual-environment/pricing"}

    def _node_name(self, node):
        """'localhost' means the node the client is connected to."""
        return self.cluster.local_name() if node == "localhost" else node


def _fingerprint(name):
    """A stable fake SHA256 certificate fingerprint for a node."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(name.encode()).digest())
