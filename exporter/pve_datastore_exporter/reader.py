"""The reads of one cluster: the refresh's two lists (and, beside them, the cluster's name and each node's
own `avail`), and the per-node reads' calls, on bounded threads, within their deadlines.

Every call goes through proxmox.py (the one importer of proxmoxer); every answer, to parse.py.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable

from .calls import Abandoned, Shared, Threads, gather
from .config import Config, ConfigError, scrub
from .parse import online_nodes, parse, parse_cluster_name, parse_node_storage, quoted, with_exact_available
from .proxmox import CALL_ERRORS, classify, connect, describe, fallback_name, fetch, fetch_cluster_status, fetch_node_storage, node_reason
from .records import Datastore, RefreshFailed

log = logging.getLogger(__name__)

MAX_STUCK = 2  # fetches left hanging on a dripping answer before refreshes fail at once (a calls.Threads limit)
NODE_WORKERS = 4  # threads of a per-node read: each asks one node at a time (pvedaemon has 3 workers per node)
NAME_EVERY = 3600.0  # seconds between reads of the cluster's name: it changes only when an admin renames the cluster
WORKERS = 8  # threads of the extra round: under the 10 connections requests keeps per host (calls.Threads: 12 in all)
NAME = ("name",)  # the extra round's key of /cluster/status; a node's is ("node", name)


class Reader:
    """Reads the datastores of one cluster; keeps one client (and its ticket) between refreshes.

    `cluster` is the cluster's name: PROXMOX_CLUSTER_NAME, else the last one /cluster/status gave
    (read at the first refresh, then every NAME_EVERY seconds), else PROXMOX_HOST's host.
    """

    def __init__(self, config: Config, connect: Callable[[Config], object] = connect,
                 clock: Callable[[], float] = time.monotonic):
        self._config = config
        self._connect = connect
        self._clock = clock
        self._api = Shared()  # the client, logged in once for the refresh and the per-node reads
        self._lock = threading.Lock()
        self._fetches = Threads(MAX_STUCK)  # the refresh's fetch threads: the one under way, and those left hanging
        self.threads = Threads()  # the extra round's and the per-node reads' calls, bounded together
        self.deadline = config.refresh_deadline
        self.cluster = config.proxmox_cluster_name or fallback_name(config)
        self._name_asked: float | None = None  # when /cluster/status was last asked
        self._name_read = self._name_failing = False
        self._failing_nodes: set[str] = set()  # nodes whose avail could not be read last time
        self._outcomes: dict[str, tuple[str | None, str | None]] = {}  # per-node storage reads not yet stored
        self._outcomes_fence: int | None = None  # the epoch those reads were made under: their write carries it
        self._outcomes_lock = threading.Lock()

    def known(self) -> str:
        """The name a failed refresh may store: PROXMOX_CLUSTER_NAME or one /cluster/status gave, "" for the stand-in."""
        return self.cluster if self._config.proxmox_cluster_name or self._name_read else ""

    def name(self, stored: str = "") -> str:
        """The cluster's name to show: PROXMOX_CLUSTER_NAME, else `stored` (what the replica that read it stored), else ours."""
        return self._config.proxmox_cluster_name or stored or self.cluster

    def label(self, stored: str) -> str | None:
        """The name a refresh stores over `stored` (the database's); None when `stored` is another cluster's.

        Our name unread (no Sys.Audit), `stored` stands: nothing contradicts it. A stored stand-in
        (PROXMOX_HOST's host, stored before the name was read) gives way to the name read.
        """
        if not stored or stored == self.cluster or stored == fallback_name(self._config):
            return self.cluster
        return None if self.known() else stored

    def read(self, fence: int | None = None) -> list[Datastore]:
        """Fetch and parse; raise RefreshFailed with a reason and a message free of secrets.

        `fence`: the epoch the read is made under (Coordinator.reading), kept with its per-node storage outcomes.
        """
        with self._lock:
            # A fetch that ended gave its thread back before join() returned: what is live is left hanging.
            if not self._fetches.take(1):  # a tarpit must not collect our threads and sockets
                raise RefreshFailed("timeout", f"{self._fetches.live} earlier calls to Proxmox are still not "
                                   "answered; not starting another")
            outcome, abandoned = {}, threading.Event()
            worker = threading.Thread(target=self._fetch, args=(outcome, abandoned), name="proxmox-fetch", daemon=True)
            worker.start()
            worker.join(self.deadline)
            if worker.is_alive():
                abandoned.set()  # the call under way may still end; no further one starts (outside the fence)
                self._api.forget()  # the stuck thread keeps its session; the next refresh starts afresh
                raise RefreshFailed("timeout", f"Proxmox did not finish answering within {self.deadline} s")
            if "error" in outcome:
                raise outcome["error"]
            self._take_name(outcome["extras"].pop(NAME, None))  # before parsing: a bad list costs no name
            return self._take_avail(parse(*outcome["payloads"]), outcome["extras"], fence)

    def read_nodes(self, calls: dict, limit: float, node_of: Callable[[object], str | None] = lambda key: None) -> dict:
        """Per-node calls (key -> call(api)) on at most NODE_WORKERS threads, bounded with the refresh's: what each gave.

        `node_of(key)` names the node a call goes to: none goes to a node another call is still with. A login
        still to make is made on those threads, within `limit` (a hanging ticket request times the calls out).
        """
        return gather({key: functools.partial(self._logged_in, call) for key, call in calls.items()}, limit,
                      NODE_WORKERS, self.threads, node_of=node_of)

    def _logged_in(self, call: Callable[[object], object]) -> object:
        return call(self._client())

    def _client(self, before: Callable[[], None] = lambda: None):
        """The client, logged in once (a password login is a call): whoever comes during a login waits for it and
        shares its client, or its failure; never two logins at once. ConfigError when the settings cannot log in."""
        if self._api.value is None:  # a login to make, or to wait for
            self._config.check_proxmox()
            before()  # a login is a call: a read given up makes none
        return self._api.get(functools.partial(self._connect, self._config))

    def storage_outcomes(self) -> tuple[int | None, dict[str, tuple[str | None, str | None]]]:
        """The last refresh's per-node storage reads (EXPORTER_EXACT_AVAILABLE), taken once: the epoch they were read
        under, and node -> (reason, error)."""
        with self._outcomes_lock:
            taken, self._outcomes = self._outcomes, {}
            return self._outcomes_fence, taken

    def _fetch(self, outcome: dict, abandoned: threading.Event) -> None:
        def before() -> None:
            if abandoned.is_set():
                raise Abandoned

        try:
            api = self._client(before)
            outcome["payloads"] = fetch(api, before)
            before()
            outcome["extras"] = gather(self._extra_calls(api, outcome["payloads"][0]),
                                       self._config.proxmox_timeout, WORKERS, self.threads, abandoned,
                                       node_of=lambda key: key[1] if key != NAME else None)
        except Abandoned:
            log.debug("a read given up at its deadline made no further call")
        except CALL_ERRORS as exc:
            reason = classify(exc)
            if reason == "auth":
                self._api.forget()  # log in again next time: a ticket may have expired or been revoked
            outcome["error"] = RefreshFailed(reason, self._clean(f"Proxmox API call failed: {exc}"))
        except ConfigError as exc:
            outcome["error"] = RefreshFailed("auth", str(exc))
        except OSError as exc:  # requests raises it for an unreadable PROXMOX_CA_BUNDLE
            outcome["error"] = RefreshFailed("connection", self._clean(f"cannot reach Proxmox: {exc}"))
        except Exception as exc:  # noqa: BLE001 - e.g. proxmoxer choking on an odd login answer
            outcome["error"] = RefreshFailed("parse", self._clean(f"unexpected answer from Proxmox: {exc!r}"))
        finally:
            self._fetches.give()

    def _extra_calls(self, api, resources) -> dict:
        """After the two lists, all at once: the cluster's name when due, each online node's storage if asked for."""
        calls = {}
        if not self._config.proxmox_cluster_name and (
                self._name_asked is None or self._clock() - self._name_asked >= NAME_EVERY):
            self._name_asked = self._clock()
            calls[NAME] = functools.partial(fetch_cluster_status, api)
        if self._config.exact_available:  # one call per node, only to nodes that are up
            calls.update({("node", n): functools.partial(fetch_node_storage, api, n) for n in online_nodes(resources)})
        return calls

    def _take_avail(self, datastores: list[Datastore], extras: dict, fence: int | None) -> list[Datastore]:
        """The nodes' answers taken in: a failed call costs that node's exact figures, never the refresh."""
        avail, failed, outcomes = {}, {}, {}
        for (_, node), answer in extras.items():
            try:
                if isinstance(answer, BaseException):
                    raise answer
                avail[node] = parse_node_storage(answer, node)
                outcomes[node] = (None, None)
            except Exception as exc:  # noqa: BLE001 - 595, timeout, 5xx, garbage: the node keeps its figures
                failed[node] = self._clean(describe(exc))
                outcomes[node] = (node_reason(exc), failed[node])
        with self._outcomes_lock:
            if fence != self._outcomes_fence:  # those of an earlier lock would be stored under this one's epoch
                self._outcomes, self._outcomes_fence = {}, fence
            self._outcomes.update(outcomes)
        self._log_nodes(failed, set(avail))
        return with_exact_available(datastores, avail) if avail else datastores

    def _take_name(self, answer) -> None:
        """/cluster/status's answer (None: not asked this time) taken in: a failure keeps the name there is."""
        if answer is None:
            return
        name = None if isinstance(answer, BaseException) else parse_cluster_name(answer)
        if name:
            if name != self.cluster:
                log.info("the cluster's name is %s (from /cluster/status)", quoted(name))
            self.cluster, self._name_read, self._name_failing = name, True, False
            return
        if not self._name_failing:  # once per failing streak: a missing Sys.Audit fails every hour
            why = self._clean(describe(answer)) if isinstance(answer, BaseException) else "no cluster or local node in it"
            log.warning("cannot read the cluster's name from /cluster/status (%s); pve_cluster stays %s, %s; "
                        "grant Sys.Audit on / or set PROXMOX_CLUSTER_NAME", why, quoted(self.cluster),
                        "the last name read" if self._name_read else "PROXMOX_HOST's host")
        self._name_failing = True

    def _log_nodes(self, failed: dict[str, str], answered: set[str]) -> None:
        """A node that starts failing is a warning, once; one that answers again, a line of info."""
        new = {node: why for node, why in failed.items() if node not in self._failing_nodes}
        if new:
            shown = "; ".join(f"{quoted(node)}: {why}" for node, why in list(new.items())[:5])
            log.warning("EXPORTER_EXACT_AVAILABLE: no avail from %d node(s), which keep size - used from "
                        "/cluster/resources: %s%s", len(new), shown, "; ..." if len(new) > 5 else "")
        back = sorted(self._failing_nodes & answered)
        if back:
            log.info("EXPORTER_EXACT_AVAILABLE: avail from %s again", ", ".join(map(quoted, back)))
        self._failing_nodes = set(failed)  # a node not asked (down) is warned of anew when it fails again

    def _clean(self, message: str) -> str:
        """Secrets masked (before RefreshFailed cuts the message short)."""
        return scrub(message, self._config.secrets())
