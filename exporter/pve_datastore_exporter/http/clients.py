"""What one client address may hold at once: connections, requests per interval, bcrypt checks.

A client is its IP address; an IPv6 client is its /64 (one host is handed a whole /64 and can
pick any address in it). Behind a reverse proxy every request comes from the proxy's address.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .guard import TokenBucket


def client_key(peer) -> str:
    """The client of a peer address (a socket's peername or an ASGI scope's client): IPv4, or IPv6 /64."""
    host = peer[0] if isinstance(peer, (tuple, list)) and peer else str(peer or "")
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host  # a Unix socket or an unknown shape: its own client
    mapped = getattr(ip, "ipv4_mapped", None)  # a dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d
    if mapped:
        return str(mapped)
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class Tally:
    """Open connections per client, at most `cap` each (0: no cap)."""

    def __init__(self, cap: int):
        self.cap = cap
        self.open: dict[str, int] = {}

    def take(self, client: str) -> bool:
        """Count one more connection of `client`; False (not counted) when it holds `cap` already."""
        held = self.open.get(client, 0)
        if self.cap and held >= self.cap:
            return False
        self.open[client] = held + 1
        return True

    def give_back(self, client: str) -> None:
        """One connection of `client` closed."""
        held = self.open.get(client, 0) - 1
        if held > 0:
            self.open[client] = held
        else:
            self.open.pop(client, None)


class Buckets:
    """The web config's rate limit per client: one client's burst never refuses another's requests."""

    PRUNE_AT = 4096  # clients remembered before the full (idle) buckets are forgotten

    def __init__(self, interval: float, burst: int, clock: Callable[[], float] | None = None):
        self.interval, self.burst, self.clock = interval, burst, clock
        self.buckets: dict[str, TokenBucket] = {}
        self.prune_at = self.PRUNE_AT

    def take(self, client: str) -> bool:
        """Whether `client` may send a request now."""
        bucket = self.buckets.get(client)
        if bucket is None:
            if len(self.buckets) >= self.prune_at:
                self._prune()
                # Many clients all busy: the next look waits until they double (a prune stays O(1) a request).
                self.prune_at = max(self.PRUNE_AT, 2 * len(self.buckets))
            kw = {"clock": self.clock} if self.clock else {}
            bucket = self.buckets[client] = TokenBucket(self.interval, self.burst, **kw)
        return bucket.take()

    def _prune(self) -> None:
        # A bucket that refilled is as good as a new one: forgetting it changes no answer.
        for client in [c for c, b in self.buckets.items() if b.full()]:
            del self.buckets[client]


class Busy(Exception):
    """A client has as many checks waiting as it may."""


class Turns:
    """At most `workers` checks at once (bcrypt: CPU), taken in turn per client, `per_client` waiting each.

    A crowd of wrong passwords from one client waits behind itself: another client's first login
    waits for at most one check per other client, never for the whole crowd.
    """

    def __init__(self, workers: int = 2, per_client: int = 4):
        self.workers, self.per_client = workers, per_client
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="bcrypt")  # not the loop's default executor
        self.running = 0
        self.waiting: OrderedDict[str, deque[asyncio.Future]] = OrderedDict()
        self.held: dict[str, int] = {}

    async def __call__(self, client: str, run: Callable, *args):
        """`run(*args)` in a worker thread when it is `client`'s turn; Busy when it has too many waiting."""
        if self.held.get(client, 0) >= self.per_client:
            raise Busy(client)
        self.held[client] = self.held.get(client, 0) + 1
        loop = asyncio.get_running_loop()
        turn = loop.create_future()
        self.waiting.setdefault(client, deque()).append(turn)
        try:
            self._next()
            await turn
            return await loop.run_in_executor(self.pool, run, *args)
        finally:
            if turn.done() and not turn.cancelled():
                self.running -= 1  # it had its turn
            else:
                self._drop(client, turn)
            self.held[client] -= 1
            if not self.held[client]:
                del self.held[client]
            self._next()

    def _drop(self, client: str, turn: asyncio.Future) -> None:
        queue = self.waiting.get(client)
        if queue is not None and turn in queue:
            queue.remove(turn)
            if not queue:
                del self.waiting[client]

    def _next(self) -> None:
        while self.running < self.workers and self.waiting:
            client, queue = next(iter(self.waiting.items()))
            turn = queue.popleft()
            del self.waiting[client]
            if queue:
                self.waiting[client] = queue  # to the back: the next client goes first
            self.running += 1
            turn.set_result(None)
