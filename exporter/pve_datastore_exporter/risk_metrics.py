"""The per-node reads' families of the exposition: thin pool metadata, zpools, disks, provisioned space, read health.

Rendered with the datastore families (metrics.render_datastores), once per change, never per scrape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .records import NODE_READ_REASONS, READS, Risk, View

# Every state `zpool list` prints (docs/proxmox-api.md#zfs-pools): the state set has a series for each.
ZFS_STATES = ("ONLINE", "DEGRADED", "FAULTED", "OFFLINE", "UNAVAIL", "REMOVED", "SUSPENDED")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


class _Family:
    """One family's lines: HELP, TYPE, then a line per series."""

    def __init__(self, lines: list[str], cluster: str):
        self._lines, self._cluster = lines, cluster

    def add(self, name: str, help_text: str, series: Iterable[tuple[dict, float | None]], kind: str = "gauge") -> None:
        """A family's lines; none at all while it has no series (a read that is off costs no bytes)."""
        lines = [f"{name}{_labels(pve_cluster=self._cluster, **labels)} {_number(value)}"
                 for labels, value in series if value is not None]
        if lines:
            self._lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *lines]


def _each(items: Iterable, labels: Callable[[object], dict], value: Callable[[object], float | None]):
    return [(labels(item), value(item)) for item in items]


def render_risk(view: View) -> list[str]:
    """The lines of the per-node reads' families for one view."""
    lines: list[str] = []
    family, risk = _Family(lines, view.cluster), view.risk
    _thin(family, risk)
    _zfs(family, view)
    _disks(family, risk)
    family.add("pve_datastore_provisioned_bytes", "Space promised to guests' disks on the datastore (virtual sizes), "
               "read on the node; a shared datastore on one node only.",
               _each(risk.provisioned, lambda p: {"datastore": p.datastore, "node": p.node}, lambda p: p.bytes))
    _reads(family, risk)
    return lines


def _thin(family: _Family, risk: Risk) -> None:
    def labels(p):  # a thin pool that backs no datastore keeps its series, with datastore=""
        return {"datastore": p.datastore, "node": p.node, "thin_pool": f"{p.vg}/{p.lv}"}

    family.add("pve_datastore_thin_metadata_size_bytes", "Size of the LVM thin pool's metadata volume, in bytes.",
               _each(risk.thin_pools, labels, lambda p: p.metadata_size))
    # An inactive pool reads 0 used (docs/proxmox-api.md#thin-pools): no series rather than a false 0.
    family.add("pve_datastore_thin_metadata_used_bytes", "Used space of the LVM thin pool's metadata volume, in bytes; "
               "absent while the pool is inactive.",
               _each(risk.thin_pools, labels, lambda p: p.metadata_used if p.active else None))


def _zfs(family: _Family, view: View) -> None:
    pools = view.risk.zfs_pools

    def labels(p):
        return {"node": p.node, "pool": p.name}

    for suffix, help_text, value in (
            ("size_bytes", "Raw size of the zpool (parity included), in bytes.", lambda p: p.size),
            ("allocated_bytes", "Raw space allocated in the zpool, in bytes.", lambda p: p.alloc),
            ("free_bytes", "Raw free space of the zpool, in bytes.", lambda p: p.free),
            ("fragmentation_ratio", "Fragmentation of the zpool's free space, 0-1 (0 also when ZFS does not know).",
             lambda p: p.frag),
            ("dedup_ratio", "Deduplication ratio of the zpool (1 without dedup).", lambda p: p.dedup)):
        family.add(f"pve_datastore_zfs_pool_{suffix}", help_text, _each(pools, labels, value))
    family.add("pve_datastore_zfs_pool_state", "1 for the zpool's current state, 0 for the others.",
               [({**labels(p), "state": state}, int(state == p.health))
                for p in pools for state in (*ZFS_STATES, *((p.health,) if p.health not in ZFS_STATES else ()))])
    zpools = {(p.node, p.name) for p in pools}
    family.add("pve_datastore_zfs_pool_info", "A zfspool datastore's zpool on a node (its dataset's first component). "
               "Always 1.",
               [({"datastore": d.id, "node": n.node, "pool": d.pool.split("/")[0]}, 1)
                for d in view.rows if d.type == "zfspool" and d.pool for n in d.nodes
                if (n.node, d.pool.split("/")[0]) in zpools])


def _disks(family: _Family, risk: Risk) -> None:
    def labels(d):
        return {"node": d.node, "devpath": d.devpath}

    family.add("pve_datastore_disk_info", "A disk of a node: its type (hdd, ssd, nvme, usb, unknown), model and serial. "
               "Always 1.", _each(risk.disks, lambda d: {**labels(d), "type": d.type, "model": d.model,
                                                          "serial": d.serial}, lambda d: 1))
    family.add("pve_datastore_disk_healthy", "1 when SMART says PASSED or OK, 0 when FAILED; absent when unknown.",
               _each(risk.disks, labels, lambda d: None if d.healthy is None else int(d.healthy)))
    family.add("pve_datastore_disk_life_left_ratio", "An SSD's life left, 0-1 (1 = new); absent for HDDs.",
               _each(risk.disks, labels, lambda d: d.life_left))
    family.add("pve_datastore_disk_size_bytes", "Size of the disk, in bytes.", _each(risk.disks, labels, lambda d: d.size))


def _reads(family: _Family, risk: Risk) -> None:
    reads = sorted(risk.reads, key=lambda r: (READS.index(r.read) if r.read in READS else len(READS), r.node))
    family.add("pve_datastore_node_read_failures_total", "Failed per-node reads by read, node and reason.",
               [({"read": r.read, "node": r.node, "reason": reason}, dict(r.failures).get(reason, 0))
                for r in reads for reason in NODE_READ_REASONS], kind="counter")
    family.add("pve_datastore_node_read_success_timestamp_seconds", "Unix time of the last successful per-node read "
               "(0: none yet).", _each(reads, lambda r: {"read": r.read, "node": r.node}, lambda r: r.last_success or 0))
