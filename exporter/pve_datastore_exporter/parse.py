"""Pure functions from Proxmox's answers to records: no I/O, tested on captured payloads.

The facts about the API relied on here are in docs/proxmox-api.md; comments cite its sections.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
from collections.abc import Iterable

from .records import Datastore, NodeFigures, RefreshFailed

log = logging.getLogger(__name__)

MAX_BYTES = 2**63 - 1  # a size past this is no disk, and no database column takes it
TYPE_WIDTH = next(f.metadata["column"]["max_length"] for f in dataclasses.fields(Datastore) if f.name == "type")
# The longest text kept from a field, declared once: its column's width (the seed's VARCHAR(100) for IDs
# and node names, Datastore.type's for types), 100 for a content list (all types together are ~50). No
# real value comes near one: an entry past one is left out, and logged (docs/proxmox-api.md#text-from-proxmox).
MAX_TEXT = {"storage": 100, "node": 100, "type": TYPE_WIDTH, "plugintype": TYPE_WIDTH, "content": 100}
INVALID_TEXT = re.compile("[\x00\ud800-\udfff]")  # a lone surrogate fits no UTF-8 output, NUL no PostgreSQL text
# A node name as Proxmox allows it (docs/proxmox-api.md#storage-ids): nothing else goes into a URL path.
NODE_NAME = re.compile(r"[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?")


def _flag(value) -> bool:
    # Third-party plugins send 0/1 as strings ("1"); int() takes both (docs/proxmox-api.md#booleans-and-lists).
    try:
        return bool(int(value))
    except (TypeError, ValueError):
        return str(value).strip().lower() == "true"


def _bytes(value) -> int:
    # Integers exactly (a float loses them past 2^53); "123" and 1.5e12 are accepted too.
    number = value if isinstance(value, int) else int(value) if str(value).isdigit() else int(float(value))
    if number > MAX_BYTES:
        raise ValueError("size out of range")
    return max(number, 0)


def _content(value) -> str:
    # Comma lists arrive in random order; /storage says "none" and resources "" for empty
    # (docs/proxmox-api.md#booleans-and-lists, #storage-configuration).
    if not isinstance(value, str):
        return ""
    return ",".join(sorted(p for p in (s.strip() for s in value.split(",")) if p and p != "none"))


def _text(value) -> str:
    # Text fields are strings; anything else (a list, a number) is no text at all.
    return value if isinstance(value, str) else ""


def quoted(value: str, limit: int = 120) -> str:
    """A value from Proxmox for a message or a log line: repr'd (escaped, one line) and cut short."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}... ({len(value)} characters)"


def _items(payload, what: str) -> list[dict]:
    # proxmoxer turns an unparsable body into {"errors": b"..."}, so the shape is checked here.
    if not isinstance(payload, list):
        raise RefreshFailed("parse", f"{what}: expected a list from Proxmox, got {type(payload).__name__}")
    items = [item for item in payload if isinstance(item, dict) and isinstance(item.get("storage"), str)]
    _check_text(items, what)
    kept, too_long = [], []
    for item in items:  # each entry looked at once: 100 x 100 clusters list 10,000
        field = _too_long(item)
        if field:
            too_long.append((item, field))
        else:
            kept.append(item)
    if too_long:
        shown = "; ".join(f"{field} over {MAX_TEXT[field]} characters: {quoted(item[field])}"
                          for item, field in too_long[:5]) + ("; ..." if len(too_long) > 5 else "")
        log.warning("%s: left out %d entries with text no real cluster sends: %s", what, len(too_long), shown)
    return kept


def _check_text(items: list[dict], what: str) -> None:
    """RefreshFailed naming the first string of an entry that is not valid text, read today or not."""
    # A JSON "\ud800" escape decodes to a lone surrogate. One search over all the strings (joined by
    # a newline, which it does not match), then, only if it found one, the entry to name.
    strings = [v for i in items for v in i.values() if isinstance(v, str)]
    if not INVALID_TEXT.search("\n".join(strings)):
        return
    key, value = next((k, v) for i in items for k, v in i.items() if isinstance(v, str) and INVALID_TEXT.search(v))
    raise RefreshFailed("parse", f"{what}: the {quoted(str(key))} of an entry is not valid text "
                        f"(a lone surrogate or NUL): {quoted(value)}")


