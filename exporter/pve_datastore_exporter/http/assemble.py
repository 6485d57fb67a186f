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
from .guard import mixed_costs
from .listener import HTTP_THREADS, HttpServer, Limits, listening_socket, wsgi_pool
from .tls import WebConfigWatcher, usable

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


def build_server(front: Front, sock: socket.socket, context: ssl.SSLContext | None, config: Config) -> HttpServer:
    """The listener over `front`, with EXPORTER_MAX_CONNECTIONS_PER_CLIENT, its early closings counted."""
    return HttpServer(front, sock, context, limits=Limits(per_client=config.max_connections_per_client),
                      count=front.exposition.count_closed)


def load_web_config(config: Config):
    """The web config, its TLS context and its watcher (None when unset); errors stop start-up."""
    web_config = webconfig.load(config.web_config_file) if config.web_config_file else None
    if web_config is None:
        return None, None, None
    context = usable(web_config)
    log.info("web config %s: %s", config.web_config_file, web_config.summary())
    if mixed_costs(web_config.users):
        log.warning("web config %s: the bcrypt hashes differ in cost, so response times tell the cheaper users' "
                    "names from unknown ones: give every user the same cost", config.web_config_file)
    if policy.token_unused(bool(web_config.users), config.api_token):
        log.warning("EXPORTER_API_TOKEN is not used while basic auth is on: writers are EXPORTER_WRITE_USERS")
    return web_config, context, WebConfigWatcher(web_config)


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
