"""The simulated cluster's API answers: the `data` of each envelope, shaped like Proxmox VE's.

Every rule below follows docs/proxmox-api.md; the comments name the fact they rely on.
"""

from __future__ import annotations

import hashlib

from . import api_risk
from .model import STATFS_RESERVED, STATFS_TYPES
from .routes import PveApiError


def _no_such_storage():
    """The 400 pve answers for an unknown storage ID."""
    return PveApiError(400, "Parameter verification failed.", {"storage": "No such storage."})


def _order(items, rng):
    """Items in a fresh random order per answer (docs/proxmox-api.md#booleans-and-lists); kept when rng is None."""
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
        """The data for a resolved call and its raw query parameters, or PveApiError."""
        args = call.arguments(query)
        cluster = self.cluster
        if call.name in api_risk.ANSWERS:  # the per-node reads' answers (thin pools, zpools, disks, content)
            with cluster.lock:
                return api_risk.ANSWERS[call.name](cluster, now=cluster.now(), rng=cluster.request_rng(), **args)
        with cluster.lock:
            return getattr(self, call.name)(now=cluster.now(), rng=cluster.request_rng(), **args)

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
        """Storage rows: disabled ones omitted, restricted ones only on their nodes (docs/proxmox-api.md#cluster-resources)."""
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
                # without them the entry is "unknown" and carries no disk/maxdisk
                # (docs/proxmox-api.md#sizes-absent-when-unknown).
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
            # content is a comma list, "none" when empty; `nodes` only if restricted
            # (docs/proxmox-api.md#storage-configuration).
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
        """GET /nodes/{node}/storage, with its filters (docs/proxmox-api.md#node-storage)."""
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
        """One storage_info() entry: zeros unless enabled and active; statfs types keep root's reserve."""
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
        raise PveApiError(500, f"Configuration file 'nodes/{node}/{kind}-server/{vmid}.conf' does not exist")

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
