"""The simulated Proxmox VE cluster: the model and its operations, thread-safe.

Pure model, no I/O: `api.py` answers the API calls from it and `proxy.py` puts faults and auth in
front. Its parts (datastores, nodes, usage) are in `model.py`. Every rule below follows
docs/proxmox-api.md; the comments name the fact they rely on.
"""

from __future__ import annotations

import hashlib
import threading
import time

from .model import (
    DEFAULT_CONTENT,
    FORCED_SHARED,
    GIB,
    NAMED,
    NUMBERED_TYPES,
    PLUGIN_TYPES,
    SHARED,
    SIZE_RANGE,
    STATFS_TYPES,
    TIB,
    Datastore,
    Node,
    SimError,
    Usage,
    block,
    rng_for,
    type_config,
    valid_storage_id,
)
from .risk import Underneath


class Cluster:
    """The simulated cluster: its model operations and the state the API answers read, thread-safe."""

    def __init__(self, nodes=3, datastores=6, random_seed=1, drift=True, drift_rate=0.05,
                 shuffle=True, vms=0, quirks=False, clock=time.time, name="pve-sim"):
        if nodes < 1 or datastores < 0 or vms < 0:
            raise SimError("need nodes >= 1, datastores >= 0 and vms >= 0")
        self.lock = threading.RLock()  # PveApi holds it for a whole answer
        self._clock = clock
        self._requests = 0
        self._digest = None
        self.random_seed, self.name, self.shuffle, self.quirks = random_seed, name, shuffle, quirks
        # drift_rate: the fastest drift, as a fraction of the size per hour.
        self.drift_rate = drift_rate if drift else 0.0
        self.nodes = {n.name: n for n in (self._make_node(i) for i in range(1, nodes + 1))}
        self.datastores = {}
        for index in range(datastores):
            self._insert(self._spec(index))
        self.guests = [self._make_guest(i) for i in range(vms)]
        self.underneath = Underneath(self)  # thin pools, zpools, disks, guests' volumes, the token's role

    # -- building -----------------------------------------------------------------------

    def _make_node(self, i):
        """Node pve<i> with deterministic hardware."""
        rng = rng_for(self.random_seed, "node", i)
        return Node(f"pve{i}", i, f"10.0.{i // 250}.{i % 250 + 1}", rng.choice((8, 16, 32, 64)),
                    rng.choice((64, 128, 256, 512)) * GIB, block(rng.uniform(64, 128) * GIB),
                    self._clock() - rng.uniform(3600, 90 * 86400))

    def _spec(self, index):
        """The datastore spec at position `index`: the named mix, then numbered ones."""
        if index < len(NAMED):
            return dict(NAMED[index])
        rng = rng_for(self.random_seed, "ds", index + 1)
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
        rng = rng_for(self.random_seed, "ds", sid)
        nodes = spec.get("nodes")
        if spec.get("restricted") and len(self.nodes) > 1:
            names = list(self.nodes)[1:]
            nodes = tuple(names if len(names) <= 2 else sorted(rng.sample(names, len(names) // 2)))
        ds = Datastore(sid, kind, tuple(spec.get("content") or DEFAULT_CONTENT.get(kind, ("images",))),
                       dict(spec.get("config") or type_config(kind, sid)),
                       kind in FORCED_SHARED or bool(spec.get("shared")), tuple(nodes) if nodes else None,
                       bool(spec.get("disabled")), self.quirks)
        low, high = spec.get("size_range") or SIZE_RANGE.get(kind, (100 * GIB, 2 * TIB))
        for key in [SHARED] if ds.shared else list(self.nodes):
            krng = rng_for(self.random_seed, "usage", sid, key)
            size = block(spec.get("size_bytes") or krng.uniform(low, high))
            used = spec.get("used")
            used = block(krng.uniform(0.05, 0.85) * size) if used is None else min(int(used), size)
            ds.usage[key] = Usage(size, used, self._clock(), self._drift(krng, size))
        self.datastores[sid] = ds
        self._digest = None

    def _drift(self, rng, size):
        """A per-datastore rate in bytes/s: mostly growing, sometimes shrinking."""
        rate = size * self.drift_rate / 3600 * rng.uniform(0.2, 1.0)
        return rate if rng.random() < 0.75 else -rate

    def _make_guest(self, i):
        """A small VM or container, round-robin over the nodes."""
        rng = rng_for(self.random_seed, "guest", i)
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
        with self.lock:
            now = self._clock()
            for usage in self._usages(datastore, node):
                value = used if fraction is None else float(fraction) * usage.size
                if value is None:
                    raise SimError("give used or fraction")
                usage.rebase(now, used=value, rate=rate)

    def set_rate(self, datastore, rate, node=None):
        """Change the drift rate (bytes/s) from now on."""
        with self.lock:
            now = self._clock()
            for usage in self._usages(datastore, node):
                usage.rebase(now, rate=rate)

    def set_node_online(self, node, online=True):
        """Take a node offline (its /nodes/{node}/... calls fail with 595) or back online."""
        with self.lock:
            self._node(node).online = bool(online)

    def set_active(self, datastore, active=True, node=None):
        """Make a datastore fail activation on one node or all (e.g. its NFS server is down)."""
        with self.lock:
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
        with self.lock:
            for ds in [self._ds(datastore)] if datastore else self.datastores.values():
                ds.string_bools = bool(on)

    def vanish(self, datastore):
        """Remove a datastore from storage.cfg."""
        with self.lock:
            self._ds(datastore)
            del self.datastores[datastore]
            self._digest = None

    def add(self, datastore, type="dir", content=None, shared=None, nodes=None, size=None,
            used=None, disabled=False, config=None):
        """Add a datastore to storage.cfg (`size`/`used` in bytes, else drawn from the random seed)."""
        with self.lock:
            if datastore in self.datastores or not valid_storage_id(datastore):
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
        with self.lock:
            ds = self._ds(datastore)
            for key, value in changes.items():
                setattr(ds, key, value)
            self._digest = None

    def _usages(self, datastore, node):
        """The Usage objects an operation on (datastore, node or all) touches."""
        ds = self._ds(datastore)
        if ds.shared:  # one figure for every node (docs/proxmox-api.md#shared-datastores)
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

    def now(self):
        """The model's clock: the time every figure of an answer is computed for."""
        return self._clock()

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
        with self.lock:
            self._requests += 1
            return rng_for(self.random_seed, "request", self._requests)

    def digest(self):
        """SHA1 of the rendered storage.cfg, the same on every /storage item."""
        with self.lock:
            if self._digest is None:
                text = "".join(f"{d.type}: {d.id}\n\tcontent {','.join(d.content)}\n"
                               f"\tdisable {int(d.disabled)}\n\tnodes {d.nodes}\n\t{sorted(d.config.items())}\n\n"
                               for d in self.datastores.values())
                self._digest = hashlib.sha1(text.encode()).hexdigest()
            return self._digest
