"""The one importer of proxmoxer: fetch the two lists, then parse them with pure functions.

The facts about the API relied on here are in docs/proxmox-api.md; comments cite its sections.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from collections.abc import Callable, Iterable

import requests
import urllib3
from proxmoxer import AuthenticationError, ProxmoxAPI, ResourceException

from .config import Config, ConfigError, scrub
from .records import Datastore, NodeFigures, RefreshFailed

log = logging.getLogger(__name__)

MAX_BYTES = 2**63 - 1  # a size past this is no disk, and no database column takes it
MAX_STUCK = 2  # fetches left hanging on a dripping answer before refreshes fail at once
TYPE_WIDTH = next(f.metadata["column"]["max_length"] for f in dataclasses.fields(Datastore) if f.name == "type")
# The longest text kept from a field, declared once: its column's width (the seed's VARCHAR(100) for IDs
# and node names, Datastore.type's for types), 100 for a content list (all types together are ~50). No
# real value comes near one: an entry past one is left out, and logged (docs/proxmox-api.md#text-from-proxmox).
MAX_TEXT = {"storage": 100, "node": 100, "type": TYPE_WIDTH, "plugintype": TYPE_WIDTH, "content": 100}
INVALID_TEXT = re.compile("[\x00\ud800-\udfff]")  # a lone surrogate fits no UTF-8 output, NUL no PostgreSQL text


def connect(config: Config) -> ProxmoxAPI:
    """Build the API client: token first, password otherwise, TLS verified unless told not to."""
    # PROXMOX_VERIFY_SSL=false wins over a CA bundle: the operator said not to verify.
    verify: bool | str = (config.proxmox_ca_bundle or True) if config.proxmox_verify_ssl else False
    if verify is False:
        # Start-up already warned once; urllib3 would repeat it on every request of every refresh.
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    auth = ({"token_name": config.proxmox_token_name, "token_value": config.proxmox_token_value}
            if config.proxmox_token_name else {"password": config.proxmox_password})
    # An inline port in PROXMOX_HOST wins over `port`, as proxmoxer does it.
    return ProxmoxAPI(config.proxmox_host, port=config.proxmox_port, user=config.proxmox_user,
                      verify_ssl=verify, timeout=config.proxmox_timeout, **auth)


def fetch(api) -> tuple[object, object]:
    """Two calls whatever the cluster's size; /cluster/resources never waits on a dead node.

    docs/proxmox-api.md#cluster-resources and #storage-configuration.
    """
    return api.cluster.resources.get(type="storage"), api.storage.get()


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


def _quoted(value: str, limit: int = 120) -> str:
    """A value from Proxmox for a message or a log line: repr'd (escaped, one line) and cut short."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}... ({len(value)} characters)"


def _items(payload, what: str) -> list[dict]:
    # proxmoxer turns an unparsable body into {"errors": b"..."}, so the shape is checked here.
    if not isinstance(payload, list):
        raise RefreshFailed("parse", f"{what}: expected a list from Proxmox, got {type(payload).__name__}")
    items = [item for item in payload if isinstance(item, dict) and isinstance(item.get("storage"), str)]
    # Any string of an entry, read today or not: a JSON "\ud800" escape decodes to a lone surrogate.
    invalid = next(((k, v) for i in items for k, v in i.items() if isinstance(v, str) and INVALID_TEXT.search(v)), None)
    if invalid:
        raise RefreshFailed("parse", f"{what}: the {_quoted(str(invalid[0]))} of an entry is not valid text "
                            f"(a lone surrogate or NUL): {_quoted(invalid[1])}")
    too_long = [(item, field) for item in items if (field := _too_long(item))]
    if too_long:
        shown = "; ".join(f"{field} over {MAX_TEXT[field]} characters: {_quoted(item[field])}"
                          for item, field in too_long[:5]) + ("; ..." if len(too_long) > 5 else "")
        log.warning("%s: left out %d entries with text no real cluster sends: %s", what, len(too_long), shown)
    return [item for item in items if not _too_long(item)]


