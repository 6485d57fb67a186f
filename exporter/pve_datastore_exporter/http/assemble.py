"""The HTTP stack put together for `serve`: the web config, TLS, the socket, the front over the app."""

from __future__ import annotations

import logging
import resource
import socket
import ssl

from ..config import Config, ConfigError, parse_listen_address
from ..metrics import Exposition
from ..service import Service
from . import policy, webconfig
from .app import create_app
from .front import Front, with_user
from .listener import HTTP_THREADS, listening_socket, wsgi_pool
from .tls import CertificateWatcher, server_context

log = logging.getLogger("pve_datastore_exporter")

OPEN_FILES = 4096  # connections cost a descriptor each; slow clients may hold many at once


def build_front(service: Service, config: Config, web_config: webconfig.WebConfig | None = None,
                exposition: Exposition | None = None, threads: int = HTTP_THREADS) -> Front:
    """The whole HTTP app: the front (guard, /metrics) over the Flask app in `threads` threads."""
    exposition = exposition or Exposition()
    service.subscribe(exposition)
    # At most half the threads wait for a refresh: the page and the API always find one free.
    app = create_app(service, config, refresh_waiters=max(threads // 2, 1))
    return Front(wsgi_pool(with_user(app), threads), exposition, web_config)


def tls_for(web_config: webconfig.WebConfig | None) -> tuple[ssl.SSLContext | None, CertificateWatcher | None]:
    """The TLS context and its watcher when the web config asks for TLS; ConfigError on bad files."""
    if web_config is None or web_config.tls is None:
        return None, None
    try:
        context = server_context(web_config.tls)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"web config {web_config.path}: the certificate, key or CA cannot be used ({exc})") from None
    return context, CertificateWatcher(context, web_config.tls)


def load_web_config(config: Config):
    """The web config, its TLS context and certificate watcher (None when unset); errors stop start-up."""
    web_config = webconfig.load(config.web_config_file) if config.web_config_file else None
    context, watcher = tls_for(web_config)
    if web_config:
        log.info("web config %s: %s", config.web_config_file, web_config.summary())
        if policy.token_unused(bool(web_config.users), config.api_token):
            log.warning("EXPORTER_API_TOKEN is not used while basic auth is on: writers are EXPORTER_WRITE_USERS")
    return web_config, context, watcher


def raise_open_files_limit(wanted: int = OPEN_FILES) -> None:
    """Raise the soft limit of open files to `wanted` (the hard limit allowing)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard))


def listen(config: Config) -> socket.socket:
    """The listening socket of EXPORTER_LISTEN_ADDRESS, with room for many connections; ConfigError if busy."""
    host, port = parse_listen_address(config.listen_address)
    raise_open_files_limit()
    try:
        return listening_socket(host, port)
    except OSError as exc:
        raise ConfigError(f"EXPORTER_LISTEN_ADDRESS: cannot listen on {config.listen_address}: {exc.strerror}") from None
