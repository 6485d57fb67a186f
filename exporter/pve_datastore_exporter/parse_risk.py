"""Pure functions from the per-node reads' answers to records: thin pools, zpools, disks, provisioned bytes.

No I/O; tested on captured payloads. The facts relied on are in docs/proxmox-api.md#risk; comments
cite its sections. Each parser raises ValueError for an answer that is not one (the read then fails
with reason "parse" and the node keeps its last good figures).
"""

from __future__ import annotations

from .config import DATASTORE_ID
from .parse import INVALID_TEXT, MAX_BYTES
from .records import Datastore, Disk, Provisioned, ThinPool, ZfsPool

MAX_TEXT = 200  # a label value from Proxmox (model, serial, pool) past this is cut: no real one comes near
THIN_CAPABLE = frozenset({"lvmthin", "zfspool", "rbd", "dir", "nfs", "cifs", "btrfs"})  # may promise more than they hold
# A storage ID as Proxmox allows it (docs/proxmox-api.md#storage-ids), ASCII only: nothing else goes into a URL path.
STORAGE_ID = DATASTORE_ID
GUEST_CONTENT = frozenset({"images", "rootdir"})  # the volumes that are guests' disks (docs/proxmox-api.md#content)


def _list(payload, what: str) -> list[dict]:
    if not isinstance(payload, list):
        raise ValueError(f"{what}: expected a list, got {type(payload).__name__}")
    return [item for item in payload if isinstance(item, dict)]


def _count(value, what: str) -> int:
    # Integers exactly; "123" (text copied from a command) and 1.5e12 are accepted; a bool is no count.
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{what} is not a byte count: {value!r}")
    try:
        number = value if isinstance(value, int) else int(value) if str(value).isdigit() else int(float(value))
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{what} is not a byte count: {str(value)[:40]!r}") from None
    if not 0 <= number <= MAX_BYTES:
        raise ValueError(f"{what} is out of range: {number}")
    return number


