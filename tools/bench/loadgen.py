"""A stdlib load generator: keep-alive http.client connections, one thread per concurrent client."""

from __future__ import annotations

import base64
import dataclasses
import http.client
import math
import ssl
import threading
import time

# What Prometheus 2.x/3.x sends on a scrape (no server here negotiates on Accept; gzip matters).
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;"
                     "version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2")


@dataclasses.dataclass(frozen=True)
class Target:
    """One scrape URL on loopback; `gzip` sends Accept-Encoding: gzip as Prometheus does."""

    port: int
    path: str = "/metrics"
    gzip: bool = True
    host: str = "127.0.0.1"
    timeout: float = 120.0
    tls_ca: str | None = None  # HTTPS, the server's certificate checked against this CA file
    auth: tuple[str, str] | None = None  # basic auth
    keep_alive: bool = True  # False: a new connection (and TLS handshake) per scrape, timed

    def headers(self) -> dict[str, str]:
        """The request headers of one scrape."""
        headers = {"Accept": PROMETHEUS_ACCEPT, "User-Agent": "Prometheus/3 (pve-datastore-exporter bench)",
                   "X-Prometheus-Scrape-Timeout-Seconds": "10"}
        headers["Accept-Encoding"] = "gzip" if self.gzip else "identity"
        if self.auth:
            headers["Authorization"] = "Basic " + base64.b64encode(":".join(self.auth).encode()).decode()
        return headers

    def connection(self) -> http.client.HTTPConnection:
        """A new (not yet connected) connection to the target."""
        if self.tls_ca:
            context = ssl.create_default_context(cafile=self.tls_ca)
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=context)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)


class ScrapeError(Exception):
    """A scrape answered something other than 200."""


class Client:
    """One keep-alive connection; reconnects after an error or a `Connection: close`."""

    def __init__(self, target: Target):
        self.target = target
        self._headers = target.headers()
        self.conn = target.connection()
        self.last: dict = {}

    def connect(self) -> None:
        """Open the TCP connection now, so the first timed scrape does not pay for it."""
        self.conn.connect()

    def scrape(self) -> float:
        """One GET, body read in full; returns the seconds it took."""
        if not self.target.keep_alive:
            self.conn.close()  # the request below connects (and shakes hands) again, inside the timing
        start = time.perf_counter()
        try:
            self.conn.request("GET", self.target.path, headers=self._headers)
            response = self.conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()  # http.client reopens it on the next request
            raise
        elapsed = time.perf_counter() - start
        if response.will_close:
            self.conn.close()
        if response.status != 200:
            raise ScrapeError(f"HTTP {response.status}: {body[:200]!r}")
        self.last = {"bytes": len(body), "content_encoding": response.getheader("Content-Encoding") or "identity",
                     "content_type": response.getheader("Content-Type"), "body": body}
        return elapsed

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


def percentile(samples: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of the samples, None when there are none."""
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


@dataclasses.dataclass
class Run:
    """The outcome of one load: every latency, the errors, the wall time."""

    clients: int
    latencies: list[float] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    wall: float = 0.0
    last: dict = dataclasses.field(default_factory=dict)

    def merge(self, other: Run) -> Run:
        """Pool two runs of the same shape (rounds of one measurement)."""
        return Run(self.clients, self.latencies + other.latencies, self.errors + other.errors,
                   self.wall + other.wall, other.last or self.last)

    def summary(self) -> dict:
        """p50/p99/mean in milliseconds, throughput in scrapes per second, counts."""
        ms = [s * 1000 for s in self.latencies]
        return {"clients": self.clients, "scrapes": len(ms), "errors": len(self.errors),
                "first_error": self.errors[0] if self.errors else None,
                "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
                "mean_ms": sum(ms) / len(ms) if ms else None,
                "throughput_per_s": len(ms) / self.wall if self.wall > 0 else None,
                "wall_s": self.wall, "body_bytes": self.last.get("bytes"),
                "content_encoding": self.last.get("content_encoding")}


def load(target: Target, clients: int, count: int, seconds: float, warmup: int = 0) -> Run:
    """`clients` threads scrape `target` until `count` scrapes were issued or `seconds` passed."""
    pool = [Client(target) for _ in range(clients)]
    run = Run(clients)
    try:
        for client in pool:
            client.connect()
        _warm(pool[0], warmup, seconds)
        issued, lock = [0], threading.Lock()
        deadline = time.perf_counter() + seconds

        def worker(client: Client) -> None:
            while True:
                with lock:
                    if issued[0] >= count or time.perf_counter() >= deadline:
                        return
                    issued[0] += 1
                try:
                    elapsed = client.scrape()
                except (OSError, http.client.HTTPException, ScrapeError) as exc:
                    with lock:
                        run.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                with lock:
                    run.latencies.append(elapsed)

        threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in pool]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(seconds + target.timeout + 5)
        run.wall = time.perf_counter() - start
        run.last = {k: v for k, v in pool[0].last.items() if k != "body"}
    finally:
        for client in pool:
            client.close()
    return run


def _warm(client: Client, warmup: int, seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    for _ in range(warmup):
        if time.perf_counter() >= deadline:
            return
        try:
            client.scrape()
        except (OSError, http.client.HTTPException, ScrapeError):
            pass


def fetch(port: int, path: str = "/metrics", gzip: bool = True) -> dict:
    """One scrape with its body and headers (for the static baseline and the sizes)."""
    client = Client(Target(port, path, gzip))
    try:
        client.scrape()
        return client.last
    finally:
        client.close()
