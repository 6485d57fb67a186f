"""The HTTP server: the WSGI app in waitress, the refresh loop beside it, until SIGTERM or SIGINT."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import resource
import signal
import time

from waitress import create_server
from waitress.channel import HTTPChannel

from .config import Config, ConfigError, parse_listen_address
from .poller import Poller
from .service import Service
from .web import create_wsgi

log = logging.getLogger("pve_datastore_exporter")

HTTP_THREADS = 8
# A client that opens connections and drips a header line every few seconds (slowloris) costs
# waitress a socket and a buffer, never a thread: its channels read asynchronously. What it can
# exhaust is the connection limit, so the limit is sized well above any honest load and every
# request must arrive whole within REQUEST_DEADLINE seconds of its first byte.
CONNECTION_LIMIT = 1000
REQUEST_DEADLINE = 10
IDLE_TIMEOUT = 60  # a kept-alive connection with no request (Prometheus reconnects when it must)


class _DeadlineChannel(HTTPChannel):
    """A waitress channel that remembers when the request it is still reading began."""

    request_started: float | None = None

    def received(self, data):
        """Parse as waitress does, timing each request from its first byte to its last."""
        if data and self.request is None:
            self.request_started = time.monotonic()
        result = super().received(data)
        if self.request is None:
            self.request_started = None
        return result


def _close_late_requests(server, deadline: float):
    """Waitress's idle cleanup, plus: close channels whose request is not whole after `deadline`."""
    idle_cleanup = server.maintenance

    def maintenance(now: float) -> None:
        idle_cleanup(now)
        late = time.monotonic() - deadline
        for channel in list(server.active_channels.values()):
            started = getattr(channel, "request_started", None)
            if not channel.requests and started is not None and started < late:
                channel.will_close = True
    return maintenance


def raise_open_files_limit(wanted: int = CONNECTION_LIMIT + 100) -> None:
    """Raise the soft limit of open files to what the connection limit needs (the hard limit allowing)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard))


def http_server(app, host: str, port: int, threads: int = HTTP_THREADS,
                request_deadline: float = REQUEST_DEADLINE, **adjustments):
    """The waitress server every `serve` (and the in-process tests) runs the app in."""
    server = create_server(app, host=host, port=port, threads=threads, ident="pve-datastore-exporter",
                           clear_untrusted_proxy_headers=True, connection_limit=CONNECTION_LIMIT,
                           channel_timeout=IDLE_TIMEOUT, cleanup_interval=1, asyncore_use_poll=True,
                           # waitress's own cap cuts a huge upload early; up to it, the app answers 413
                           max_request_body_size=1024 * 1024, **adjustments)
    # One listening socket here, so one TcpWSGIServer: its channels and its cleanup are ours.
    server.channel_class = _DeadlineChannel
    server.maintenance = _close_late_requests(server, request_deadline)
    return server


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas before any thread starts (as MALLOC_ARENA_MAX=2 would).

    A refresh runs on whichever of the HTTP threads asked for it; with one arena per thread, the
    memory each refresh frees piles up per thread (100 nodes x 100 datastores: ~93 MB instead of ~71).
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def serve(config: Config, ready=None) -> int:
    """Refresh in the background and serve HTTP until SIGTERM or SIGINT."""
    limit_malloc_arenas()
    if not config.proxmox_verify_ssl:
        log.warning("PROXMOX_VERIFY_SSL=false: the cluster's TLS certificate is not checked"
                    + (" (PROXMOX_CA_BUNDLE is ignored)" if config.proxmox_ca_bundle else ""))
    service = Service(config)
    service.start()
    poller = Poller(service, config.refresh_interval)
    host, port = parse_listen_address(config.listen_address)
    raise_open_files_limit()
    try:
        server = http_server(create_wsgi(service, config, refresh_waiters=HTTP_THREADS // 2), host, port)
    except OSError as exc:
        raise ConfigError(f"EXPORTER_LISTEN_ADDRESS: cannot listen on {config.listen_address}: {exc.strerror}") from None
    poller.start()
    every = f"every {config.refresh_interval}s" if config.refresh_interval else "on demand only"
    log.info("serving on http://%s:%d (refresh %s)", host, port, every)
    if ready:
        ready(server)
    _stop_on_signals()
    try:
        server.run()  # returns when a signal raises KeyboardInterrupt inside its loop
    except KeyboardInterrupt:
        pass
    finally:
        log.info("stopping")
        poller.stop()
        server.close()
    return 0


def _stop_on_signals() -> None:
    def stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
