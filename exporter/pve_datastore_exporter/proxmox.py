"""The one importer of proxmoxer: connect, each call the exporter makes, and what their failures mean.

reader.py makes the calls (the refresh's and the per-node reads'), bounded and timed, and hands the
answers to the pure functions of parse.py. The facts about the API relied on here are in
docs/proxmox-api.md; comments cite its sections.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable


def _import_requests():
    """requests without charset detection: charset_normalizer costs ~2.6 MB resident, and Proxmox's
    answers are UTF-8 JSON that proxmoxer decodes as such (docs/architecture.md#memory)."""
    if "requests" in sys.modules:  # imported before us (a test run): as it is
        return sys.modules["requests"]
    hidden = [name for name in ("charset_normalizer", "chardet") if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # its import raises ImportError: requests goes without detection
    try:
        with warnings.catch_warnings():  # requests says so once, as a warning at import
            warnings.filterwarnings("ignore", message="Unable to find acceptable character detection")
            import requests
    finally:
        for name in hidden:
            del sys.modules[name]
    return requests


requests = _import_requests()  # before proxmoxer, which imports it too

import urllib3  # noqa: E402 - after requests, above
from proxmoxer import AuthenticationError, ProxmoxAPI, ResourceException  # noqa: E402

from .calls import ProxmoxBusy  # noqa: E402
from .config import Config  # noqa: E402
from .parse import quoted  # noqa: E402
from .records import RefreshFailed  # noqa: E402

# What a call to Proxmox may raise, taken as the refresh's failure (classify says which).
CALL_ERRORS = (AuthenticationError, ResourceException, requests.exceptions.RequestException)


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


def fetch(api, before: Callable[[], None] = lambda: None) -> tuple[object, object]:
    """Two calls whatever the cluster's size; /cluster/resources never waits on a dead node.

    `before()` runs ahead of each call (it raises Abandoned once the read was given up).
    docs/proxmox-api.md#cluster-resources and #storage-configuration.
    """
    before()
    resources = api.cluster.resources.get(type="storage")
    before()
    return resources, api.storage.get()


def fetch_node_storage(api, node: str) -> object:
    """One node's live storage status, proxied to that node (docs/proxmox-api.md#node-storage)."""
    return api.nodes(node).storage.get()


def fetch_cluster_status(api) -> object:
    """The cluster's name and members; 403 without Sys.Audit on / (docs/proxmox-api.md#cluster-status)."""
    return api.cluster.status.get()


def fetch_pools(api, node: str) -> tuple[object, object]:
    """A node's thin pools and zpools (docs/proxmox-api.md#thin-pools, #zfs-pools): one call after the other."""
    thin = api.nodes(node).disks.lvmthin.get()
    try:
        zfs = api.nodes(node).disks.zfs.get()
    except ResourceException as exc:  # a node without zfsutils answers 500 "zfsutils-linux not installed"
        if exc.status_code != 500 or "not installed" not in str(exc.content):
            raise
        zfs = []
    return thin, zfs


def fetch_disks(api, node: str) -> object:
    """A node's disks with SMART health and wear-out: one smartctl per disk on the node (docs/proxmox-api.md#disks)."""
    return api.nodes(node).disks("list").get()


def fetch_permissions(api) -> object:
    """The token's own privileges by ACL path; any token may read its own (docs/proxmox-api.md#content-filter)."""
    return api.access.permissions.get()


def fetch_content(api, node: str, datastore: str) -> object:
    """The volumes of a datastore on `node`; the cost of `lvs`, `zfs list` or `qemu-img info` per image, twice
    (docs/proxmox-api.md#content)."""
    return api.nodes(node).storage(datastore).content.get()


def node_reason(exc: BaseException) -> str:
    """A per-node call's failure as one of records.NODE_READ_REASONS."""
    if isinstance(exc, ProxmoxBusy):
        return "busy"
    if isinstance(exc, ResourceException) and exc.status_code == 403:
        return "forbidden"  # the token lacks the privilege (Sys.Audit on /): checked before the node is asked
    if isinstance(exc, TimeoutError | requests.exceptions.Timeout):
        return "timeout"
    if isinstance(exc, ValueError | RefreshFailed | TypeError | KeyError):
        return "parse"  # requests' JSON errors are ValueErrors too
    return classify(exc)


def fallback_name(config: Config) -> str:
    """The `pve_cluster` of a cluster whose name was never read: PROXMOX_HOST without its port."""
    host = config.proxmox_host
    if host.startswith("["):  # [v6]:port
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


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


def describe(exc: BaseException) -> str:
    """An extra call's failure for a log line: Proxmox's status and phrase, or the error, escaped."""
    if isinstance(exc, ResourceException):  # the phrase is Proxmox's message (docs/proxmox-api.md#errors)
        return f"{exc.status_code} {quoted(str(exc.content))}"
    return f"{type(exc).__name__}: {quoted(str(exc))}"
