"""The per-node reads in the answers: each datastore's and node's risk figures, and the risks in words.

The API, `list --json`, `list` and the page take them from here (answers.datastores_answer). A risk is
a record with a code: the JSON says it in English (RISKS), the page translates it by code (i18n.risk).
The limits are the alerts' (prometheus/alerts.yml, group pve-datastore-risk).
"""

from __future__ import annotations

from typing import NamedTuple

from .answers import N_
from .parse_risk import GUEST_CONTENT, THIN_CAPABLE
from .records import Datastore, View

THIN_METADATA_HIGH = 0.80  # PveDatastoreThinMetadataHigh (warning)
ZPOOL_FULL = 0.80  # PveZfsPoolNearlyFull
OVERCOMMIT, OVERCOMMIT_USED = 1.0, 0.70  # PveDatastoreOvercommitted: promised > size while over 70 % used
WEAR_LOW = 0.10  # PveDiskWearingOut

RISKS = {
    "thin_metadata": N_("the thin pool's metadata on %(node)s is %(percent)s full"),
    "zpool_unhealthy": N_("ZFS pool %(pool)s on %(node)s is %(state)s"),
    "zpool_full": N_("ZFS pool %(pool)s on %(node)s is %(percent)s allocated"),
    "overcommitted": N_("%(percent)s of its size on %(node)s is promised to guests' disks"),
    "disk_failed": N_("disk %(devpath)s on %(node)s (%(model)s) fails its SMART check"),
    "disk_worn": N_("disk %(devpath)s on %(node)s (%(model)s) has %(percent)s of its life left"),
}


class RiskNote(NamedTuple):
    """A risk found in the figures: a code of RISKS, its level ("high" or "critical") and its placeholders."""

    code: str
    level: str
    values: dict

    def english(self) -> str:
        """The sentence the JSON carries."""
        return RISKS[self.code] % self.values


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.1f} %"


_last: tuple = (None, {})  # the Risk last indexed, and its index: a view is answered many times, and whole


def _index(risk) -> dict:
    """The figures of `risk` by what they are looked up by: (datastore, node), (zpool, node)."""
    global _last
    cached = _last  # read once: another request's thread may replace it meanwhile (never its index's risk)
    if cached[0] is not risk:
        cached = _last = (risk, {"thin": {(p.datastore, p.node): p for p in risk.thin_pools if p.datastore},
                                 "zfs": {(p.name, p.node): p for p in risk.zfs_pools},
                                 "promised": {(p.datastore, p.node): p.bytes for p in risk.provisioned}})
    return cached[1]


def can_promise(datastore: Datastore) -> bool:
    """Whether guests' disks on `datastore` may be promised more than it holds: a thin-capable type holding images or rootdir."""
    return datastore.type in THIN_CAPABLE and not GUEST_CONTENT.isdisjoint(datastore.content.split(","))


def node_figures(view: View, datastore: Datastore) -> dict[str, dict]:
    """Per node of `datastore`, the keys its type has (None where not read): thin pool metadata (lvmthin),
    zpool (zfspool), provisioned bytes (can_promise). Other types get none: 10,000 node entries stay small."""
    zpool_name = datastore.pool.split("/")[0] if datastore.type == "zfspool" and datastore.pool else None
    index = _index(view.risk)
    zpools = {n.node: index["zfs"].get((zpool_name, n.node)) for n in datastore.nodes}
    thin = {n.node: index["thin"].get((datastore.id, n.node)) for n in datastore.nodes}
    promised = {n.node: index["promised"].get((datastore.id, n.node)) for n in datastore.nodes}
    read = [b for b in promised.values() if b is not None]
    if datastore.shared and read:  # read once, on one node: the same volumes on every node
        promised = dict.fromkeys(promised, max(read))
    found = {}
    for n in datastore.nodes:
        keys: dict = {}
        if datastore.type == "lvmthin":
            pool = thin.get(n.node)
            keys.update(thin_metadata_size=pool.metadata_size if pool else None,
                        thin_metadata_used=pool.metadata_used if pool and pool.active else None)
        if datastore.type == "zfspool":
            z = zpools.get(n.node)
            keys.update(zpool=z.name if z else None, zpool_health=z.health if z else None,
                        zpool_size=z.size if z else None, zpool_allocated=z.alloc if z else None,
                        zpool_fragmentation=z.frag if z else None)
        if can_promise(datastore):
            keys["provisioned"] = promised.get(n.node)
        found[n.node] = keys
    return found


