"""The per-node reads beside the capacity refresh: thin pools and zpools, disks, provisioned space.

Only the leader reads, each read on its own cadence, in a thread of its own: a slow or failing node
never delays or fails a refresh, and a scrape never waits for it. Each node's outcome is stored
(store/risk.py) and published like the snapshot, so every replica shows the same figures.
docs/architecture.md#the-per-node-reads tells the bounds.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import random
import threading
import time
from collections.abc import Callable

from .config import scrub
from .coordination import NotLeader
from .parse import NODE_NAME, quoted
from .parse_risk import can_see_guest_disks, parse_content, parse_disks, parse_lvmthin, parse_zfs, provisioned_targets
from .proxmox import describe, fetch_content, fetch_disks, fetch_permissions, fetch_pools, node_reason
from .reader import NODE_WORKERS
from .records import MAX_MESSAGE, Partial, View
from .store import Fenced, StoreError

log = logging.getLogger(__name__)

TICK = 1.0  # s between looks at what is due
KEEP_INTERVALS = 3  # a failing node's last good figures are shown until this many intervals old ...
MIN_KEEP = 900.0  # ... and at least 15 minutes, then dropped (no series rather than a stale one)
MAX_READ_SECONDS = 300.0  # a whole per-node read, every node, ends within this


def nodes_of(view: View) -> dict[str, bool]:
    """Every node of the snapshot, True when it reports any datastore available (online)."""
    nodes: dict[str, bool] = {}
    for row in view.rows:
        for figures in row.nodes:
            # Only a name Proxmox allows goes into a URL path (docs/proxmox-api.md#storage-ids).
            if NODE_NAME.fullmatch(figures.node):
                nodes[figures.node] = nodes.get(figures.node, False) or figures.active
    return dict(sorted(nodes.items()))


def batches(keys: list, node_of: Callable) -> list[list]:
    """The keys in batches of at most NODE_WORKERS, no two of a batch to one node (a node gets one call at a time)."""
    queues: dict = {}
    for key in keys:
        queues.setdefault(node_of(key) if node_of(key) is not None else key, []).append(key)
    found = []
    while queues:
        for start in range(0, len(queues), NODE_WORKERS):
            found.append([queues[n].pop(0) for n in list(queues)[start:start + NODE_WORKERS]])
        queues = {n: q for n, q in queues.items() if q}
    return found


class Moved(Exception):
    """Not asked: the lock was taken again since the read began (its epoch moved on); the read's write is refused."""

    def __init__(self, epoch: int | None, began: int | None):
        super().__init__(f"not asked: the leader's lock was lost and taken again (epoch {epoch}) since the read "
                         f"began (epoch {began})")


