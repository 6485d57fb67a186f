"""`serve`'s lifecycle: start the HTTP stack (http/), the refresh loop and the replicas' coordination;
stop them on SIGTERM or SIGINT."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal

from . import coordination
from .config import Config
from .http.assemble import build_front, build_server, listen, load_web_config
from .poller import Poller
from .service import Service

log = logging.getLogger("pve_datastore_exporter")


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
    web_config, context, watcher = load_web_config(config)
    sock = listen(config)

    coordinator = coordination.for_serving(config)  # ConfigError when another process serves the SQLite file
    service = Service(config, coordinator=coordinator)
    service.start()
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