def datastore_risks(datastore: Datastore, figures: dict[str, dict]) -> list[RiskNote]:
    """What is at risk on `datastore`, node by node, by the alerts' limits."""
    found, sizes = [], {n.node: n for n in datastore.nodes}
    for node, f in figures.items():
        if f.get("thin_metadata_used") is not None and f["thin_metadata_size"]:
            fill = f["thin_metadata_used"] / f["thin_metadata_size"]
            if fill > THIN_METADATA_HIGH:
                found.append(RiskNote("thin_metadata", "critical" if fill > 0.9 else "high", {"node": node, "percent": _pct(fill)}))
        if f.get("zpool_health") not in (None, "ONLINE"):
            found.append(RiskNote("zpool_unhealthy", "critical", {"node": node, "pool": f["zpool"], "state": f["zpool_health"]}))
        if f.get("zpool_size") and f["zpool_allocated"] / f["zpool_size"] > ZPOOL_FULL:
            found.append(RiskNote("zpool_full", "high", {"node": node, "pool": f["zpool"],
                                                     "percent": _pct(f["zpool_allocated"] / f["zpool_size"])}))
        n = sizes[node]
        if f.get("provisioned") is not None and n.size and n.used is not None \
                and f["provisioned"] / n.size > OVERCOMMIT and n.used / n.size > OVERCOMMIT_USED:
            if not (datastore.shared and any(r.code == "overcommitted" for r in found)):  # shared: said once
                found.append(RiskNote("overcommitted", "high", {"node": node, "percent": _pct(f["provisioned"] / n.size)}))
    return found


def datastore_keys(view: View, datastore: Datastore, answer: dict) -> dict:
    """A datastore's answer with its risk keys: per node, and for the datastore (documented in the README)."""
    figures = node_figures(view, datastore)
    for entry in answer["nodes"]:
        entry.update(figures.get(entry["node"], {}))
    read = {node: f["provisioned"] for node, f in figures.items() if f.get("provisioned") is not None}
    meta = [f["thin_metadata_used"] / f["thin_metadata_size"] for f in figures.values()
            if f.get("thin_metadata_used") is not None and f["thin_metadata_size"]]
    health = sorted({f["zpool_health"] for f in figures.values() if f.get("zpool_health")}, key=lambda s: s == "ONLINE")
    # Overcommit over the nodes read: a shared datastore once, a local one summed over the nodes that answered.
    sizes = {n.node: n.size for n in datastore.nodes if n.node in read and n.size}
    provisioned = (max(read.values()) if datastore.shared else sum(read.values())) if read else None
    capacity = (max(sizes.values()) if datastore.shared else sum(sizes.values())) if sizes else 0
    answer.update(provisioned=provisioned,
                  overcommit=round(provisioned / capacity, 4) if provisioned is not None and capacity else None,
                  thin_metadata_fraction=round(max(meta), 4) if meta else None,
                  zpool_health=health[0] if health else None,
                  risks=[r.english() for r in datastore_risks(datastore, figures)])
    return answer


def disk_risks(view: View) -> list[RiskNote]:
    """Disks that fail SMART or are worn out, by the alerts' limits."""
    found = []
    for d in view.risk.disks:
        values = {"node": d.node, "devpath": d.devpath, "model": d.model or d.type}
        if d.healthy is False:
            found.append(RiskNote("disk_failed", "critical", values))
        if d.life_left is not None and d.life_left < WEAR_LOW:
            found.append(RiskNote("disk_worn", "high", {**values, "percent": _pct(d.life_left)}))
    return found


def page_risks(view: View) -> dict:
    """The page's risks as records, to say them by code: by datastore ID, and the disks' under ""."""
    found = {d.id: datastore_risks(d, node_figures(view, d)) for d in view.enabled}
    return {**{i: r for i, r in found.items() if r}, "": disk_risks(view)}


def disks_answer(view: View) -> list[dict]:
    """The disks the last reads found, node by node."""
    return [{"node": d.node, "devpath": d.devpath, "type": d.type, "model": d.model, "serial": d.serial, "size": d.size,
             "health": d.health, "healthy": d.healthy, "life_left": d.life_left} for d in view.risk.disks]


def reads_answer(view: View) -> list[dict]:
    """Each per-node read's bookkeeping: when it last worked, and why it last failed."""
    return [{"read": r.read, "node": r.node, "last_attempt": r.last_attempt, "last_success": r.last_success,
             "reason": r.reason, "error": r.error} for r in view.risk.reads]
