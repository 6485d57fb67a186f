"""What pveproxy does with one API request: faults, routing, auth, the proxy check, the answer.

Facts about the real API are in docs/proxmox-api.md; the comments name the ones they rely on.
"""

from __future__ import annotations

import http.client
import threading
import time
from urllib.parse import parse_qsl, urlsplit

from .api import PveApi
from .auth import AUTH_FAILED
from .faults import Faults
from .model import SimError
from .routes import PveApiError, resolve
from .server import Reply, Stats, Stopped, json_reply

API_PREFIX = "/api2/json"


class _Bare(Exception):
    """An error pve sends with an empty body: 401 from the auth handler, 595 (docs/proxmox-api.md#status-codes)."""

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status, self.reason = status, reason


def _error_reply(exc):
    """pve's error: message's first line in the status line, {"data":null,...} body."""
    message = exc.message if exc.message.endswith("\n") else exc.message + "\n"
    body = {"data": None, "message": message}
    if exc.errors:
        body["errors"] = exc.errors
    return json_reply(body, exc.status, exc.message.split("\n", 1)[0])


# -- the proxy -----------------------------------------------------------------------------


class PveProxy:
    """pveproxy's side of the simulator: one API request in, one Reply out; faults switched live."""

    def __init__(self, cluster, auth, auth_delay=3.0, latency_ms=0.0):
        self.cluster = cluster
        self._api = PveApi(cluster)
        self._auth = auth
        self.auth_delay = auth_delay  # pve delays every 401 by about 3 s (docs/proxmox-api.md#status-codes)
        self._stats = Stats()
        self._faults = Faults(latency_ms=float(latency_ms))
        self._faults_lock = threading.Lock()
        self._release = threading.Event()  # set when a hang ends
        self._fault_offline = set()  # nodes offline because of the offline_nodes fault
        self._stopping = threading.Event()  # set on stop: every wait ends and raises Stopped

    # -- lifecycle -------------------------------------------------------------------------

    def start(self):
        """Let requests wait again after stop(); a hang fault still set holds new requests anew."""
        with self._faults_lock:
            self._stopping.clear()
            self._release = threading.Event()

    def stop(self):
        """End every wait now: requests that hang or are delayed raise Stopped, drips end."""
        with self._faults_lock:
            self._stopping.set()
            self._release.set()

    # -- counters and faults (for tests, demo, bench and the /_sim/ endpoints) ---------------

    def stats(self):
        """{"requests": N, "by_path": {path: N}} since start or the last reset."""
        return self._stats.snapshot()

    @property
    def request_count(self):
        """API requests served since start or the last reset."""
        return self._stats.snapshot()["requests"]

    @property
    def requests_by_path(self):
        """{path: count} of API requests (no query string)."""
        return self._stats.snapshot()["by_path"]

    def request_log(self):
        """[(path, start, end)] of the API requests since start or the last reset, time.monotonic() seconds."""
        return self._stats.timeline()

    def reset_stats(self):
        """Zero the request counters."""
        self._stats.reset()

    @property
    def faults(self):
        """The faults in force, as a JSON-ready dict."""
        return self._faults.as_json()

    def set_faults(self, **changes):
        """Switch faults on or change them (see Faults); the others stay as they are."""
        with self._faults_lock:
            old, new = self._faults, self._faults.changed(**changes)
            for name in new.offline_nodes:
                if self.cluster.node_state(name) is None:
                    raise SimError(f"no such node '{name}'")
            if new.hang and not old.hang:
                self._release = threading.Event()
            if old.hang and not new.hang:
                self._release.set()
            self._faults = new
            self._apply_offline(set(new.offline_nodes))
        return self.faults

    def clear_faults(self):
        """Switch every fault off (hanging requests go on, fault-offline nodes come back)."""
        with self._faults_lock:
            self._release.set()
            self._faults = Faults()
            self._apply_offline(set())

    def _apply_offline(self, wanted):
        """Bring the model's nodes in line with the offline_nodes fault."""
        for name in self._fault_offline - wanted:
            self.cluster.set_node_online(name, True)
        for name in wanted - self._fault_offline:
            self.cluster.set_node_online(name, False)
        self._fault_offline = wanted

    # -- one request -------------------------------------------------------------------------

    def handle(self, method, target, headers, body):
        """The Reply to one API request (counted, faulted, authenticated), logged with its start and end."""
        start = time.monotonic()
        try:
            return self._handle(method, target, headers, body, start)
        finally:
            self._stats.served(urlsplit(target).path, start, time.monotonic())

    def _handle(self, method, target, headers, body, start):
        url = urlsplit(target)
        self._stats.count(url.path)
        faults = self._faults_for(url.path)
        self._wait(faults.latency_ms / 1000)
        if faults.hang:
            self._wait(faults.hang_seconds, self._release)
            faults = self._faults_for(url.path)
        try:
            data = self._answer(method, url, headers, body, faults, start)
        except PveApiError as exc:
            return _error_reply(exc)
        except _Bare as exc:
            return Reply(exc.status, exc.reason)
        reply = json_reply({"data": faults.rewrite(data)})
        if faults.malformed:  # any strict prefix of a JSON object is invalid JSON
            return reply._replace(body=reply.body[: len(reply.body) // 2], gzip_ok=False)
        if faults.drip:
            return reply._replace(gzip_ok=False, drip=self._stopping)
        return reply

    def _faults_for(self, path):
        """The faults that apply to this request (none when `path` does not match)."""
        faults = self._faults
        return faults if faults.applies(path) else Faults()

    def _answer(self, method, url, headers, body, faults, start):
        """Route, fault, authenticate, proxy-check, answer: in pveproxy's order."""
        if not url.path.startswith(API_PREFIX + "/"):
            raise PveApiError(501, f"Method '{method} {url.path}' not implemented")
        call = resolve(method, url.path[len(API_PREFIX):].rstrip("/") or "/")
        if faults.status:
            raise PveApiError(faults.status, faults.reason or http.client.responses.get(faults.status, "Error"))
        if call.name is None:
            return self._login(headers, body, faults, start)
        reason = AUTH_FAILED if faults.auth_fail else self._auth.check(headers)
        if reason:
            self._wait(self.auth_delay - (time.monotonic() - start))
            raise _Bare(401, reason)
        if call.node:
            self._proxy_check(call.node, faults)
            self._smartctl(call)
        return self._api.answer(call, dict(parse_qsl(url.query, keep_blank_values=True)))

    def _proxy_check(self, node, faults):
        """pveproxy forwards /nodes/{node}/... to that node: unknown -> 500, down -> 595 (docs/proxmox-api.md#595-and-596)."""
        state = self.cluster.node_state(node)
        if state is None:
            raise PveApiError(500, f"hostname lookup '{node}' failed - failed to get address info for: "
                                f"{node}: Name or service not known")
        if state == "offline":
            self._wait(faults.offline_delay_ms / 1000)
            raise _Bare(595, "No route to host")

    def _smartctl(self, call):
        """disks/list runs smartctl per disk: a hung one stalls PVE 8 past pveproxy's cut (596), PVE 9 for its timeout.

        docs/proxmox-api.md#disks.
        """
        if call.name != "disks_list":
            return
        under = self.cluster.underneath
        with self.cluster.lock:
            node = self.cluster.local_name() if call.node == "localhost" else call.node
            hanging = bool(under.nodes.get(node) and under.nodes[node].hanging)
        if not hanging:
            return
        if under.pve_major == 8:
            self._wait(under.proxy_cut)
            raise _Bare(596, "Connection timed out")
        self._wait(under.smart_timeout)  # then that disk reads UNKNOWN

    def _login(self, headers, body, faults, start):
        """POST /access/ticket: a ticket for the password, or 401 after the auth delay."""
        if headers.get("Authorization", "").startswith("PVEAPIToken"):
            raise PveApiError(403, "Permission check failed (URI '/access/ticket' not available with API "
                                "token, need proper ticket.\n)")
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        missing = {key: "property is missing and it is not optional"
                   for key in ("username", "password") if key not in form}
        if missing:
            raise PveApiError(400, "Parameter verification failed.", missing)
        data = None if faults.auth_fail else self._auth.login(form)
        if data is None:
            self._wait(self.auth_delay - (time.monotonic() - start))
            raise PveApiError(401, "authentication failure")
        if len(self.cluster.nodes) > 1:
            data["clustername"] = self.cluster.name
        return data

    def _wait(self, seconds, until=None):
        """Sleep (None = until `until` is set); raise Stopped when the simulator stops."""
        if seconds is not None and seconds <= 0:
            return
        event = until or self._stopping
        event.wait(seconds)
        if self._stopping.is_set():
            raise Stopped
