"""The simulated answers of the per-node reads: /disks/lvmthin, /disks/zfs, /disks/list, storage content, permissions.

Shaped like Proxmox VE's, quirks included; every rule follows docs/proxmox-api.md#risk.
"""

from __future__ import annotations

from .model import STATFS_TYPES
from .risk import volumes
from .routes import PveApiError

MIB = 1 << 20


def _order(items, rng):
    items = list(items)
    if rng is not None:
        rng.shuffle(items)
    return items


def _local(cluster, node):
    return cluster.local_name() if node == "localhost" else node


def disks_lvmthin(cluster, now, rng, node):
    """Every thin pool of the node, backing a datastore or not; Perl hash order (docs/proxmox-api.md#thin-pools)."""
    node = _local(cluster, node)
    if not cluster.underneath.node(node).lvm:
        return []  # no volume group: lvs prints nothing
    rows = []
    for ds in cluster.datastores.values():
        if ds.type == "lvmthin" and not ds.shared and (ds.nodes is None or node in ds.nodes):
            usage = ds.usage_on(node)
            rows.append(_thin_row(cluster, node, ds.config["vgname"], ds.config["thinpool"], usage.size, usage.used(now)))
    if node == cluster.local_name():  # a thin pool no datastore uses: listed all the same
        rows.append(_thin_row(cluster, node, "vg-spare", "scratch", 256 << 30, 40 << 30))
    return _order(rows, rng)


def _thin_row(cluster, node, vg, lv, size, used):
    state = cluster.underneath.thin_state(node, f"{vg}/{lv}")
    metadata_size = max(size // 1000 // (4 * MIB) * 4 * MIB, 4 * MIB)
    row = {"lv": lv, "vg": vg, "lv_size": size, "lv_type": "t", "ctime": "1712345678", "lv_state": "a"}
    if state["active"]:
        # lvs prints percents with 2 decimals; Proxmox multiplies back and truncates.
        row.update(used=int(round(used * 100 / size, 2) * size / 100),
                   metadata_size=metadata_size, metadata_used=int(round(state["metadata"] * 100, 2) * metadata_size / 100))
    else:  # inactive: empty percents become 0 (the `||= 0`)
        row.update(used=0, metadata_size=metadata_size, metadata_used=0, lv_state="-")
    return row


def disks_zfs(cluster, now, rng, node):
    """The node's zpools: raw figures, integer frag (0 unknown), numeric dedup, no cap (docs/proxmox-api.md#zfs-pools)."""
    node = _local(cluster, node)
    if not cluster.underneath.node(node).zfs:
        raise PveApiError(500, "zfsutils-linux not installed")
    pools = {}
    for ds in cluster.datastores.values():
        if ds.type == "zfspool" and (ds.nodes is None or node in ds.nodes):
            pool = ds.config["pool"].split("/")[0]
            usage = ds.usage_on(node)
            size, used = pools.get(pool, (0, 0))
            pools[pool] = (size + usage.size * 107 // 100, used + usage.used(now))  # raw: parity included
    rows = []
    for name, (size, used) in sorted(pools.items()):
        state = cluster.underneath.zpool_state(node, name)
        alloc = int(size * state["alloc"]) if state["alloc"] is not None else min(used, size)
        dedup = state["dedup"]
        rows.append({"name": name, "size": size, "alloc": alloc, "free": size - alloc, "frag": state["frag"],
                     "dedup": int(dedup) if float(dedup).is_integer() else dedup, "health": state["health"]})
    return rows


def disks_list(cluster, now, rng, node, skipsmart=False, type=None, **_):
    """The node's disks sorted by name; a hung smartctl reads UNKNOWN on PVE 9 (the proxy stalled PVE 8's)."""
    disks = cluster.underneath.node(_local(cluster, node))
    rows = []
    for devpath, disk in sorted(disks.disks.items()):
        unknown = skipsmart or devpath in disks.hanging
        rows.append({"devpath": devpath, "type": disk["type"], "model": disk["model"], "serial": disk["serial"],
                     "vendor": "unknown" if disk["type"] == "nvme" else "ATA", "size": disk["size"], "gpt": 1,
                     "rpm": 7200 if disk["type"] == "hdd" else 0, "osdid": -1, "osdid-list": None,
                     "health": "UNKNOWN" if unknown else disk["health"],
                     "wearout": "N/A" if unknown or disk["type"] == "hdd" else disk["wearout"],
                     "used": "LVM" if devpath == "/dev/sda" else "ZFS"})
    return rows


def storage_content(cluster, now, rng, node, storage, content=None, vmid=None):
    """A datastore's volumes on a node, filtered silently by the token's privileges (docs/proxmox-api.md#content-filter)."""
    node = _local(cluster, node)
    ds = cluster.datastores.get(storage)
    if ds is None:
        raise PveApiError(500, f"storage '{storage}' does not exist")
    if not ds.enabled_on(node):
        raise PveApiError(500, f"storage '{storage}' is not available on node '{node}'")
    if node in ds.inactive:
        raise PveApiError(500, f"storage '{storage}' is not online")
    items = []
    if {"images", "rootdir"} & set(ds.content):
        usage = ds.usage_on(node)
        items += volumes(ds.id, node, usage.size, cluster.underneath.provisioned_fraction(ds.id, node))
    if "iso" in ds.content and ds.type in STATFS_TYPES:
        items.append({"volid": f"{ds.id}:iso/debian-12.iso", "format": "iso", "size": 658505728, "ctime": 1712345678,
                      "content": "iso"})
    items = [i for i in items if i["content"] in ds.content]  # listed: what is asked for and the storage holds
    if cluster.underneath.role == "PVEAuditor":  # images/rootdir need VM.Config.Disk: dropped without a word
        items = [i for i in items if i["content"] not in ("images", "rootdir", "backup")]
    if content is not None:
        items = [i for i in items if i["content"] == content]
    return sorted(items, key=lambda i: i["volid"].lower())


def permissions(cluster, now, rng, path=None, userid=None):
    """/access/permissions: the token's privileges by ACL path (only / here, propagated)."""
    found = cluster.underneath.privileges()
    if path is not None:
        return {path: found["/"]}
    return found


ANSWERS = {f.__name__: f for f in (disks_lvmthin, disks_zfs, disks_list, storage_content, permissions)}
