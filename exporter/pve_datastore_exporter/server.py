"""`serve`: the listener, the refresh loop and the replicas' coordination, until SIGTERM or SIGINT."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import resource
import signal
import ssl

from . import coordination, webconfig
from .config import Config, ConfigError, parse_listen_address
from .front import Front, with_user
from .listener import HTTP_THREADS, HttpServer, listening_socket, wsgi_pool
from .metrics import Exposition
from .poller import Poller
from .service import Service
from .tls import CertificateWatcher, server_context
from .web import create_app

log = logging.getLogger("pve_datastore_exporter")

OPEN_FILES = 4096  # connections cost a descriptor each; slow clients may hold many at once


def raise_open_files_limit(wanted: int = OPEN_FILES) -> None:
    """Raise the soft limit of open files to `wanted` (the hard limit allowing)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard))


def build_front(service: Service, config: Config, web: webconfig.WebConfig | None = None,
                exposition: Exposition | None = None, threads: int = HTTP_THREADS) -> Front:
    """The whole HTTP app: the front (guard, /metrics) over the Flask app in `threads` threads."""
    exposition = exposition or Exposition()
    service.subscribe(exposition)
    # At most half the threads wait for a refresh: the page and the API always find one free.
    app = create_app(service, config, refresh_waiters=max(threads // 2, 1))
    return Front(wsgi_pool(with_user(app), threads), exposition, web)


def tls_for(web: webconfig.WebConfig | None) -> tuple[ssl.SSLContext | None, CertificateWatcher | None]:
    """The TLS context and its watcher when the web config asks for TLS; ConfigError on bad files."""
    if web is None or web.tls is None:
        return None, None
    try:
        context = server_context(web.tls)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"web config {web.path}: the certificate, key or CA cannot be used ({exc})") from None
    return context, CertificateWatcher(context, web.tls)


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


def _web(config: Config):
    """The web config, its TLS context and certificate watcher (None when unset); errors stop start-up."""
    web = webconfig.load(config.web_config_file) if config.web_config_file else None
    context, watcher = tls_for(web)
    if web:
        log.info("web config %s: %s", config.web_config_file, web.summary())
        if web.users and config.api_token:
            log.warning("EXPORTER_API_TOKEN is not used while basic auth is on: writers are EXPORTER_WRITE_USERS")
    return web, context, watcher


def _listen(config: Config):
    host, port = parse_listen_address(config.listen_address)
    raise_open_files_limit()
    try:
        return listening_socket(host, port)
    except OSError as exc:
        raise ConfigError(f"EXPORTER_LISTEN_ADDRESS: cannot listen on {config.listen_address}: {exc.strerror}") from None


def serve(config: Config, ready=None) -> int:
    """Refresh in the background and serve HTTP until SIGTERM or SIGINT."""
    limit_malloc_arenas()
    if not config.proxmox_verify_ssl:
        log.warning("PROXMOX_VERIFY_SSL=false: the cluster's TLS certificate is not checked"
                    + (" (PROXMOX_CA_BUNDLE is ignored)" if config.proxmox_ca_bundle else ""))
    web, context, watcher = _web(config)
    sock = _listen(config)
    coordinator = coordination.for_serving(config)  # ConfigError when another process serves the SQLite file
    service = Service(config, coordinator=coordinator)
    service.start()
    poller = Poller(service, config.refresh_interval, leads=coordinator.leads)
    server = HttpServer(build_front(service, config, web), sock, context)
    poller.start()
    coordinator.start(service, refresh_now=poller.poke, on_lead=poller.take_over)
    if watcher:
        watcher.start()
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
        coordinator.stop()  # releases the lock: another replica leads within a second
        if watcher:
            watcher.stop()
        sock.close()
    return 0
