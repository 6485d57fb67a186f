"""The simulated nodes' storage underneath: thin pools, zpools, disks, guests' volumes, the token's privileges.

Pure data, no I/O; its `set_*` operations are reachable over POST /_sim/cluster like the cluster's.
`api_risk.py` answers /disks/lvmthin, /disks/zfs, /disks/list, /storage/{id}/content and
/access/permissions from it. Every rule follows docs/proxmox-api.md#risk; comments name the fact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .model import GIB, SimError, rng_for

# The privileges of the simulated token by role (docs/proxmox-api.md#content-filter).
AUDIT = ("Datastore.Audit", "Mapping.Audit", "Pool.Audit", "SDN.Audit", "Sys.Audit", "VM.Audit", "VM.GuestAgent.Audit")
ROLES = {"PVEAuditor": AUDIT,
         "Administrator": (*AUDIT, "Datastore.Allocate", "Datastore.AllocateSpace", "Sys.Modify", "VM.Config.Disk")}
ZFS_HEALTH = ("ONLINE", "DEGRADED", "FAULTED", "OFFLINE", "UNAVAIL", "REMOVED", "SUSPENDED")


@dataclass
class NodeDisks:
    """One node's disks, its tools and its pools' states; keys are devpaths and pool names."""

    disks: dict = field(default_factory=dict)  # devpath -> {"type", "model", "serial", "size", "health", "wearout"}
    hanging: set = field(default_factory=set)  # devpaths whose smartctl never answers (a stuck USB disk)
    lvm: bool = True  # False: no volume group at all (lvs prints nothing)
    zfs: bool = True  # False: zfsutils-linux not installed (500)
    zpools: dict = field(default_factory=dict)  # name -> {"health", "frag", "dedup", "alloc" (fraction or None)}
    thin: dict = field(default_factory=dict)  # "vg/lv" -> {"metadata": fraction, "active": bool}


class Underneath:
    """The storage under each simulated node, made from the random seed; changed by the control ops."""

    def __init__(self, cluster):
        self._cluster = cluster
        self.role = "PVEAuditor"  # the token's role: PVEAuditor sees no guests' volumes in content listings
        self.pve_major = 9  # 8: a hung smartctl stalls disks/list past the 30 s proxy cut; 9: that disk reads UNKNOWN
        self.smart_timeout = 10.0  # PVE 9's per-smartctl timeout, s
        self.proxy_cut = 30.0  # pveproxy's cut of a silent proxied call, s (596)
        self.nodes = {name: self._make(name) for name in cluster.nodes}
        self.provisioned: dict = {}  # (datastore, node) -> fraction of the size promised; drawn when first asked
        self.acl: dict = {}  # ACL path -> the privileges there (propagated), beside the role's on /

    def _make(self, name):
        rng = rng_for(self._cluster.random_seed, "disks", name)
        serial = f"S{rng.randrange(16**10):010X}"
        disks = {"/dev/nvme0n1": {"type": "nvme", "model": "Samsung SSD 980 PRO 1TB", "serial": serial,
                                  "size": 1000204886016, "health": "PASSED", "wearout": rng.randint(80, 100)},
                 "/dev/sda": {"type": "ssd", "model": "INTEL SSDSC2KB960G8", "serial": f"PHYF{rng.randrange(10**8):08d}",
                              "size": 960197124096, "health": "PASSED", "wearout": rng.randint(60, 100)},
                 "/dev/sdb": {"type": "hdd", "model": "ST4000NM0033-9ZM170", "serial": f"Z1Z0{rng.randrange(10**4):04d}",
                              "size": 4000787030016, "health": "PASSED", "wearout": "N/A"}}
        return NodeDisks(disks=disks)

    def node(self, name):
        """The storage of node `name`, or SimError."""
        try:
            return self.nodes[name]
        except KeyError:
            raise SimError(f"no such node '{name}'") from None

    def set_thin_metadata(self, datastore, fraction=None, node=None, active=None):
        """An lvmthin datastore's thin pool: its metadata fill (0-1) and whether it is active, on a node or all."""
        with self._cluster.lock:
            ds = self._datastore(datastore)
            if ds.type != "lvmthin":
                raise SimError(f"'{datastore}' is no lvmthin datastore")
            key = f"{ds.config['vgname']}/{ds.config['thinpool']}"
            for name in self._names(node):
                state = self.thin_state(name, key)
                if fraction is not None:
                    state["metadata"] = min(max(float(fraction), 0.0), 1.0)
                if active is not None:
                    state["active"] = bool(active)

    def set_zpool(self, pool, node=None, health=None, frag=None, alloc=None, dedup=None):
        """A zpool's state, fragmentation (%), allocated fraction (0-1) and dedup ratio, on a node or all."""
        with self._cluster.lock:
            for name in self._names(node):
                state = self.zpool_state(name, pool)
                if health is not None:
                    state["health"] = check_health(health)
                for key, value in (("frag", frag), ("alloc", alloc), ("dedup", dedup)):
                    if value is not None:
                        state[key] = float(value) if key != "frag" else int(value)

    def set_disk(self, node, devpath, health=None, wearout=None, hang=None):
        """A disk's SMART health ("PASSED", "FAILED!", "UNKNOWN"...), wear-out (% left or "N/A"), or a smartctl that hangs."""
        with self._cluster.lock:
            disks = self.node(node)
            if devpath not in disks.disks:
                raise SimError(f"no disk '{devpath}' on '{node}'")
            if health is not None:
                disks.disks[devpath]["health"] = str(health)
            if wearout is not None:
                disks.disks[devpath]["wearout"] = wearout if wearout == "N/A" else int(wearout)
            if hang is not None:
                (disks.hanging.add if hang else disks.hanging.discard)(devpath)

    def set_tools(self, node, lvm=None, zfs=None):
        """A node without LVM (no volume group) or without ZFS (zfsutils-linux not installed)."""
        with self._cluster.lock:
            disks = self.node(node)
            disks.lvm = disks.lvm if lvm is None else bool(lvm)
            disks.zfs = disks.zfs if zfs is None else bool(zfs)

    def set_role(self, role):
        """The token's role: PVEAuditor (guests' volumes hidden from content listings) or Administrator."""
        with self._cluster.lock:
            self.role = check_role(role)

    def set_acl(self, path, privileges=None):
        """The token's privileges on an ACL path (`[]`: none, NoAccess), or None to remove the path's ACL."""
        with self._cluster.lock:
            if not isinstance(path, str) or not path.startswith("/"):
                raise SimError("an ACL path starts with /")
            if privileges is None:
                self.acl.pop(path, None)
            else:
                self.acl[path] = tuple(str(p) for p in privileges)

    def set_pve(self, major=None, smart_timeout=None, proxy_cut=None):
        """PVE 8 or 9 behaviour (a hung smartctl), and the timeouts involved, in s."""
        with self._cluster.lock:
            if major is not None:
                if int(major) not in (8, 9):
                    raise SimError("major must be 8 or 9")
                self.pve_major = int(major)
            self.smart_timeout = self.smart_timeout if smart_timeout is None else float(smart_timeout)
            self.proxy_cut = self.proxy_cut if proxy_cut is None else float(proxy_cut)

    def set_provisioned(self, datastore, fraction, node=None):
        """The space promised to guests on a datastore, as a fraction of its size (above 1: overcommitted)."""
        with self._cluster.lock:
            ds = self._datastore(datastore)
            for name in self._names(node):
                self.provisioned[(ds.id, name)] = float(fraction)

    def _datastore(self, datastore):
        """The cluster's datastore by ID, or SimError."""
        found = self._cluster.datastores.get(datastore)
        if found is None:
            raise SimError(f"no such datastore '{datastore}'")
        return found

    def _names(self, node):
        """[node] when one is named (SimError if unknown), else every node."""
        return [node] if node and self.node(node) else list(self.nodes)

    def thin_state(self, node, key):
        """A thin pool's metadata fraction and activity, drawn once from the random seed."""
        rng = rng_for(self._cluster.random_seed, "thin", node, key)
        return self.node(node).thin.setdefault(key, {"metadata": round(rng.uniform(0.02, 0.3), 4), "active": True})

    def zpool_state(self, node, name):
        """A zpool's health, fragmentation and dedup, drawn once from the random seed."""
        rng = rng_for(self._cluster.random_seed, "zpool", node, name)
        return self.node(node).zpools.setdefault(name, {"health": "ONLINE", "frag": rng.randint(1, 40),
                                                        "dedup": 1, "alloc": None})

    def provisioned_fraction(self, datastore, node):
        """The fraction of a datastore's size promised to guests on a node (above 1: overcommitted)."""
        rng = rng_for(self._cluster.random_seed, "provisioned", datastore, node)
        return self.provisioned.setdefault((datastore, node), round(rng.uniform(0.3, 1.4), 3))

    def privileges(self):
        """/access/permissions of the token: its role's privileges on / and each ACL path's (propagated)."""
        return {"/": dict.fromkeys(ROLES[self.role], 1), **{path: dict.fromkeys(privs, 1) for path, privs in self.acl.items()}}


