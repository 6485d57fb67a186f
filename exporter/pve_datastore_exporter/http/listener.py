"""The listener: uvicorn with its httptools parser serving HTTP(S), /metrics answered in its event loop.

Chosen by measurement (docs/architecture.md#the-listener): an event loop reads requests, so slow
or idle clients cost a socket, never a thread; `/metrics` is served from the cached bytes without
a thread hop; the Flask app runs in a2wsgi's pool of HTTP_THREADS threads; TLS is Python's ssl.

Every connection starts as a gate (gate.py): counted per client, timed, and given TLS or this
module's HTTP protocol only when its first bytes arrive.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable

import httptools
import uvicorn
from a2wsgi import WSGIMiddleware
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from ..answers import encoded, error_body
from . import SECURITY_HEADERS
from .clients import Tally
from .front import ONE_WRITE, Front
from .gate import Gate, Ticket, WriteWatch

log = logging.getLogger(__name__)

HTTP_THREADS = 8
REQUEST_DEADLINE = 10  # seconds from a connection (or a request's first byte) to its whole head
HANDSHAKE_DEADLINE = 10  # seconds from a connection to the end of its TLS handshake
WRITE_TIMEOUT = 10  # seconds an answer may wait for a client that reads none of it
IDLE_TIMEOUT = 60  # a kept-alive connection with no request (Prometheus reconnects when it must)
MAX_HEAD = 64 * 1024  # request line and headers
MAX_PIPELINE = 8  # requests read ahead of their answers on one connection
PER_CLIENT = 64  # open connections per client address (EXPORTER_MAX_CONNECTIONS_PER_CLIENT)
NOT_HTTP = "The request is not valid HTTP/1.1."
HEAD_TOO_LARGE = "The request line and headers exceed 64 KiB."


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one connection may cost: time to speak, bytes read ahead, connections per client."""

    deadline: float = REQUEST_DEADLINE
    handshake: float = HANDSHAKE_DEADLINE
    write_timeout: float = WRITE_TIMEOUT
    per_client: int = PER_CLIENT
    max_head: int = MAX_HEAD
    max_pipeline: int = MAX_PIPELINE


