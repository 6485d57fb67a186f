"""`healthcheck`: GET /healthz of the exporter serving with these settings (a container's HEALTHCHECK,
which then needs no curl in the image)."""

from __future__ import annotations

import http.client
import ssl

from ..config import Config, parse_listen_address

# A 401 or 429 comes from the web config's basic auth or rate limit: the listener answered, so it is alive.
ALIVE = (200, 401, 429)
# An address that listens everywhere is probed on the loopback of the same family.
LOOPBACK = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


def target(config: Config) -> tuple[str, int, bool]:
    """(host, port, TLS) of the listener `serve` opens with this config."""
    host, port = parse_listen_address(config.listen_address)
    tls = False
    if config.web_config_file:
        from . import webconfig

        web = webconfig.load(config.web_config_file)
        webconfig.forget_inline(web)  # the probe only asks whether TLS is on: no key copy left behind
        tls = web.tls is not None
    return LOOPBACK.get(host, host), port, tls


def check(config: Config, timeout: float = 4.0) -> tuple[bool, str]:
    """(alive, what was seen): one GET /healthz; over TLS the certificate is not checked (the probe
    talks to its own process, and a certificate names the service, not the loopback address)."""
    host, port, tls = target(config)
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    url = f"{'https' if tls else 'http'}://{host}:{port}/healthz"
    try:
        connection.request("GET", "/healthz")
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return False, f"{url}: {exc}"
    finally:
        connection.close()
    return status in ALIVE, f"{url}: HTTP {status}"
