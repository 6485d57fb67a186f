"""The one importer of proxmoxer: fetch the two lists, then parse them with pure functions."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

import requests
import urllib3
from proxmoxer import AuthenticationError, ProxmoxAPI, ResourceException

from .config import Config, ConfigError, scrub
from .records import DatastoreRecord, NodeFigures

log = logging.getLogger(__name__)

MAX_MESSAGE = 500  # characters of a Proxmox error kept in answers and logs
MAX_BYTES = 2**63 - 1  # a size past this is no disk, and no database column takes it
MAX_STUCK = 2  # fetches left hanging on a dripping answer before refreshes fail at once
MAX_ID = 100  # the seed's VARCHAR(100); Proxmox sets no limit, but no real ID comes near it


class ProxmoxError(Exception):
    """A refresh could not read Proxmox; `reason` is one of records.FAILURE_REASONS."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


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
    """Two calls whatever the cluster's size; /cluster/resources never waits on a dead node."""
    return api.cluster.resources.get(type="storage"), api.storage.get()


def _flag(value) -> bool:
    # Third-party plugins send 0/1 as strings ("1"); int() takes both.
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
    # Comma lists arrive in random order; /storage says "none" and resources "" for empty.
    if not isinstance(value, str):
        return ""
    return ",".join(sorted(p for p in (s.strip() for s in value.split(",")) if p and p != "none"))


def _items(payload, what: str) -> list[dict]:
    # proxmoxer turns an unparsable body into {"errors": b"..."}, so the shape is checked here.
    if not isinstance(payload, list):
        raise ProxmoxError("parse", f"{what}: expected a list from Proxmox, got {type(payload).__name__}")
    items = [item for item in payload if isinstance(item, dict) and isinstance(item.get("storage"), str)]
    too_long = sorted({item["storage"] for item in items if len(item["storage"]) > MAX_ID})
    if too_long:
        log.warning("%s: skipping datastores with IDs over %d characters: %s", what, MAX_ID, ", ".join(too_long))
    return [item for item in items if len(item["storage"]) <= MAX_ID]


def parse_resources(payload) -> dict[str, dict]:
    """Group /cluster/resources?type=storage by datastore: per-node figures plus what it says of it."""
    found: dict[str, dict] = {}
    for item in _items(payload, "/cluster/resources"):
        if item.get("type", "storage") != "storage" or not isinstance(item.get("node"), str):
            continue
        entry = found.setdefault(item["storage"], {"nodes": {}, "shared": False, "type": "", "content": ""})
        entry["shared"] |= _flag(item.get("shared", 0))
        entry["type"] = entry["type"] or str(item.get("plugintype") or "")
        entry["content"] = entry["content"] or _content(item.get("content"))
        entry["nodes"][item["node"]] = _node_figures(item)
    return found


def _node_figures(item: dict) -> NodeFigures:
    # disk/maxdisk exist only while status is "available"; "unknown" is not an empty disk.
    if item.get("status") != "available" or "maxdisk" not in item or "disk" not in item:
        return NodeFigures(node=item["node"], active=False)
    try:
        size, used = _bytes(item["maxdisk"]), _bytes(item["disk"])
    except (TypeError, ValueError, OverflowError):  # OverflowError: a JSON 1e400 arrives as inf
        raise ProxmoxError("parse", f"/cluster/resources: sizes of {item['storage']!r} are not byte counts") from None
    return NodeFigures(node=item["node"], active=True, size=size, used=used, available=max(size - used, 0))


def parse_storage_config(payload) -> dict[str, dict]:
    """Read /storage: type, content, shared, disabled; disabled datastores appear only here."""
    return {
        item["storage"]: {
            "type": str(item.get("type") or ""),
            "content": _content(item.get("content")),
            "shared": _flag(item.get("shared", 0)),
            "enabled": not _flag(item.get("disable", 0)),
        }
        for item in _items(payload, "/storage")
    }


def build_records(resources: dict[str, dict], storage_config: dict[str, dict]) -> list[DatastoreRecord]:
    """Merge both lists into cluster-wide records: a shared datastore once, a local one summed."""
    records = []
    for datastore_id in sorted(set(resources) | set(storage_config)):
        seen = resources.get(datastore_id, {"nodes": {}, "shared": False, "type": "", "content": ""})
        conf = storage_config.get(datastore_id, {})
        nodes = tuple(seen["nodes"][name] for name in sorted(seen["nodes"]))
        shared = conf.get("shared", False) or seen["shared"]
        size, used = _cluster_figures(nodes, shared)
        records.append(DatastoreRecord(
            id=datastore_id, type=conf.get("type") or seen["type"] or "unknown",
            content=conf.get("content") or seen["content"], shared=shared,
            enabled=conf.get("enabled", True), size=size, used=used,
            available=max(size - used, 0), nodes=nodes,
        ))
    return records


def _cluster_figures(nodes: Iterable[NodeFigures], shared: bool) -> tuple[int, int]:
    active = [n for n in nodes if n.active]
    if not active:
        return 0, 0
    if shared:
        # Every node reports the same shared capacity: count it once, not once per node.
        return active[0].size, active[0].used
    size, used = sum(n.size for n in active), sum(n.used for n in active)
    if size > MAX_BYTES or used > MAX_BYTES:
        raise ProxmoxError("parse", "/cluster/resources: a datastore's total over its nodes is out of range")
    return size, used


def parse(resources_payload, storage_payload) -> list[DatastoreRecord]:
    """Both payloads to records."""
    return build_records(parse_resources(resources_payload), parse_storage_config(storage_payload))


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

    def read(self) -> list[DatastoreRecord]:
        """Fetch and parse; raise ProxmoxError with a reason and a message free of secrets."""
        with self._lock:
            self._stuck = [t for t in self._stuck if t.is_alive()]
            if len(self._stuck) >= MAX_STUCK:  # a tarpit must not collect our threads and sockets
                raise ProxmoxError("timeout", f"{len(self._stuck)} earlier calls to Proxmox are still not "
                                   "answered; not starting another")
            outcome: dict = {}
            worker = threading.Thread(target=self._fetch, args=(outcome,), name="proxmox-fetch", daemon=True)
            worker.start()
            worker.join(self.deadline)
            if worker.is_alive():
                self._stuck.append(worker)
                self._api = None  # the stuck thread keeps its session; the next refresh starts afresh
                raise ProxmoxError("timeout", f"Proxmox did not finish answering within {self.deadline} s")
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
            outcome["error"] = ProxmoxError(reason, self._clean(f"Proxmox API call failed: {exc}"))
        except ConfigError as exc:
            outcome["error"] = ProxmoxError("auth", str(exc))
        except OSError as exc:  # requests raises it for an unreadable PROXMOX_CA_BUNDLE
            outcome["error"] = ProxmoxError("connection", self._clean(f"cannot reach Proxmox: {exc}"))
        except Exception as exc:  # noqa: BLE001 - e.g. proxmoxer choking on an odd login answer
            outcome["error"] = ProxmoxError("parse", self._clean(f"unexpected answer from Proxmox: {exc!r}"))

    def _clean(self, message: str) -> str:
        """Secrets masked, and short: an error page's body must not fill the answers and the log."""
        message = scrub(message, self._config.secrets())
        return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + " [...]"
