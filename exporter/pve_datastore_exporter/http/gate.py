"""A connection before it speaks: counted per client, closed at its deadline, holding a socket and a
timer (~2.4 kB) until its first bytes arrive; then given TLS or HTTP. And the socket's write timeout.

asyncio's own TLS server (create_server(ssl=...)) builds an SSLProtocol, with a 256 KiB read buffer
allocated and zeroed, for every accepted socket, and gives a silent one 60 s: 4,300 connections that
never sent a ClientHello grew `serve` by 1.35 GB (issue 22). Here TLS starts on the first bytes, with
a buffer the size of a TLS record, and the whole handshake has HANDSHAKE_DEADLINE seconds.
"""

from __future__ import annotations

import asyncio
from asyncio import sslproto
from collections.abc import Callable
from typing import TYPE_CHECKING

from .clients import Tally, client_key

if TYPE_CHECKING:
    from .listener import HttpServer


class Ticket:
    """A client's place in the tally, given back once, by whichever protocol holds the socket last."""

    def __init__(self, tally: Tally, client: str):
        self.tally, self.client = tally, client

    def release(self) -> None:
        """Give the place back (once)."""
        if self.tally is not None:
            self.tally.give_back(self.client)
            self.tally = None


class WriteWatch:
    """The write timeout of a raw socket transport: aborted when its output waits and not a byte leaves.

    The transport's high-water mark is 0, so pause_writing() means "output waits for the client"
    and resume_writing() "all of it left"; a client that stops reading (with a full window, or a
    close waiting to flush) is dropped after `timeout` seconds instead of holding its answer forever.
    """

    def __init__(self, listener: HttpServer, transport):
        self.listener, self.transport, self.timer = listener, transport, None
        transport.set_write_buffer_limits(high=0)

    def paused(self) -> None:
        """Output waits for the client: start the clock."""
        self._arm(self.transport.get_write_buffer_size())

    def _arm(self, waiting: int) -> None:
        self.cancel()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.listener.limits.write_timeout, self._stalled, waiting)

    def _stalled(self, waiting: int) -> None:
        now = self.transport.get_write_buffer_size()
        if now and now >= waiting:  # not one byte taken in write_timeout seconds
            self.listener.count("write_timeout")
            self.transport.abort()
        elif now:
            self._arm(now)

    def cancel(self) -> None:
        """All output left (or the connection did): stop the clock."""
        if self.timer:
            self.timer.cancel()
            self.timer = None


class _Tls(sslproto.SSLProtocol):
    """asyncio's TLS layer with a TLS record's worth of read buffer; gives the connection's ticket back."""

    max_size = 16 * 1024  # asyncio's 256 KiB, allocated and zeroed per connection, was most of its cost

    def __init__(self, *args, ticket: Ticket, watch: WriteWatch, **kw):
        super().__init__(*args, **kw)
        self.ticket, self.watch = ticket, watch

    def pause_writing(self) -> None:
        super().pause_writing()
        self.watch.paused()

    def resume_writing(self) -> None:
        self.watch.cancel()
        super().resume_writing()

    def connection_lost(self, exc) -> None:
        self.watch.cancel()
        super().connection_lost(exc)
        self.ticket.release()


class Gate(asyncio.Protocol):
    """A connection until its first bytes: counted per client, closed at its deadline, nothing else held."""

    def __init__(self, server: HttpServer, make_http: Callable[[], asyncio.Protocol], connections: set):
        self.server, self.make_http, self.connections = server, make_http, connections
        self.transport = self.ticket = self.late = None
        self.tls = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        client = client_key(transport.get_extra_info("peername"))
        if not self.server.tally.take(client):
            self.server.count("per_client_limit")
            transport.abort()
            return
        self.ticket = Ticket(self.server.tally, client)
        self.connections.add(self)  # uvicorn shuts it down with the others
        limits, self.tls = self.server.limits, self.server.context is not None
        self.until = self.server.loop_time() + (limits.handshake if self.tls else limits.deadline)
        self.late = asyncio.get_running_loop().call_at(self.until, self._too_late)

    def data_received(self, data: bytes) -> None:
        (self._start_tls if self.tls else self._start_http)(data)

    def _start_http(self, data: bytes) -> None:
        self._done()
        http = self.make_http()
        http.ticket, http.head_until = self.ticket, self.until  # its first head keeps the gate's deadline
        self.transport.set_protocol(http)
        http.connection_made(self.transport)
        http.data_received(data)

    def _start_tls(self, data: bytes) -> None:
        handshaken = asyncio.get_running_loop().create_future()
        handshaken.add_done_callback(self._handshaken)
        # The context of this moment: a reload swaps it for the connections after this one.
        tls = _Tls(asyncio.get_running_loop(), self.make_http(), self.server.context, handshaken, server_side=True,
                   ssl_handshake_timeout=self.server.limits.handshake + 5,  # ours fires first
                   ticket=self.ticket, watch=WriteWatch(self.server, self.transport))
        self.ticket = None  # the TLS layer gives it back
        self.transport.set_protocol(tls)
        tls.connection_made(self.transport)
        for start in range(0, len(data), tls.max_size):  # what the gate read, as if TLS had read it
            if self.transport.is_closing():
                break
            piece = data[start:start + tls.max_size]
            tls.get_buffer(len(piece))[:len(piece)] = piece
            tls.buffer_updated(len(piece))

    def _handshaken(self, done: asyncio.Future) -> None:
        if not done.cancelled():
            done.exception()  # a failed handshake is the client's affair: retrieved, not logged
        self._done()

    def _done(self) -> None:
        if self.late:
            self.late.cancel()
        self.connections.discard(self)

    def _too_late(self) -> None:
        self.server.count("handshake_timeout" if self.tls else "request_timeout")
        self.transport.abort()

    def connection_lost(self, exc) -> None:
        self._done()
        if self.ticket:
            self.ticket.release()

    def shutdown(self) -> None:
        """uvicorn's shutdown: nothing was asked, nothing is lost."""
        self.transport.abort()