def _too_long(item: dict) -> str | None:
    """The first field of `item` longer than MAX_TEXT allows, or None."""
    for key, limit in MAX_TEXT.items():
        value = item.get(key)
        if isinstance(value, str) and len(value) > limit:
            return key
    return None


def parse_resources(payload) -> dict[str, Datastore]:
    """/cluster/resources?type=storage by datastore: its per-node figures and what the nodes say of it."""
    grouped: dict[str, list[tuple[dict, NodeFigures]]] = {}
    for item in _items(payload, "/cluster/resources"):
        if item.get("type", "storage") == "storage" and isinstance(item.get("node"), str):
            # Figures checked in payload order: a bad size is named as Proxmox listed it.
            grouped.setdefault(item["storage"], []).append((item, _node_figures(item)))
    return {datastore_id: _seen_by_nodes(datastore_id, seen) for datastore_id, seen in grouped.items()}


def _seen_by_nodes(datastore_id: str, seen: list[tuple[dict, NodeFigures]]) -> Datastore:
    # Every node repeats plugintype, content and shared; the first node that has a value counts.
    items, nodes = [item for item, _ in seen], {figures.node: figures for _, figures in seen}
    return Datastore(
        id=datastore_id, type=next((t for t in (_text(i.get("plugintype")) for i in items) if t), "unknown"),
        content=next((c for c in (_content(i.get("content")) for i in items) if c), ""),
        shared=any(_flag(i.get("shared", 0)) for i in items), nodes=tuple(nodes[n] for n in sorted(nodes)))


def _node_figures(item: dict) -> NodeFigures:
    # disk/maxdisk exist only while status is "available"; "unknown" is not an empty disk
    # (docs/proxmox-api.md#sizes-absent-when-unknown).
    if item.get("status") != "available" or "maxdisk" not in item or "disk" not in item:
        return NodeFigures(node=sys.intern(item["node"]), active=False)
    try:
        size, used = _bytes(item["maxdisk"]), _bytes(item["disk"])
    except (TypeError, ValueError, OverflowError):  # OverflowError: a JSON 1e400 arrives as inf
        raise RefreshFailed("parse", f"/cluster/resources: sizes of {item['storage']!r} are not byte counts") from None
    # Interned: every datastore repeats the node's name; one string per node, not one per row.
    return NodeFigures(node=sys.intern(item["node"]), size=size, used=used, available=max(size - used, 0), active=True)


def parse_storage_config(payload) -> dict[str, Datastore]:
    """Read /storage: type, content, shared, disabled; disabled datastores appear only here.

    docs/proxmox-api.md#disabled-only-in-storage.
    """
    return {
        item["storage"]: Datastore(
            # type "" when absent: build_datastores then takes the nodes' plugintype.
            id=item["storage"], type=_text(item.get("type")), content=_content(item.get("content")),
            shared=_flag(item.get("shared", 0)), enabled=not _flag(item.get("disable", 0)), pool=_backing(item))
        for item in _items(payload, "/storage")
    }


def _backing(item: dict) -> str:
    """What a datastore lives on: "vg/thinpool" (lvmthin), the dataset (zfspool); joined with the per-node reads."""
    # docs/proxmox-api.md#thin-pools and #zfs-pools: lvmthin's vgname/thinpool name the thin pool's LV,
    # zfspool's pool is a dataset whose first component is the zpool.
    kind = _text(item.get("type"))
    if kind == "lvmthin" and _text(item.get("vgname")) and _text(item.get("thinpool")):
        return f"{item['vgname']}/{item['thinpool']}"[:200]
    return _text(item.get("pool"))[:200] if kind == "zfspool" else ""


def build_datastores(seen: dict[str, Datastore], configured: dict[str, Datastore]) -> list[Datastore]:
    """Merge both lists into cluster-wide datastores: a shared one counted once, a local one summed."""
    merged = []
    for datastore_id in sorted(set(seen) | set(configured)):
        by_nodes = seen.get(datastore_id) or Datastore(datastore_id)
        # Not in /storage: enabled, and no type of its own ("" lets the nodes' plugintype stand).
        conf = configured.get(datastore_id) or Datastore(datastore_id, type="")
        shared = conf.shared or by_nodes.shared
        size, used = _cluster_figures(by_nodes.nodes, shared)
        # What /storage says stands (a field read there needs no line here); the nodes fill the rest.
        merged.append(dataclasses.replace(
            conf, type=conf.type or by_nodes.type,
            content=conf.content or by_nodes.content, shared=shared, size=size, used=used,
            available=max(size - used, 0), active=any(n.active for n in by_nodes.nodes), nodes=by_nodes.nodes))
    return merged


