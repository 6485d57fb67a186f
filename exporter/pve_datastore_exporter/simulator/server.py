"""The simulator's HTTP side: TLS server, one handler per connection, the Reply it writes, counters.

It knows nothing of Proxmox beyond the wire format: the `respond` callable it is given decides
every answer. Facts about the real API are in docs/proxmox-api.md; the comments name the ones they
rely on.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import socket
import ssl
import sys
import threading
import zlib
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple

LOG = logging.getLogger(__name__)
JSON_TYPE = "application/json;charset=UTF-8"
MAX_BODY = 1 << 20
_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)


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

    def served(self, path, start, end):
        """Log one request's path and its time.monotonic() start and end (the tests' evidence of who read when)."""
        with self._lock:
            self.log.append((path, start, end))

    def timeline(self):
        """[(path, start, end)] of the logged requests, oldest first."""
        with self._lock:
            return list(self.log)

    def reset(self):
        """Start counting from zero."""
        with self._lock:
            self.total, self.by_path, self.log = 0, {}, collections.deque(maxlen=100_000)

    def snapshot(self):
        """{"requests": N, "by_path": {...}}."""
        with self._lock:
            return {"requests": self.total, "by_path": dict(self.by_path)}


class Reply(NamedTuple):
    """What one request gets: status, reason phrase, body (b"" for pve's empty errors)."""

    status: int
    reason: str
    body: bytes = b""
    gzip_ok: bool = True
    drip: threading.Event | None = None  # write the body a byte at a time until this is set


class Stopped(Exception):
    """The simulator stopped while a request waited: drop the connection."""


def json_reply(data, status=200, reason="OK"):
    """A compact JSON reply."""
    return Reply(status, reason, _ENCODER.encode(data).encode())


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
        """Read the body, get the reply from the server's `respond`, write it."""
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._write(json_reply({"error": "request body too large"}, 413, "Request Entity Too Large"))
            return
        body = self.rfile.read(length) if length else b""
        try:
            reply = self.server.respond(method, self.path, self.headers, body)
        except Stopped:
            self.close_connection = True
            return
        self._write(reply)

    def _write(self, reply):
        """Status line with the reason phrase, pve's headers, gzip over 1 KiB (docs/proxmox-api.md#envelope)."""
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
        # pveproxy closes the connection after every error response (docs/proxmox-api.md#errors).
        headers["Connection"] = "close" if reply.status >= 400 else "Keep-Alive"
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if reply.drip is None:
            self.wfile.write(body)
        else:  # each byte arrives well within any read timeout, the whole never in time
            for index in range(len(body)):
                if reply.drip.wait(0.2):
                    break
                self.wfile.write(body[index:index + 1])
                self.wfile.flush()
        self.close_connection = reply.status >= 400 or self.close_connection


class ApiServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer doing the TLS handshake in the request thread, not in accept().

    `respond(method, target, headers, body)` returns the Reply to each request.
    """

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address, respond, context):
        self.respond, self.context = respond, context
        self._connections, self._conn_lock = set(), threading.Lock()
        super().__init__(address, _Handler)

    def finish_request(self, request, client_address):
        """Wrap the socket in TLS, then serve it; a failed handshake just closes it."""
        request.settimeout(10)
        try:
            conn = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        with self._track(conn):
            super().finish_request(conn, client_address)

    def handle_error(self, request, client_address):
        """Clients that reset or time out are normal here: log at debug only."""
        LOG.debug("connection from %s ended: %r", client_address, sys.exc_info()[1])

    def cut_connections(self):
        """Shut down every open connection, so requests still waiting end now."""
        with self._conn_lock:
            for conn in list(self._connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    @contextlib.contextmanager
    def _track(self, conn):
        """Remember an open connection so cut_connections() can reach it."""
        with self._conn_lock:
            self._connections.add(conn)
        try:
            yield
        finally:
            with self._conn_lock:
                self._connections.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()
