"""The listener: uvicorn with its httptools parser serving HTTP(S), /metrics answered in its event loop.

Chosen by measurement (docs/architecture.md#the-listener): an event loop reads requests, so slow
or idle clients cost a socket, never a thread; `/metrics` is served from the cached bytes without
a thread hop; the Flask app runs in a2wsgi's pool of HTTP_THREADS threads; TLS is Python's ssl.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time

import uvicorn
from a2wsgi import WSGIMiddleware
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .front import Front

HTTP_THREADS = 8
REQUEST_DEADLINE = 10  # seconds from a connection (or its previous answer) to a whole request head
IDLE_TIMEOUT = 60  # a kept-alive connection with no request (Prometheus reconnects when it must)
MAX_HEAD = 64 * 1024  # request line and headers


class _Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the two limits it lacks: a deadline and a size for a request head.

    Without them a client that drips header lines (slowloris), or never sends one, holds its
    connection forever, and one 50 MB header line is buffered whole.
    """

    deadline = REQUEST_DEADLINE

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._begin_head()

    def _begin_head(self) -> None:
        self._head_bytes = 0
        self._in_head = True
        self._late = self.loop.call_later(self.deadline, self._too_late)

    def data_received(self, data: bytes) -> None:
        if not self._in_head and (self.cycle is None or self.cycle.response_complete):
            self._begin_head()  # the first bytes of the next request on a kept-alive connection
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > MAX_HEAD and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n"
                                 b"connection: close\r\n\r\n")
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._late.cancel()
        super().on_headers_complete()

    def connection_lost(self, exc) -> None:
        self._late.cancel()
        super().connection_lost(exc)

    def _too_late(self) -> None:
        if self._in_head and not self.transport.is_closing():
            self.transport.close()


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket; IPPROTO_TCP so that asyncio sets TCP_NODELAY (else 40 ms delayed ACKs)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6 and host == "::":
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


class HttpServer:
    """The app on a socket, plain or TLS, until stopped."""

    def __init__(self, front: Front, sock: socket.socket, context: ssl.SSLContext | None = None,
                 deadline: float = REQUEST_DEADLINE):
        protocol = type("Protocol", (_Protocol,), {"deadline": deadline})
        config = uvicorn.Config(front, http=protocol, lifespan="off", access_log=False, log_config=None,
                                server_header=False, date_header=True, timeout_keep_alive=IDLE_TIMEOUT,
                                timeout_graceful_shutdown=3, proxy_headers=False)
        config.load()
        config.ssl = context  # ours: the web config's policy, its certificate reloaded in place
        self.server = uvicorn.Server(config)
        self.sock = sock
        self.port = sock.getsockname()[1]
        self.scheme = "https" if context else "http"

    def run(self) -> None:
        """Serve until stop() (or SIGTERM/SIGINT when run in the main thread)."""
        self.server.run(sockets=[self.sock])

    def stop(self) -> None:
        """Ask the server to finish (from any thread)."""
        self.server.should_exit = True

    def start_in_thread(self, wait: float = 10.0) -> threading.Thread:
        """Run in a daemon thread (tests and tools) and return once it listens."""
        thread = threading.Thread(target=self.run, name="http", daemon=True)
        thread.start()
        for _ in range(int(wait * 100)):
            if self.server.started:
                return thread
            time.sleep(0.01)
        raise RuntimeError("the HTTP server did not start")


def wsgi_pool(app, threads: int = HTTP_THREADS) -> WSGIMiddleware:
    """The Flask app as ASGI, run in `threads` threads."""
    return WSGIMiddleware(app, workers=threads)