def _number(value) -> float | None:
    """A JSON number, or a string holding one (text copied from a command's output); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value if value == value and abs(value) != float("inf") else None
    try:
        return _number(float(value)) if isinstance(value, str) and value.strip() else None
    except ValueError:
        return None


def _label(value) -> str:
    """Text for a label: a string, cut short, without what no output takes (NUL, lone surrogates)."""
    return INVALID_TEXT.sub("", value)[:MAX_TEXT] if isinstance(value, str) else ""


def parse_lvmthin(payload, node: str, datastores: list[Datastore]) -> list[ThinPool]:
    """/nodes/{node}/disks/lvmthin: every thin pool, joined to its lvmthin datastore by vg/lv (docs/proxmox-api.md#thin-pools)."""
    backs = {d.pool: d.id for d in datastores if d.type == "lvmthin" and d.pool}
    pools = []
    for item in _list(payload, "disks/lvmthin"):
        vg, lv = _label(item.get("vg")), _label(item.get("lv"))
        if not vg or not lv:
            continue
        what = f"thin pool {vg}/{lv}"
        # An inactive pool prints empty percentages, which Proxmox turns into 0 used: not an empty pool.
        pools.append(ThinPool(node=node, vg=vg, lv=lv, size=_count(item.get("lv_size"), what + " lv_size"),
                              used=_count(item.get("used", 0), what + " used"),
                              metadata_size=_count(item.get("metadata_size"), what + " metadata_size"),
                              metadata_used=_count(item.get("metadata_used", 0), what + " metadata_used"),
                              active=item.get("lv_state", "a") == "a", datastore=backs.get(f"{vg}/{lv}", "")))
    return sorted(pools, key=lambda p: (p.vg, p.lv))


def parse_zfs(payload, node: str) -> list[ZfsPool]:
    """/nodes/{node}/disks/zfs: each zpool's raw figures and health (docs/proxmox-api.md#zfs-pools)."""
    pools = []
    for item in _list(payload, "disks/zfs"):
        name = _label(item.get("name"))
        if not name:
            continue
        what = f"zpool {name}"
        frag, dedup = _number(item.get("frag", 0)), _number(item.get("dedup", 1))
        # frag is an integer percent, 0 when ZFS does not know; dedup a number (1, 1.25), never "1.00x".
        if frag is None or not 0 <= frag <= 100:
            raise ValueError(f"{what}: frag is not a percentage: {str(item.get('frag'))[:40]!r}")
        if dedup is None or not 0 < dedup < 1e6:
            raise ValueError(f"{what}: dedup is not a ratio: {str(item.get('dedup'))[:40]!r}")
        pools.append(ZfsPool(node=node, name=name, size=_count(item.get("size"), what + " size"),
                             alloc=_count(item.get("alloc"), what + " alloc"), free=_count(item.get("free"), what + " free"),
                             frag=frag / 100, dedup=float(dedup), health=_label(item.get("health")).upper() or "UNKNOWN"))
    return sorted(pools, key=lambda p: p.name)


def smart_healthy(health: str) -> bool | None:
    """SMART's verdict: True for PASSED/OK, False for FAILED (FAILED!), None for UNKNOWN or vendor text."""
    word = health.strip().upper().rstrip("!")
    return True if word in ("PASSED", "OK") else False if word == "FAILED" else None


def parse_disks(payload, node: str) -> list[Disk]:
    """/nodes/{node}/disks/list: each disk's SMART health and life left (docs/proxmox-api.md#disks)."""
    disks = []
    for item in _list(payload, "disks/list"):
        devpath = _label(item.get("devpath"))
        if not devpath or item.get("type") == "partition":
            continue
        health = _label(item.get("health")) or "UNKNOWN"
        wearout = _number(item.get("wearout"))  # % life LEFT for SSD/NVMe; "N/A" for HDDs (no number: no figure)
        life = wearout / 100 if wearout is not None and 0 <= wearout <= 100 else None
        disks.append(Disk(node=node, devpath=devpath, type=_label(item.get("type")) or "unknown",
                          model=_label(item.get("model")), serial=_label(item.get("serial")),
                          size=_count(item.get("size", 0), f"disk {devpath} size"), health=health,
                          healthy=smart_healthy(health), life_left=life))
    return sorted(disks, key=lambda d: d.devpath)


def parse_content(payload, datastore: str, node: str) -> Provisioned:
    """/nodes/{node}/storage/{storage}/content: the bytes promised to guests' disks (docs/proxmox-api.md#content)."""
    total = 0
    for item in _list(payload, f"storage/{datastore}/content"):
        if item.get("content", "images") not in GUEST_CONTENT:
            continue
        # PVE >= 9.1.5 sends approximate-size (an upper bound) instead of size for an inactive LV's qcow2.
        size = item.get("size", item.get("approximate-size"))
        if size is not None:
            total += _count(size, f"{datastore} volume size")
    return Provisioned(datastore=datastore, node=node, bytes=min(total, MAX_BYTES))


def can_see_guest_disks(permissions, datastore: str) -> bool:
    """Whether /access/permissions grants what lists guests' volumes on `datastore` (docs/proxmox-api.md#content-filter).

    Datastore.Allocate on the datastore, or Datastore.Audit there with VM.Config.Disk on every guest
    (/vms/<vmid>, so propagated from /vms or /). The most specific path listed counts: Proxmox lists
    each ACL path with the privileges the token holds there.
    """
    if not isinstance(permissions, dict):
        raise ValueError(f"access/permissions: expected an object, got {type(permissions).__name__}")

    def held(path: str, below: bool = False) -> set[str]:
        # On the path itself every privilege listed holds; inherited from a parent only a propagated one (1).
        # Proxmox checks VM.Config.Disk on /vms/<owner>, a level below /vms: there only propagated ones count.
        for at in _ancestors(path):
            if isinstance(permissions.get(at), dict):
                return {k for k, v in permissions[at].items() if (at == path and not below) or v in (1, "1", True)}
        return set()

    store, vms = held(f"/storage/{datastore}"), held("/vms", below=True)
    return "Datastore.Allocate" in store or ("Datastore.Audit" in store and "VM.Config.Disk" in vms)


def _ancestors(path: str) -> list[str]:
    """"/storage/x" -> ["/storage/x", "/storage", "/"]."""
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:i]) for i in range(len(parts), 0, -1)] + ["/"]


def provisioned_targets(datastores: list[Datastore], online: set[str]) -> list[tuple[str, str]]:
    """(datastore, node) pairs to read: thin-capable with guests' disks, active on an online node; shared ones once."""
    targets = []
    for d in datastores:
        if d.type not in THIN_CAPABLE or not d.enabled or GUEST_CONTENT.isdisjoint(d.content.split(",")) \
                or not STORAGE_ID.fullmatch(d.id):
            continue
        nodes = [n.node for n in d.nodes if n.active and n.node in online]
        targets += [(d.id, n) for n in (nodes[:1] if d.shared else nodes)]
    return targets