def _cluster_figures(nodes: Iterable[NodeFigures], shared: bool) -> tuple[int, int]:
    active = [n for n in nodes if n.active]
    if not active:
        return 0, 0
    if shared:
        # Every node reports the same shared capacity: count it once, not once per node
        # (docs/proxmox-api.md#shared-datastores).
        return active[0].size, active[0].used
    size, used = sum(n.size for n in active), sum(n.used for n in active)
    if size > MAX_BYTES or used > MAX_BYTES:
        raise RefreshFailed("parse", "/cluster/resources: a datastore's total over its nodes is out of range")
    return size, used


def parse(resources_payload, storage_payload) -> list[Datastore]:
    """Both payloads to datastores."""
    return build_datastores(parse_resources(resources_payload), parse_storage_config(storage_payload))


# -- what the two lists do not say: the cluster's name, and each node's own `avail` ----------------


def online_nodes(resources_payload) -> list[str]:
    """The nodes /cluster/resources shows with a datastore `available`: those worth asking (never raises)."""
    # An offline node's entries turn `unknown` within 5 minutes (docs/proxmox-api.md#sizes-absent-when-unknown):
    # asking it would only wait for a 595 (docs/proxmox-api.md#595-and-596).
    items = resources_payload if isinstance(resources_payload, list) else []
    return sorted({item["node"] for item in items if isinstance(item, dict) and item.get("status") == "available"
                   and isinstance(item.get("node"), str) and NODE_NAME.fullmatch(item["node"])})


def parse_node_storage(payload, node: str) -> dict[str, int]:
    """/nodes/{node}/storage: Proxmox's own `avail` of each datastore enabled and active there.

    Raises RefreshFailed or ValueError for an answer that is not one (the node then keeps its
    /cluster/resources figures). docs/proxmox-api.md#node-storage.
    """
    found = {}
    for item in _items(payload, f"/nodes/{node}/storage"):
        # total/used/avail are 0 unless enabled and active: never an empty disk.
        if _flag(item.get("enabled")) and _flag(item.get("active")) and "avail" in item:
            try:
                found[item["storage"]] = _bytes(item["avail"])
            except (TypeError, ValueError, OverflowError):
                raise ValueError(f"the avail of {quoted(item['storage'])} is not a byte count: "
                                 f"{quoted(str(item['avail']))}") from None
    return found


def parse_cluster_name(payload) -> str | None:
    """/cluster/status: the cluster entry's name, or a standalone host's own node name; None if neither."""
    # A standalone host has no cluster entry, only its node with local 1 (docs/proxmox-api.md#cluster-status).
    items = [i for i in payload if isinstance(i, dict)] if isinstance(payload, list) else []
    cluster = [i.get("name") for i in items if i.get("type") == "cluster"]
    local = [i.get("name") for i in items if i.get("type") == "node" and _flag(i.get("local"))]
    name = next(iter(cluster or local), None)
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_TEXT["node"] or INVALID_TEXT.search(name):
        return None
    return name.strip()


def with_exact_available(datastores: list[Datastore], avail: dict[str, dict[str, int]]) -> list[Datastore]:
    """Each node's `avail` (avail[node][datastore]) where it reported one; cluster-wide figures recomputed.

    File-system datastores keep root's blocks out of `avail` (docs/proxmox-api.md#root-reserved-blocks).
    """
    return [_exact(d, avail) for d in datastores]


def _exact(datastore: Datastore, avail: dict[str, dict[str, int]]) -> Datastore:
    def reported(n: NodeFigures) -> bool:  # only over figures /cluster/resources has: no avail without a size
        return n.active and datastore.id in avail.get(n.node, {})

    # A NodeFigures built, not dataclasses.replace'd: ~3x faster, and 100 x 100 clusters have 10,000.
    nodes = tuple(NodeFigures(n.node, n.size, n.used, avail[n.node][datastore.id], n.active) if reported(n) else n
                  for n in datastore.nodes)
    if not any(reported(n) for n in nodes):
        return datastore
    active = [n for n in nodes if n.active]
    if datastore.shared:  # counted once, as size and used are: from a node that said it, if any did
        available = next((n for n in active if reported(n)), active[0]).available
    else:
        available = min(sum(n.available for n in active), MAX_BYTES)
    return dataclasses.replace(datastore, nodes=nodes, available=available)