class NodeReads:
    """Runs each per-node read when due, while this replica leads; stores and publishes its outcome."""

    def __init__(self, config, reader, store, display, leads: Callable[[], bool], fence: Callable,
                 epoch: Callable[[], int | None], clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 rand: Callable[[], float] = random.random):
        self._reader, self._store, self._display, self._leads = reader, store, display, leads
        self._fence = fence  # coordination.Coordinator.reading: each batch of calls is fenced like a refresh
        self._epoch = None  # the epoch the read under way began under: its batches' and its write's (store.Fenced)
        self._current_epoch = epoch  # Coordinator.epoch: the fence of a write that follows no call (no mark made)
        self._clock, self._monotonic, self._rand = clock, monotonic, rand
        self._timeout, self._secrets = config.proxmox_timeout, config.secrets()
        self.intervals = {read: seconds for read, seconds in (
            ("pools", config.pools_interval), ("disks", config.disks_interval),
            ("provisioned", config.provisioned_interval)) if seconds > 0}
        self._exact = config.exact_available
        self._due = dict.fromkeys(self.intervals, 0.0)  # the first reads once a snapshot names the nodes
        self._failing: dict[str, set[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="node-reads", daemon=True)

    def start(self) -> None:
        """Start the loop if any read is on (EXPORTER_EXACT_AVAILABLE's outcomes are stored by it too)."""
        if self.intervals or self._exact:
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """End the loop; a read under way ends by its own bound."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(TICK):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the loop must outlive any bug in one read
                log.exception("a per-node read crashed")

    def tick(self) -> None:
        """Store the refresh's per-node storage outcomes, then run each read that is due (leader only)."""
        if not self._leads():
            return
        fence, storage = self._reader.storage_outcomes()
        if storage:
            self._epoch = fence  # the refresh's: refused if the lock was taken again since (store.Fenced)
            self._save("storage", {node: outcome if outcome[0] else [] for node, outcome in storage.items()})
        for read, due in self._due.items():
            if self._monotonic() >= due and not self._stop.is_set():
                self.run(read)

    def run(self, read: str) -> None:
        """One read of every node of the snapshot now: an offline node is counted, not asked."""
        view = self._display.view
        nodes = nodes_of(view)
        if not nodes:  # no snapshot yet: look again soon
            self._due[read] = self._monotonic() + 5 * TICK
            return
        self._due[read] = self._monotonic() + self.intervals.get(read, 0) * (0.9 + 0.2 * self._rand())
        outcomes: dict = {n: ("offline", "the snapshot shows the node down: not asked") for n, up in nodes.items() if not up}
        try:
            self._epoch = self._current_epoch()  # a read without a batch (every node down) is fenced as well
            outcomes.update(getattr(self, f"_{read}")(view, [n for n, up in nodes.items() if up]))
        except NotLeader as exc:  # the fence: another replica leads, or may; what was read is dropped
            log.info("the %s read stopped: %s", read, exc)
            return
        self._save(read, outcomes)

    def _ask(self, calls: dict, calls_each: int = 1, node_of: Callable = lambda key: key) -> dict:
        """The calls, NODE_WORKERS at a time, each batch fenced like a refresh's read (NotLeader once this replica
        may no longer lead); a refresh never waits for a batch. Keys past MAX_READ_SECONDS are not asked, nor those
        of a batch whose fence is not the read's: the lock was lost and taken again since, the write will be refused."""
        answers, limit = {}, self._timeout * calls_each + 1
        end = self._monotonic() + MAX_READ_SECONDS
        for keys in batches(list(calls), node_of):
            batch = {key: calls[key] for key in keys}
            if self._monotonic() + limit > end:
                answers.update(dict.fromkeys(batch, TimeoutError(f"not asked: the read took its {MAX_READ_SECONDS:g} s")))
                continue
            with self._fence(limit) as epoch:
                if epoch != self._epoch:  # another leader may have read and stored meanwhile: ours is older
                    answers.update(dict.fromkeys(batch, Moved(epoch, self._epoch)))
                    continue
                answers.update(self._reader.read_nodes(batch, limit, node_of))
        return answers

    def _judge(self, answers: dict, parse: Callable) -> dict:
        """Each node's records, or (reason, error) when its answer failed or was not one."""
        outcomes = {}
        for node, answer in answers.items():
            try:
                if isinstance(answer, BaseException):
                    raise answer
                outcomes[node] = parse(node, answer)
            except Exception as exc:  # noqa: BLE001 - 403, 595, timeout, garbage: that node's figures stay
                outcomes[node] = (node_reason(exc), self._describe(exc))
        return outcomes

    def _pools(self, view: View, nodes: list[str]) -> dict:
        answers = self._ask({n: functools.partial(fetch_pools, node=n) for n in nodes}, calls_each=2)
        return self._judge(answers, lambda node, answer: [*parse_lvmthin(answer[0], node, list(view.rows)),
                                                          *parse_zfs(answer[1], node)])

    def _disks(self, view: View, nodes: list[str]) -> dict:
        answers = self._ask({n: functools.partial(fetch_disks, node=n) for n in nodes})
        return self._judge(answers, lambda node, answer: parse_disks(answer, node))

    def _provisioned(self, view: View, nodes: list[str]) -> dict:
        """Per node, the provisioned bytes of each of its thin-capable datastores the token can see.

        A datastore whose guests' volumes the token cannot see is not asked (its listing would read 0):
        the node's outcome is then a Partial (the others' figures) or, if none is visible, "forbidden".
        """
        by_node: dict[str, list[str]] = {}
        for datastore, node in provisioned_targets(list(view.rows), set(nodes)):
            by_node.setdefault(node, []).append(datastore)
        if not by_node:
            return {}
        permissions = self._ask({"token": fetch_permissions}, node_of=lambda key: None)["token"]
        try:
            if isinstance(permissions, BaseException):
                raise permissions
            hidden = {d for ds in by_node.values() for d in ds if not can_see_guest_disks(permissions, d)}
        except Exception as exc:  # noqa: BLE001 - without the token's privileges no figure can be trusted
            return dict.fromkeys(by_node, (node_reason(exc), self._describe(exc)))
        asked = {(n, d): functools.partial(fetch_content, node=n, datastore=d)
                 for n, ds in by_node.items() for d in ds if d not in hidden}
        answers: dict = {}
        for (node, datastore), answer in self._ask(asked, node_of=lambda key: key[0]).items():
            answers.setdefault(node, {})[datastore] = answer
        outcomes = self._judge(answers, _provisioned_of)
        for node, datastores in by_node.items():
            refused = sorted(hidden & set(datastores))
            if not refused:
                continue
            why = ("the token cannot see guests' volumes on " + ", ".join(map(quoted, refused))
                   + " (needs Datastore.Allocate, or Datastore.Audit with VM.Config.Disk on /vms)")
            got = outcomes.get(node)
            outcomes[node] = Partial(tuple(got), "forbidden", why) if isinstance(got, list) else got or ("forbidden", why)
        return outcomes

    def _describe(self, exc: BaseException) -> str:
        """A failure for the log and the answers: Proxmox's status and phrase, secrets masked, short."""
        return scrub(describe(exc), self._secrets)[:MAX_MESSAGE]

    def _save(self, read: str, outcomes: dict) -> None:
        """Store and publish one read's outcomes; a node that starts failing is a warning, once."""
        self._log(read, {n: (o.reason, o.error) if isinstance(o, Partial) else o for n, o in outcomes.items()
                         if isinstance(o, Partial) or isinstance(o, tuple) and o[0] != "offline"})
        keep = max(KEEP_INTERVALS * self.intervals.get(read, 0), MIN_KEEP)
        with self._display.publishing:
            try:
                generation, risk = self._store.save_node_reads(read, outcomes, self._clock(), keep, self._epoch)
            except Fenced as exc:  # another replica leads now: its reads are the ones to store
                log.warning("refused to store the %s read: %s", read, exc)
                self._display.publish(self._display.view, "fenced")
                return
            except StoreError as exc:
                log.warning("the %s read could not be stored: %r", read, exc)
                return
            self._display.publish(dataclasses.replace(self._display.view, risk=risk), "risk", generation)

    def _log(self, read: str, failed: dict) -> None:
        known = self._failing.setdefault(read, set())
        new = sorted(set(failed) - known)
        if new:
            shown = "; ".join(f"{quoted(n)}: {failed[n][0]}, {failed[n][1]}" for n in new[:5])
            log.warning("the %s read failed on %d node(s), which keep their last figures: %s%s", read, len(new),
                        shown, "; ..." if len(new) > 5 else "")
        self._failing[read] = set(failed)


def _provisioned_of(node: str, answer: dict) -> list:
    """A node's content answers as Provisioned records; the first failed datastore fails the node."""
    for value in answer.values():
        if isinstance(value, BaseException):
            raise value
    return [parse_content(payload, datastore, node) for datastore, payload in sorted(answer.items())]
