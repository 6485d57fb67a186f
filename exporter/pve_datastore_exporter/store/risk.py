"""The per-node reads' table: each (read, node)'s last good figures, as JSON, and its bookkeeping."""

from __future__ import annotations

import json

from ..records import Disk, NodeRead, Partial, Provisioned, Risk, ThinPool, ZfsPool
from .tables import NodeReadModel

# Which records each read's figures are, by the read's name; "storage" has none of its own (they are the snapshot's).
FIGURES = {"pools": (ThinPool, ZfsPool), "disks": (Disk,), "provisioned": (Provisioned,)}


RECORDS = {cls.__name__: cls for classes in FIGURES.values() for cls in classes}


def encode(figures) -> str:
    """Records as the `figures` column's JSON."""
    return json.dumps([[type(f).__name__, f.__dict__] for f in figures], separators=(",", ":"))


def save(read: str, outcomes: dict, now: float, keep_for: float) -> None:
    """Write one read's outcome per node (figures, (reason, error) or Partial); drop figures older than `keep_for` s."""
    m = NodeReadModel
    rows = {r.node: r for r in m.select().where(m.read == read)}
    for node, outcome in sorted(outcomes.items()):
        row = rows.get(node) or m(read=read, node=node, failures="{}", figures="[]")
        row.last_attempt = now
        if isinstance(outcome, tuple):  # (reason, error): the node keeps its last good figures
            (reason, error), figures = outcome, None
        elif isinstance(outcome, Partial):  # some figures, and a refusal counted
            reason, error, figures = outcome.reason, outcome.error, outcome.figures
        else:
            reason, error, figures = None, None, outcome
        row.reason, row.error = reason, error
        if reason:
            failures = json.loads(row.failures or "{}")
            failures[reason] = failures.get(reason, 0) + 1
            row.failures = json.dumps(failures, sort_keys=True)
        if figures is not None:
            row.last_success, row.figures = now, encode(figures)
        row.save(force_insert=node not in rows)
    stale = (m.read == read) & (m.last_success < now - keep_for) & (m.figures != "[]")
    m.update(figures="[]").where(stale).execute()  # too old to stand for the node's state, asked or not
    gone = [node for node, row in rows.items() if node not in outcomes and (row.last_attempt or 0) < now - keep_for]
    if gone:  # a node that left the cluster: its series go too
        m.delete().where((m.read == read) & m.node.in_(gone)).execute()


def load() -> Risk:
    """Every node's stored figures and bookkeeping as one Risk."""
    found: dict[str, list] = {name: [] for name in RECORDS}
    reads = []
    for row in NodeReadModel.select():
        reads.append(NodeRead(read=row.read, node=row.node, last_attempt=row.last_attempt,
                              last_success=row.last_success, reason=row.reason, error=row.error,
                              failures=tuple(sorted(json.loads(row.failures or "{}").items()))))
        for name, fields in json.loads(row.figures or "[]"):
            if name in RECORDS:
                found[name].append(RECORDS[name](**fields))
    key = {"ThinPool": lambda r: (r.node, r.vg, r.lv), "ZfsPool": lambda r: (r.node, r.name),
           "Disk": lambda r: (r.node, r.devpath), "Provisioned": lambda r: (r.datastore, r.node)}
    sort = {name: tuple(sorted(items, key=key[name])) for name, items in found.items()}
    return Risk(thin_pools=sort["ThinPool"], zfs_pools=sort["ZfsPool"], disks=sort["Disk"],
                provisioned=sort["Provisioned"], reads=tuple(sorted(reads, key=lambda r: (r.read, r.node))))
