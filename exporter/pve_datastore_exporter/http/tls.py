"""The listener's TLS context, and the web config re-read whole when it or a file it names changes."""

from __future__ import annotations

import logging
import os
import ssl
import threading
from collections.abc import Callable

from ..config import ConfigError
from . import webconfig
from .webconfig import Tls, WebConfig

log = logging.getLogger(__name__)

DEFAULT_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def server_context(tls: Tls) -> ssl.SSLContext:
    """A server SSLContext with the web config's policy; raises ssl.SSLError/OSError on bad files."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version, context.maximum_version = tls.min_version, tls.max_version
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if tls.prefer_server_ciphers:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    # Unless told otherwise, forward-secret AEAD suites only for TLS 1.2 (no CBC: Lucky13 and kin).
    context.set_ciphers(tls.ciphers or DEFAULT_CIPHERS)
    if tls.curve:
        context.set_ecdh_curve(tls.curve)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    context.verify_mode = tls.verify_mode
    if tls.ca_file:
        context.load_verify_locations(cafile=tls.ca_file)
    return context


def _stamp(path: str) -> tuple:
    try:
        stat = os.stat(path)
    except OSError:
        return ()
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def usable(web: WebConfig) -> ssl.SSLContext | None:
    """A new TLS context for `web` (None without TLS); raises ConfigError naming what cannot be used.

    Always a new context: loading into the one in use would add a new client CA to the old one
    (a removed CA stays trusted) and drop the key of a half-written renewal (every handshake fails).
    """
    try:
        return server_context(web.tls) if web.tls else None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"web config {web.path}: the certificate, key or CA cannot be used ({exc})") from None
    finally:
        webconfig.forget_inline(web)  # OpenSSL has read them: inline PEM lives only in the context


class WebConfigWatcher:
    """Re-reads the web config, whole, when it or a file it names changes; applies all of it or none.

    A certificate renewal (certbot, step-ca: files replaced in place), a new client CA, a user or a
    header reach the next connection or request with no restart; open connections keep their TLS
    session. A change that cannot be used (a half-written renewal, a YAML error) keeps the config
    in force, says why once in the log and sets pve_datastore_web_config_last_reload_successful 0.
    """

    def __init__(self, web: WebConfig, every: float = 1.0):
        self.current, self.every = web, every
        self._seen = self._stamps(web)
        self._failure: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="web-config-reload", daemon=True)
        self.apply: Callable[[WebConfig, ssl.SSLContext | None], None] = lambda web, context: None
        self.reloaded: Callable[[bool], None] = lambda ok: None
        self.reloads = 0

    @staticmethod
    def _stamps(web: WebConfig) -> list[tuple]:
        files = [web.path] + ([f for f in (web.tls.cert_file, web.tls.key_file, web.tls.ca_file)
                               if f and f not in web.tls.inline] if web.tls else [])
        return [(f, _stamp(f)) for f in files]

    def start(self, server) -> None:
        """Watch in a daemon thread; each good change swaps `server`'s TLS context and its front's rules."""
        def apply(web: WebConfig, context: ssl.SSLContext | None) -> None:
            if context is not None:
                server.context = context  # one assignment: a handshake sees the old context or the new
            server.front.configure(web)
        self.apply = apply
        exposition = getattr(server.front, "exposition", None)
        if exposition is not None:
            self.reloaded = lambda ok: exposition.web_config_reloaded.set(1 if ok else 0)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.check()

    def check(self) -> bool:
        """Re-read and apply the file if it or a file it names changed; True when a new config is in force."""
        if self._stamps(self.current) == self._seen and self._failure is None:
            return False
        try:
            web = webconfig.load(self.current.path)
            context = usable(web)
            if (web.tls is None) != (self.current.tls is None):
                raise ConfigError(f"web config {web.path}: TLS can be turned on or off only by a restart")
        except ConfigError as exc:
            if str(exc) != self._failure:  # said once, tried again every second until it can be used
                log.warning("%s; the web config in force is kept", exc)
                self._failure = str(exc)
            self.reloaded(False)
            return False
        self.apply(web, context)
        self.current, self._seen, self._failure = web, self._stamps(web), None
        self.reloads += 1
        self.reloaded(True)
        log.info("web config %s reloaded: %s", web.path, web.summary())
        return True