def volumes(datastore, node, size, fraction, vmid_base=100):
    """Three guests' disks summing to `fraction` x `size` (the last a container's), and an ISO on file storages."""
    promised = int(size * fraction) // GIB * GIB
    parts = [promised // 2, promised // 3, promised - promised // 2 - promised // 3]
    found = [{"volid": f"{datastore}:vm-{vmid_base + i}-disk-0", "format": "raw", "size": part, "vmid": vmid_base + i,
              "ctime": "1712345678", "content": "rootdir" if i == 2 else "images"} for i, part in enumerate(parts)]
    return found


def check_role(role):
    """A known token role, or SimError."""
    if role not in ROLES:
        raise SimError(f"unknown role '{role}' (known: {', '.join(ROLES)})")
    return role


def check_health(health):
    """A zpool state, or SimError."""
    if health not in ZFS_HEALTH:
        raise SimError(f"unknown zpool health '{health}' (known: {', '.join(ZFS_HEALTH)})")
    return health


def stage_demo(cluster):
    """What `demo` shows at once: a degraded zpool, a thin pool near its metadata limit, a worn SSD; a token that
    sees guests' volumes (provisioned space)."""
    nodes, under = list(cluster.nodes), cluster.underneath
    if "tank" in cluster.datastores:
        first = (cluster.datastores["tank"].nodes or nodes)[0]
        under.set_zpool("tank", node=first, health="DEGRADED", frag=41)
    if "local-lvm" in cluster.datastores:
        under.set_thin_metadata("local-lvm", 0.93, node=nodes[0])
    under.set_disk(nodes[-1], "/dev/sda", wearout=6)
    under.set_role("Administrator")