def _too_long(item: dict) -> str | None:
    """The first field of `item` longer than MAX_TEXT allows, or None."""
    return next((k for k, limit in MAX_TEXT.items() if len(_text(item.get(k))) > limit), None)


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
        return NodeFigures(node=item["node"], active=False)
    try:
        size, used = _bytes(item["maxdisk"]), _bytes(item["disk"])
    except (TypeError, ValueError, OverflowError):  # OverflowError: a JSON 1e400 arrives as inf
        raise RefreshFailed("parse", f"/cluster/resources: sizes of {item['storage']!r} are not byte counts") from None
    return NodeFigures(node=item["node"], size=size, used=used, available=max(size - used, 0), active=True)


def parse_storage_config(payload) -> dict[str, Datastore]:
    """Read /storage: type, content, shared, disabled; disabled datastores appear only here.

    docs/proxmox-api.md#disabled-only-in-storage.
    """
    return {
        item["storage"]: Datastore(
            # type "" when absent: build_datastores then takes the nodes' plugintype.
            id=item["storage"], type=_text(item.get("type")), content=_content(item.get("content")),
            shared=_flag(item.get("shared", 0)), enabled=not _flag(item.get("disable", 0)))
        for item in _items(payload, "/storage")
    }


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


def classify(exc: BaseException) -> str:
    """Map an exception from proxmoxer/requests to a failure reason."""
    if isinstance(exc, AuthenticationError):
        return "auth"
    if isinstance(exc, ResourceException):
        if exc.status_code in (401, 403):
            return "auth"
        return "http_5xx" if exc.status_code >= 500 else "http_4xx"
    if isinstance(exc, requests.exceptions.Timeout):
        return "timeout"
    return "connection"


class Reader:
    """Reads the datastores of one cluster; keeps one client (and its ticket) between refreshes."""

    def __init__(self, config: Config, connect: Callable[[Config], object] = connect):
        self._config = config
        self._connect = connect
        self._api = None
        self._lock = threading.Lock()
        self._stuck: list[threading.Thread] = []
        self.deadline = config.refresh_deadline

    def read(self) -> list[Datastore]:
        """Fetch and parse; raise RefreshFailed with a reason and a message free of secrets."""
        with self._lock:
            self._stuck = [t for t in self._stuck if t.is_alive()]
            if len(self._stuck) >= MAX_STUCK:  # a tarpit must not collect our threads and sockets
                raise RefreshFailed("timeout", f"{len(self._stuck)} earlier calls to Proxmox are still not "
                                   "answered; not starting another")
            outcome: dict = {}
            worker = threading.Thread(target=self._fetch, args=(outcome,), name="proxmox-fetch", daemon=True)
            worker.start()
            worker.join(self.deadline)
            if worker.is_alive():
                self._stuck.append(worker)
                self._api = None  # the stuck thread keeps its session; the next refresh starts afresh
                raise RefreshFailed("timeout", f"Proxmox did not finish answering within {self.deadline} s")
            if "error" in outcome:
                raise outcome["error"]
            return parse(*outcome["payloads"])

    def _fetch(self, outcome: dict) -> None:
        try:
            if self._api is None:
                self._config.check_proxmox()
                self._api = self._connect(self._config)
            outcome["payloads"] = fetch(self._api)
        except (AuthenticationError, ResourceException, requests.exceptions.RequestException) as exc:
            reason = classify(exc)
            if reason == "auth":
                self._api = None  # log in again next time: a ticket may have expired or been revoked
            outcome["error"] = RefreshFailed(reason, self._clean(f"Proxmox API call failed: {exc}"))
        except ConfigError as exc:
            outcome["error"] = RefreshFailed("auth", str(exc))
        except OSError as exc:  # requests raises it for an unreadable PROXMOX_CA_BUNDLE
            outcome["error"] = RefreshFailed("connection", self._clean(f"cannot reach Proxmox: {exc}"))
        except Exception as exc:  # noqa: BLE001 - e.g. proxmoxer choking on an odd login answer
            outcome["error"] = RefreshFailed("parse", self._clean(f"unexpected answer from Proxmox: {exc!r}"))

    def _clean(self, message: str) -> str:
        """Secrets masked (before RefreshFailed cuts the message short)."""
        return scrub(message, self._config.secrets())
