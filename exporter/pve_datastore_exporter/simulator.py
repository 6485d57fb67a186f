"""The simulated Proxmox VE API: HTTPS, auth, faults and counters around the model in simcluster.

Used by `pve-datastore-exporter simulate`, the demo, the tests and the benchmarks. Facts about
the real API are in /work/shared/pve-api.md; the comments name the ones they rely on.

Control endpoints (no auth, not counted, JSON in and out, 400 {"error": ...} on bad input):
  GET  /_sim/stats    -> {"requests": N, "by_path": {"/api2/json/...": N}}
  POST /_sim/reset    -> zero the counters
  GET  /_sim/faults   -> the faults in force
  POST /_sim/faults   {"latency_ms": 200, "status": 503, "reason": "...", "path": "regex",
                       "auth_fail": true, "offline_nodes": ["pve2"], "offline_delay_ms": 0,
                       "hang": true, "hang_seconds": null, "malformed": true, "clear": true}
                      merged into the faults in force ("clear" first switches all off)
  POST /_sim/cluster  {"op": "set_usage", "datastore": "local", "node": "pve1", "used": 123}
                      or a list of ops; op is a Cluster method: set_usage, set_rate,
                      set_node_online, set_active, disable, enable, vanish, add, set_string_bools
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import hmac
import http.client
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

from .simcluster import ApiError, Cluster, PveApi, SimError, resolve

LOG = logging.getLogger(__name__)
API_PREFIX = "/api2/json"
JSON_TYPE = "application/json;charset=UTF-8"
AUTH_FAILED = "Authentication failed!"  # pve-manager >= 9.1.5 no longer says why
MAX_BODY = 1 << 20
_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)
CLUSTER_OPS = frozenset({"set_usage", "set_rate", "set_node_online", "set_active", "disable",
                         "enable", "vanish", "add", "set_string_bools"})


# -- certificates --------------------------------------------------------------------------


class CertPaths(NamedTuple):
    """Where the throw-away CA and the server certificate live."""

    ca: Path
    cert: Path
    key: Path


def ensure_certificates(state_dir):
    """CA + server certificate (SAN IP:127.0.0.1, DNS:localhost) in state_dir, made once."""
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    paths = CertPaths(state / "ca.pem", state / "server.pem", state / "server.key")
    with open(state / ".certs.lock", "w") as lock:  # parallel simulators may share a state_dir
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _certificates_valid(paths):
            _make_certificates(paths)
    return paths


def _openssl(*args, cwd=None):
    """Run the openssl command line; True when it exits 0."""
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    return done.returncode == 0, done.stdout


def _certificates_valid(paths):
    """All three files exist, chain to the CA, stay valid a day, name 127.0.0.1, and match."""
    if not all(p.is_file() for p in paths):
        return False
    verified, _ = _openssl("verify", "-CAfile", str(paths.ca), str(paths.cert))
    fresh, _ = _openssl("x509", "-checkend", "86400", "-noout", "-in", str(paths.cert))
    named, san = _openssl("x509", "-noout", "-ext", "subjectAltName", "-in", str(paths.cert))
    if not (verified and fresh and named and "127.0.0.1" in san and "DNS:localhost" in san):
        return False
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(paths.cert, paths.key)
    except (ssl.SSLError, OSError):
        return False
    return True


def _make_certificates(paths):
    """A fresh EC CA and a server certificate signed by it; the CA key is thrown away."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    with tempfile.TemporaryDirectory(dir=paths.ca.parent) as tmp:
        Path(tmp, "server.ext").write_text(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
        steps = [
            ("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "3650",
             "-subj", "/CN=pve-datastore-exporter simulator CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"),
            ("req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"),
            ("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-days", "825",
             "-set_serial", str(random.getrandbits(63)), "-extfile", "server.ext", "-out", "server.pem"),
        ]
        for step in steps:
            done = subprocess.run(["openssl", *step], cwd=tmp, capture_output=True, text=True, check=False)
            if done.returncode:
                raise RuntimeError(f"openssl {step[0]} failed: {done.stderr.strip()}")
        os.chmod(Path(tmp, "server.key"), 0o600)
        for name, target in zip(("ca.pem", "server.pem", "server.key"), paths, strict=True):
            os.replace(Path(tmp, name), target)


# -- faults, auth, counters ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Faults:
    """Faults switched on while running; each request works on one snapshot."""

    latency_ms: float = 0.0  # added to every API request
    status: int | None = None  # answer this HTTP status instead (e.g. 500, 503)
    reason: str | None = None  # its reason phrase (default: the standard one)
    path: str | None = None  # regex searched in the request path: the faults apply only there
    auth_fail: bool = False  # every token, ticket and password is refused
    offline_nodes: tuple = ()  # nodes taken offline while this fault is set
    offline_delay_ms: float = 0.0  # how long the 595 of an offline node takes
    hang: bool = False  # requests wait until the fault is cleared (or hang_seconds)
    hang_seconds: float | None = None
    malformed: bool = False  # 200 with a truncated, invalid JSON body

    def applies(self, path):
        """Whether these faults apply to a request for `path`."""
        return self.path is None or re.search(self.path, path) is not None


_NULLABLE = frozenset({"status", "reason", "path", "hang_seconds"})


def _fault_value(key, value):
    """Check and coerce one fault setting from Python or JSON, or raise SimError."""
    fields = {f.name: f for f in dataclasses.fields(Faults)}
    if key not in fields:
        raise SimError(f"unknown fault '{key}' (known: {', '.join(fields)})")
    if value is None and key in _NULLABLE:
        return None
    try:
        if key == "offline_nodes":
            return tuple(str(n) for n in ([value] if isinstance(value, str) else value))
        if key in ("auth_fail", "hang", "malformed"):
            return bool(value)
        if key == "status" and not 400 <= int(value) <= 599:
            raise ValueError("status must be 400..599")
        if key == "path":
            re.compile(value)
        return {"status": int, "reason": str, "path": str}.get(key, float)(value)
    except (TypeError, ValueError, re.error) as exc:
        raise SimError(f"bad value for fault '{key}': {exc}") from None


class Auth:
    """API token and ticket checks the way pve's auth handler does them."""

    def __init__(self, user, token_name, token_value, password, clock=time.time):
        self.user, self.token_id = user, f"{user}!{token_name}"
        self.token_value, self.password, self._clock = token_value, password, clock
        self._secret = os.urandom(32)  # tickets do not survive a restart, like a new authkey

    def check(self, headers):
        """None when the request is authenticated, else the 401 reason phrase."""
        authorization = headers.get("Authorization", "")
        ticket = _cookie(headers.get("Cookie", ""), "PVEAuthCookie")
        if ticket is None and authorization.startswith("PVEAuthCookie="):
            ticket = unquote(authorization[len("PVEAuthCookie="):])
        if ticket is not None:  # a PVEAuthCookie wins over a token
            return None if self._ticket_ok(ticket) else AUTH_FAILED
        token = re.match(r"PVEAPIToken[= ](.*)", authorization, re.DOTALL)
        if token is None:
            return "No ticket"
        # The value is URL-unescaped and cut at the first ';'; id and secret split at the LAST '='.
        token_id, _, secret = unquote(token[1]).split(";", 1)[0].rpartition("=")
        good = hmac.compare_digest(token_id, self.token_id) & hmac.compare_digest(secret, self.token_value)
        return None if good else AUTH_FAILED

    def login(self, form):
        """The POST /access/ticket data for a good username/password (or live ticket), else None."""
        user = form.get("username", "")
        if "@" not in user and form.get("realm"):
            user = f"{user}@{form['realm']}"
        password = form.get("password", "")
        # A live ticket works as the password: that is how clients renew it.
        good = hmac.compare_digest(password, self.password) or self._ticket_ok(password)
        if user != self.user or not good:
            return None
        stamp = f"{int(self._clock()):08X}"
        return {"username": user, "ticket": f"PVE:{user}:{stamp}::{self._sign(f'PVE:{user}:{stamp}')}",
                "CSRFPreventionToken": f"{stamp}:{self._sign(f'{stamp}:{user}')}",
                "cap": {"storage": {"Datastore.Audit": 1}, "nodes": {"Sys.Audit": 1}, "dc": {"Sys.Audit": 1},
                        "access": {}, "vms": {}, "sdn": {}, "mapping": {}}}

    def _ticket_ok(self, ticket):
        """A ticket we signed, for our user, at most 2 h old."""
        match = re.fullmatch(r"(PVE:([^:]+):([0-9A-F]{8}))::(.+)", ticket)
        if not match or not hmac.compare_digest(match[4], self._sign(match[1])):
            return False
        return match[2] == self.user and -300 <= self._clock() - int(match[3], 16) <= 7200

    def _sign(self, text):
        """A base64 HMAC standing in for pve's RSA ticket signature."""
        return base64.b64encode(hmac.new(self._secret, text.encode(), hashlib.sha256).digest()).decode()


def _cookie(header, name):
    """One cookie's URL-unescaped value from a Cookie header, or None."""
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return unquote(value)
    return None


class Stats:
    """Counts of API requests, by path (the /_sim/ control endpoints are not counted)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.reset()

    def count(self, path):
        """Count one request."""
        with self._lock:
            self.total += 1
            self.by_path[path] = self.by_path.get(path, 0) + 1

    def reset(self):
        """Start counting from zero."""
        with self._lock:
            self.total, self.by_path = 0, {}

    def snapshot(self):
        """{"requests": N, "by_path": {...}}."""
        with self._lock:
            return {"requests": self.total, "by_path": dict(self.by_path)}


# -- HTTP ----------------------------------------------------------------------------------


class Reply(NamedTuple):
    """What one request gets: status, reason phrase, body (b"" for pve's empty errors)."""

    status: int
    reason: str
    body: bytes = b""
    gzip_ok: bool = True


class _Stopped(Exception):
    """The simulator stopped while a request waited: drop the connection."""


class _Bare(Exception):
    """An error pve sends with an empty body (401 from the auth handler, 595 from the proxy)."""

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status, self.reason = status, reason


def _json_reply(data, status=200, reason="OK"):
    """A compact JSON reply."""
    return Reply(status, reason, _ENCODER.encode(data).encode())


def _error_reply(exc):
    """pve's error: message's first line in the status line, {"data":null,...} body."""
    message = exc.message if exc.message.endswith("\n") else exc.message + "\n"
    body = {"data": None, "message": message}
    if exc.errors:
        body["errors"] = exc.errors
    return _json_reply(body, exc.status, exc.message.split("\n", 1)[0])


class _Handler(BaseHTTPRequestHandler):
    """One connection: HTTP/1.1 keep-alive for 2xx, close after an error, like pveproxy."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms stall
    timeout = 300  # idle keep-alive connections are dropped after 5 minutes

    def version_string(self):
        """The Server header pve sends."""
        return "pve-api-daemon/3.0"

    def log_message(self, format, *args):
        """Request lines go to the debug log, not stderr."""
        LOG.debug("%s " + format, self.address_string(), *args)

    def do_GET(self):
        """GET."""
        self._serve("GET")

    def do_POST(self):
        """POST."""
        self._serve("POST")

    def do_PUT(self):
        """PUT (never implemented: 501)."""
        self._serve("PUT")

    def do_DELETE(self):
        """DELETE (never implemented: 501)."""
        self._serve("DELETE")

    def _serve(self, method):
        """Read the body, get the reply from the simulator, write it."""
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._write(_json_reply({"error": "request body too large"}, 413, "Request Entity Too Large"))
            return
        body = self.rfile.read(length) if length else b""
        try:
            reply = self.server.sim.handle(method, self.path, self.headers, body)
        except _Stopped:
            self.close_connection = True
            return
        self._write(reply)

    def _write(self, reply):
        """Status line with the reason phrase, pve's headers, gzip for bodies over 1 KiB."""
        body = reply.body
        gzipped = (reply.gzip_ok and len(body) > 1024
                   and "gzip" in self.headers.get("Accept-Encoding", ""))
        if gzipped:  # level 1: same bytes once decoded, far less CPU at 10,000 rows
            packer = zlib.compressobj(1, zlib.DEFLATED, 31)
            body = packer.compress(body) + packer.flush()
        self.send_response(reply.status, reply.reason.encode("latin-1", "replace").decode("latin-1"))
        now = formatdate(usegmt=True)
        headers = {"Cache-Control": "max-age=0", "Pragma": "no-cache", "Expires": now,
                   "Content-Length": str(len(body))}
        if body:
            headers["Content-Type"] = JSON_TYPE
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        # pveproxy closes the connection after every error response.
        headers["Connection"] = "close" if reply.status >= 400 else "Keep-Alive"
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = reply.status >= 400 or self.close_connection


class _Server(ThreadingHTTPServer):
    """A ThreadingHTTPServer doing the TLS handshake in the request thread, not in accept()."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address, sim, context):
        self.sim, self.context = sim, context
        super().__init__(address, _Handler)

    def finish_request(self, request, client_address):
        """Wrap the socket in TLS, then serve it; a failed handshake just closes it."""
        request.settimeout(10)
        try:
            conn = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        with self.sim._track(conn):
            super().finish_request(conn, client_address)

    def handle_error(self, request, client_address):
        """Clients that reset or time out are normal here: log at debug only."""
        LOG.debug("connection from %s ended: %r", client_address, sys.exc_info()[1])


# -- the simulator ------------------------------------------------------------------------


class Simulator:
    """The simulated Proxmox VE API over HTTPS, for the demo, the tests and the benchmarks."""

    def __init__(self, nodes=3, datastores=6, seed=1, state_dir=None, drift=True, drift_rate=0.05,
                 shuffle=True, vms=0, quirks=False, host="127.0.0.1", port=0, latency_ms=0.0,
                 auth_delay=3.0, user="monitor@pve", token_name="exporter", token_value=None,
                 password="simulator", clock=time.time):
        self.cluster = Cluster(nodes, datastores, seed, drift, drift_rate, shuffle, vms, quirks, clock)
        self._api = PveApi(self.cluster)
        self.user, self.token_name = user, token_name
        self.token_value = token_value or str(uuid.UUID(int=random.Random(f"{seed}:token").getrandbits(128),
                                                        version=4))
        self.password = password
        self.auth_delay = auth_delay  # pve delays every 401 by about 3 s
        self._auth = Auth(user, token_name, self.token_value, password, clock)
        self._stats = Stats()
        self._faults = Faults(latency_ms=float(latency_ms))
        self._faults_lock = threading.Lock()
        self._release = threading.Event()  # set when a hang ends
        self._fault_offline = set()  # nodes offline because of the offline_nodes fault
        self._stopping = threading.Event()
        self._connections, self._conn_lock = set(), threading.Lock()
        self.state_dir = Path(state_dir) if state_dir else None  # None: a temporary one per run
        self._own_state_dir = False
        self.host, self.port = host, port
        self._server = self._thread = None
        self.ca_file = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self):
        """Make or reuse the certificates, bind, and serve in a background thread."""
        if self._server is not None:
            return self
        if self.state_dir is None:
            self.state_dir, self._own_state_dir = Path(tempfile.mkdtemp(prefix="pve-sim-")), True
        paths = ensure_certificates(self.state_dir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(paths.cert, paths.key)
        self._stopping.clear()
        self._release = threading.Event()  # stop() released the hangs of the previous run
        self._server = _Server((self.host, self.port), self, context)
        self.port = self._server.server_address[1]
        self.ca_file = str(paths.ca)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"pve-simulator:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop promptly, even while requests hang: waits end and connections are cut."""
        self._stopping.set()
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            with self._conn_lock:
                for conn in list(self._connections):
                    with contextlib.suppress(OSError):
                        conn.shutdown(socket.SHUT_RDWR)
            self._server.server_close()
            self._thread.join(5)
            self._server = None
        if self._own_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            self.state_dir, self._own_state_dir = None, False

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @contextlib.contextmanager
    def _track(self, conn):
        """Remember an open connection so stop() can cut it."""
        with self._conn_lock:
            self._connections.add(conn)
        try:
            yield
        finally:
            with self._conn_lock:
                self._connections.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    # -- what tests, demo and bench use ------------------------------------------------------

    @property
    def url(self):
        """https://HOST:PORT."""
        return f"https://{self.host}:{self.port}"

    def env(self):
        """The PROXMOX_* settings that point the exporter at this simulator."""
        return {"PROXMOX_HOST": f"{self.host}:{self.port}", "PROXMOX_USER": self.user,
                "PROXMOX_TOKEN_NAME": self.token_name, "PROXMOX_TOKEN_VALUE": self.token_value,
                "PROXMOX_CA_BUNDLE": self.ca_file}

    @property
    def request_count(self):
        """API requests served since start or the last reset."""
        return self._stats.snapshot()["requests"]

    @property
    def requests_by_path(self):
        """{path: count} of API requests (no query string)."""
        return self._stats.snapshot()["by_path"]

    def reset_stats(self):
        """Zero the request counters."""
        self._stats.reset()

    @property
    def faults(self):
        """The faults in force, as a JSON-ready dict."""
        faults = dataclasses.asdict(self._faults)
        faults["offline_nodes"] = list(faults["offline_nodes"])
        return faults

    def set_faults(self, **changes):
        """Switch faults on or change them (see Faults); the others stay as they are."""
        values = {key: _fault_value(key, value) for key, value in changes.items()}
        for name in values.get("offline_nodes", ()):
            if self.cluster.node_state(name) is None:
                raise SimError(f"no such node '{name}'")
        with self._faults_lock:
            old, new = self._faults, dataclasses.replace(self._faults, **values)
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
        """The Reply to one HTTP request."""
        url = urlsplit(target)
        if url.path.startswith("/_sim/"):
            return self._control(method, url.path, body)
        start = time.monotonic()
        self._stats.count(url.path)
        faults = self._faults_for(url.path)
        self._wait(faults.latency_ms / 1000)
        if faults.hang:
            self._wait(faults.hang_seconds, self._release)
            faults = self._faults_for(url.path)
        try:
            data = self._answer(method, url, headers, body, faults, start)
        except ApiError as exc:
            return _error_reply(exc)
        except _Bare as exc:
            return Reply(exc.status, exc.reason)
        reply = _json_reply({"data": data})
        if faults.malformed:  # any strict prefix of a JSON object is invalid JSON
            return reply._replace(body=reply.body[: len(reply.body) // 2], gzip_ok=False)
        return reply

    def _faults_for(self, path):
        """The faults that apply to this request (none when `path` does not match)."""
        faults = self._faults
        return faults if faults.applies(path) else Faults()

    def _answer(self, method, url, headers, body, faults, start):
        """Route, fault, authenticate, proxy-check, answer: in pveproxy's order."""
        if not url.path.startswith(API_PREFIX + "/"):
            raise ApiError(501, f"Method '{method} {url.path}' not implemented")
        call = resolve(method, url.path[len(API_PREFIX):].rstrip("/") or "/")
        if faults.status:
            raise ApiError(faults.status, faults.reason or http.client.responses.get(faults.status, "Error"))
        if call.name is None:
            return self._login(headers, body, faults, start)
        reason = AUTH_FAILED if faults.auth_fail else self._auth.check(headers)
        if reason:
            self._wait(self.auth_delay - (time.monotonic() - start))
            raise _Bare(401, reason)
        if call.node:
            self._proxy_check(call.node, faults)
        return self._api.answer(call, dict(parse_qsl(url.query, keep_blank_values=True)))

    def _proxy_check(self, node, faults):
        """pveproxy forwards /nodes/{node}/... to that node: unknown -> 500, down -> 595."""
        state = self.cluster.node_state(node)
        if state is None:
            raise ApiError(500, f"hostname lookup '{node}' failed - failed to get address info for: "
                                f"{node}: Name or service not known")
        if state == "offline":
            self._wait(faults.offline_delay_ms / 1000)
            raise _Bare(595, "No route to host")

    def _login(self, headers, body, faults, start):
        """POST /access/ticket: a ticket for the password, or 401 after the auth delay."""
        if headers.get("Authorization", "").startswith("PVEAPIToken"):
            raise ApiError(403, "Permission check failed (URI '/access/ticket' not available with API "
                                "token, need proper ticket.\n)")
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        missing = {key: "property is missing and it is not optional"
                   for key in ("username", "password") if key not in form}
        if missing:
            raise ApiError(400, "Parameter verification failed.", missing)
        data = None if faults.auth_fail else self._auth.login(form)
        if data is None:
            self._wait(self.auth_delay - (time.monotonic() - start))
            raise ApiError(401, "authentication failure")
        if len(self.cluster.nodes) > 1:
            data["clustername"] = self.cluster.name
        return data

    def _wait(self, seconds, until=None):
        """Sleep (None = until `until` is set); raise _Stopped when the simulator stops."""
        if seconds is not None and seconds <= 0:
            return
        event = until or self._stopping
        event.wait(seconds)
        if self._stopping.is_set():
            raise _Stopped

    # -- the /_sim/ control endpoints (no auth, not counted) ---------------------------------

    def _control(self, method, path, body):
        """GET /_sim/stats, POST /_sim/reset, GET|POST /_sim/faults, POST /_sim/cluster."""
        try:
            payload = json.loads(body) if body.strip() else {}
            return _json_reply(self._control_answer(method, path, payload))
        except (SimError, TypeError, ValueError) as exc:
            return _json_reply({"error": str(exc)}, 400, "Bad Request")
        except LookupError:
            return _json_reply({"error": f"no control endpoint {method} {path}"}, 404, "Not Found")

    def _control_answer(self, method, path, payload):
        """The JSON answer of one control call."""
        if (method, path) == ("GET", "/_sim/stats"):
            return self._stats.snapshot()
        if (method, path) == ("POST", "/_sim/reset"):
            self._stats.reset()
            return self._stats.snapshot()
        if (method, path) == ("GET", "/_sim/faults"):
            return self.faults
        if (method, path) == ("POST", "/_sim/faults"):
            if not isinstance(payload, dict):
                raise SimError("faults: expected a JSON object")
            payload = dict(payload)
            if payload.pop("clear", False):
                self.clear_faults()
            return self.set_faults(**payload)
        if (method, path) == ("POST", "/_sim/cluster"):
            return {"ok": True, "applied": self._cluster_ops(payload)}
        raise LookupError(path)

    def _cluster_ops(self, payload):
        """Apply {"op": NAME, ...args} or a list of them (or {"ops": [...]}) to the model."""
        ops = payload.get("ops", payload) if isinstance(payload, dict) else payload
        ops = [ops] if isinstance(ops, dict) else ops
        if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
            raise SimError('cluster: expected {"op": ..., ...} or a list of them')
        for op in ops:
            args = dict(op)
            name = args.pop("op", None)
            if name not in CLUSTER_OPS:
                raise SimError(f"unknown op {name!r} (known: {', '.join(sorted(CLUSTER_OPS))})")
            getattr(self.cluster, name)(**args)
        return len(ops)


# -- the `simulate` sub-command -----------------------------------------------------------


def register(subparsers):
    """Add the `simulate` sub-command; it sets func(args) -> int."""
    parser = subparsers.add_parser(
        "simulate", help="serve a simulated Proxmox VE API over HTTPS",
        description="Serve a simulated Proxmox VE cluster's API (token and ticket auth, drifting "
                    "usage, faults over POST /_sim/faults) until SIGINT or SIGTERM.")
    add = parser.add_argument
    add("--listen", default="127.0.0.1:8006", help="HOST:PORT to serve on (default %(default)s)")
    add("--nodes", type=int, default=3, help="cluster nodes pve1..pveN (default %(default)s)")
    add("--datastores", type=int, default=6, help="datastores (default %(default)s)")
    add("--seed", type=int, default=1, help="seed for sizes, usage, token and order (default %(default)s)")
    add("--state-dir", default=".demo/simulator", help="where the CA and certificate live (default %(default)s)")
    add("--latency-ms", type=float, default=0.0, help="latency added to every API request")
    add("--auth-delay", type=float, default=3.0, help="seconds before a 401, like pve (default %(default)s)")
    add("--token-value", help="API token secret (default: a UUID derived from the seed)")
    add("--password", default="simulator", help="password of the user for ticket login (default %(default)s)")
    add("--no-drift", dest="drift", action="store_false", help="usage stays where it starts")
    add("--drift-rate", type=float, default=0.05,
        help="fastest usage drift, as a fraction of the size per hour (default %(default)s)")
    add("--no-shuffle", dest="shuffle", action="store_false", help="answer lists in a stable order")
    add("--vms", type=int, default=0, help="guests to list (default %(default)s)")
    add("--quirks", action="store_true", help="send 0/1 fields as strings, like some storage plugins")
    parser.set_defaults(func=run)
    return parser


def _parse_listen(value):
    """'HOST:PORT' or 'PORT' -> (host, port)."""
    host, _, port = value.rpartition(":")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def run(args):
    """Serve until SIGINT or SIGTERM, printing the settings an exporter needs."""
    host, port = _parse_listen(args.listen)
    sim = Simulator(nodes=args.nodes, datastores=args.datastores, seed=args.seed,
                    state_dir=os.path.abspath(args.state_dir), drift=args.drift, drift_rate=args.drift_rate,
                    shuffle=args.shuffle, vms=args.vms, quirks=args.quirks, host=host, port=port,
                    latency_ms=args.latency_ms, auth_delay=args.auth_delay, token_value=args.token_value,
                    password=args.password)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        sim.start()
    except OSError as exc:
        print(f"simulate: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 1
    try:
        _print_settings(sim, args)
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _print_settings(sim, args):
    """The env lines to use; the token is a throw-away demo credential, so printing it is fine."""
    print(f"# simulated Proxmox VE: {args.nodes} nodes x {args.datastores} datastores at {sim.url}"
          " (Ctrl-C to stop)")
    for key, value in sim.env().items():
        print(f"{key}={value}")
    print(f"# password login instead of the token: PROXMOX_PASSWORD={sim.password}")
    print(f"# faults: curl --cacert {sim.ca_file} -d '{{\"status\": 503}}' {sim.url}/_sim/faults")
    sys.stdout.flush()
