"""`serve`'s lifecycle: start the HTTP stack (http/), the refresh loop and the replicas' coordination;
stop them on SIGTERM or SIGINT."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading

from . import coordination, i18n
from .config import Config
from .http.assemble import build_front, build_server, listen, load_web_config
from .poller import Poller
from .service import Service

log = logging.getLogger("pve_datastore_exporter")


M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # glibc's mallopt parameters
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value, kept fixed


def tune_malloc(arenas: int = 2, mmap_threshold: int = MMAP_THRESHOLD) -> None:
    """Cap glibc's malloc arenas and fix its mmap threshold, before any thread starts (as the
    MALLOC_ARENA_MAX and MALLOC_MMAP_THRESHOLD_ variables would; set, they win).

    A refresh runs on whichever of the HTTP threads asked for it; with one arena per thread, the
    memory each refresh frees piles up per thread (100 nodes x 100 datastores: ~93 MB instead of ~71).
    glibc raises the threshold to the size of each large block freed (up to 32 MB), so a refresh's
    multi-MB buffers (the answer, the exposition's text) would later come from the heap and stay
    there; fixed, every block over 128 kB is its own mapping, unmapped when freed (~7 MB at the same
    size, docs/architecture.md#memory).
    """
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return  # not glibc: nothing to tune
    if not os.environ.get("MALLOC_ARENA_MAX"):
        mallopt(M_ARENA_MAX, arenas)
    if not os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        mallopt(M_MMAP_THRESHOLD, mmap_threshold)


def _libc_function(name: str):
    """A function of glibc, or None on another C library."""
    try:
        return getattr(ctypes.CDLL(None), name)  # the process's own symbols: the C library it runs on
    except (OSError, AttributeError):
        return None


class MemoryReturn:
    """A Display subscriber: after a change, glibc hands the heap a refresh freed back to the system.

    Python frees a refresh's parsed answer and old view, but glibc keeps the free pages of its heap
    until told: malloc_trim(0) returns them (with the fixed mmap threshold above, ~1 MB at 100 nodes x
    100 datastores; ~8 MB without it, docs/architecture.md#memory). It runs once the refresh has
    returned (a second later, in a short thread of its own).
    """

    def __init__(self, delay: float = 1.0):
        self.delay = delay
        self._trim = _libc_function("malloc_trim")
        self._pending = threading.Lock()

    def __call__(self, view, event: str) -> None:
        if self._trim and self._pending.acquire(blocking=False):  # one pending trim covers every change before it
            timer = threading.Timer(self.delay, self._run)
            timer.daemon = True
            timer.start()

    def _run(self) -> None:
        self._pending.release()
        self._trim(0)


def serve(config: Config, ready=None) -> int:
    """Refresh in the background and serve HTTP until SIGTERM or SIGINT."""
    tune_malloc()
    if not config.proxmox_verify_ssl:
        log.warning("PROXMOX_VERIFY_SSL=false: the cluster's TLS certificate is not checked"
                    + (" (PROXMOX_CA_BUNDLE is ignored)" if config.proxmox_ca_bundle else ""))
    i18n.require_babel()  # imported at its first use: a missing one fails here, not at the first Korean request
    web_config, context, watcher = load_web_config(config)
    sock = listen(config)

    coordinator = coordination.for_serving(config)  # ConfigError when another process serves the SQLite file
    service = Service(config, coordinator=coordinator)
    service.start()
    service.subscribe(MemoryReturn())
    poller = Poller(service, config.refresh_interval, leads=coordinator.leads)
    server = build_server(build_front(service, config, web_config), sock, context, config)  # before any thread starts
    poller.start()
    service.node_reads.start()
    coordinator.start(prepare=service.init_db, follow=service.display.follow,
                      role_changed=service.display.announce_role, refresh_now=poller.poke, took_lead=poller.take_over)
    if watcher:
        watcher.start(server)  # the web config re-read when it changes
    every = f"every {config.refresh_interval}s" if config.refresh_interval else "on demand only"
    log.info("serving on %s://%s (refresh %s)", server.scheme, config.listen_address, every)
    if ready:
        ready(server)
    # uvicorn stops on SIGTERM/SIGINT, then raises the signal again with the handler found before:
    # a harmless one, so that the clean-up below runs.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        log.info("stopping")
        poller.stop()
        service.node_reads.stop()
        coordinator.stop()  # releases the lock: another replica leads within a second
        if watcher:
            watcher.stop()
        sock.close()
    return 0