def _envelope(status: bytes, code: str, message: str) -> bytes:
    """An error answer written by the listener itself, in the one JSON envelope, closing the connection."""
    body = encoded(error_body(code, message))
    head = [b"HTTP/1.1 " + status, b"content-type: application/json", b"content-length: %d" % len(body),
            b"cache-control: no-store", b"connection: close",
            *(name.lower().encode() + b": " + value.encode() for name, value in SECURITY_HEADERS)]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class _Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits it lacks: a deadline and a size for each request head,
    a bound on requests read ahead, a write timeout, and its own errors in the JSON envelope.

    Without them a client that drips header lines (slowloris), or never sends one, holds its
    connection forever; a pipelined request is never timed nor counted; an answer nobody reads
    is held forever.
    """

    listener: HttpServer  # set on the per-server subclass (uvicorn's `server` is the local address)
    ticket: Ticket | None = None
    head_until: float | None = None  # the first head's deadline (the gate's), else one per request
    _late = _watch = None
    _answered = False  # this request was answered by _answer_scrape: no ASGI cycle to complete
    _answered_in_read = 0  # scrapes _answer_scrape answered from the current read (pipelined ones)

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if self.ticket:  # the raw socket's protocol (plain HTTP); under TLS, _Tls watches the socket
            self._watch = WriteWatch(self.listener, transport)
        self._begin_head(self.head_until)

    def _begin_head(self, until: float | None = None) -> None:
        self._head_bytes, self._in_head = 0, True
        until = until or self.loop.time() + self.listener.limits.deadline
        self._late = self.loop.call_at(until, self._too_late)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # A request read with the one answered before it (pipelined): the idle timer that answer armed
        # must not run during this one (uvicorn cancels it only when more bytes arrive).
        self._unset_keepalive_if_required()
        if not self._in_head:
            self._begin_head()  # a kept-alive or pipelined request: its own deadline and size

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        self._answered_in_read = 0
        # uvicorn's parse, without its warnings: each refusal is counted (not_http, pipeline_too_deep),
        # and a line per bad request or per `Upgrade:` (no WebSocket here) would let any client fill the log.
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._callback_failed(exc.__context__)
            self.send_400_response(NOT_HTTP)  # nothing more when the pipeline bound has already refused
            return
        except httptools.HttpParserUpgrade:
            log.debug("%s asked for an upgrade; answered as plain HTTP", self.client and self.client[0])
        if self._in_head and not self.transport.is_closing():
            # A whole read counts: a pipelined head may be charged its predecessor's tail (<= one read).
            self._head_bytes += len(data)
            if self._head_bytes > self.listener.limits.max_head:
                self._refuse("head_too_large", b"431 Request Header Fields Too Large", "request_header_fields_too_large",
                             HEAD_TOO_LARGE)

    @staticmethod
    def _callback_failed(error: BaseException | None) -> None:
        """Log what one of our parser callbacks raised: a bug, not the client's bytes (httptools chains it)."""
        if error is not None and not isinstance(error, httptools.HttpParserError):  # not the pipeline bound's own
            log.error("a request could not be read: the listener failed on it", exc_info=error)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._late.cancel()
        if self._answer_scrape():
            return
        super().on_headers_complete()
        limits = self.listener.limits
        if self.pipeline and (len(self.pipeline) > limits.max_pipeline or self._read_ahead() > limits.max_head):
            self._refuse("pipeline_too_deep")
            raise httptools.HttpParserError("pipelined too far")  # stops parsing the rest of this read

    def _answer_scrape(self) -> bool:
        """Answer a plain kept-alive `GET /metrics` here, as the front would, without an ASGI task.

        Half of a small scrape's time went to building the ASGI scope, its task and its messages.
        Anything else (a query, HTTP/1.0, `Connection: close`, a body, a request queued behind
        another, what the front's rules must decide) takes the ASGI path; the bytes are the same.
        """
        if (self.url != b"/metrics" or self.pipeline or self.cycle is not None and not self.cycle.response_complete
                or self.flow.write_paused  # the client reads no faster: queued, MAX_PIPELINE bounds it
                or self._answered_in_read >= self.listener.limits.max_pipeline  # so is a pipelined flood
                or self.parser.get_method() != b"GET" or self.parser.get_http_version() != "1.1"
                or not self.parser.should_keep_alive()):
            return False
        accept_encoding = authorization = None
        for name, value in self.headers:
            if name == b"accept-encoding" and accept_encoding is None:  # the first, as the front reads it
                accept_encoding = value
            elif name == b"authorization" and authorization is None:
                authorization = value
            elif name in (b"content-length", b"transfer-encoding", b"expect", b"upgrade"):
                return False
        answer = getattr(self.listener.front, "plain_metrics", None)
        try:
            found = answer(accept_encoding or b"", authorization or b"") if answer else None
        except Exception:  # nothing written yet: the ASGI path answers (its 500) and logs it
            log.exception("GET /metrics could not be answered in the listener; the front answers it")
            return False
        if found is None:
            return False
        headers, chunks = found
        head = [STATUS_LINE[200]]
        for name, value in (*self.server_state.default_headers, *headers):
            head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        if len(chunks) == 1 and len(chunks[0]) <= ONE_WRITE:
            self.transport.write(b"".join(head) + chunks[0])
        else:
            self.transport.write(b"".join(head))
            for chunk in chunks:
                self.transport.write(chunk)
        self._answered = True
        self._answered_in_read += 1
        self.on_response_complete()  # counts it, arms the keep-alive timer
        return True

    def on_message_complete(self) -> None:
        if self._answered:
            self._answered = False
            return
        super().on_message_complete()

    def _read_ahead(self) -> int:
        return sum(len(c.scope["raw_path"]) + sum(len(k) + len(v) + 4 for k, v in c.scope["headers"])
                   for c, _ in self.pipeline)

    def _answering(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete or bool(self.pipeline)

    def _refuse(self, reason: str, status: bytes = b"", code: str = "", message: str = "") -> None:
        """Close, with an answer in the envelope unless another answer is on its way (it would be garbled)."""
        self.listener.count(reason)
        self.pipeline.clear()
        if status and not self._answering():
            self.transport.write(_envelope(status, code, message))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes that are not HTTP: the envelope, not its plain text."""
        if not self.transport.is_closing():
            self._refuse("not_http", b"400 Bad Request", "bad_request", NOT_HTTP)

    def _too_late(self) -> None:
        if self._in_head and not self.transport.is_closing():
            self._refuse("request_timeout")

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._watch:
            self._watch.paused()

    def resume_writing(self) -> None:
        if self._watch:
            self._watch.cancel()
        super().resume_writing()

    def connection_lost(self, exc) -> None:
        if self._late:
            self._late.cancel()
        if self._watch:
            self._watch.cancel()
        super().connection_lost(exc)
        if self.ticket:
            self.ticket.release()


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
    """The app on a socket, plain or TLS, until stopped; `context` may be swapped at any time (a reload)."""

    def __init__(self, front: Front, sock: socket.socket, context: ssl.SSLContext | None = None,
                 limits: Limits | None = None, count: Callable[[str], None] | None = None):
        self.front, self.context = front, context
        self.limits = limits or Limits()
        self.tally = Tally(self.limits.per_client)
        self.count = count or (lambda reason: None)  # a connection closed early, by reason (a metric)
        protocol = type("Protocol", (_Protocol,), {"listener": self})

        def connection(config, server_state, app_state, _loop=None):
            def make_http():
                return protocol(config=config, server_state=server_state, app_state=app_state, _loop=_loop)
            return Gate(self, make_http, server_state.connections)

        config = uvicorn.Config(front, http=connection, lifespan="off", access_log=False, log_config=None,
                                server_header=False, date_header=True, timeout_keep_alive=IDLE_TIMEOUT,
                                timeout_graceful_shutdown=3, proxy_headers=False)
        config.load()  # no TLS for uvicorn: each gate starts it with the context of its moment
        self.server = uvicorn.Server(config)
        self.sock = sock
        self.port = sock.getsockname()[1]
        self.scheme = "https" if context else "http"

    @staticmethod
    def loop_time() -> float:
        return asyncio.get_running_loop().time()

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
