"""The listener's TLS context, and its certificate re-read in place when the files change."""

from __future__ import annotations

import logging
import os
import ssl
import threading

from .webconfig import Tls

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


class CertificateWatcher:
    """Re-reads the certificate, key and client CA into the same context when their files change.

    OpenSSL uses what a context holds at each handshake, so a renewal (certbot, step-ca: files
    replaced in place) reaches the next connection with no restart; open connections keep theirs.
    A half-written renewal (a key that does not match yet) keeps the old pair and is retried.
    """

    def __init__(self, context: ssl.SSLContext, tls: Tls, every: float = 1.0):
        self.context, self.tls, self.every = context, tls, every
        self._files = [f for f in (tls.cert_file, tls.key_file, tls.ca_file) if f]
        self._seen = self._stamps()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tls-reload", daemon=True)
        self.reloads = 0

    def _stamps(self) -> list[tuple]:
        return [_stamp(f) for f in self._files]

    def start(self) -> None:
        """Watch in a daemon thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.check()

    def check(self) -> bool:
        """Reload if a file changed since the last good load; True when it did."""
        stamps = self._stamps()
        if stamps == self._seen:
            return False
        try:
            self.context.load_cert_chain(self.tls.cert_file, self.tls.key_file)
            if self.tls.ca_file:
                self.context.load_verify_locations(cafile=self.tls.ca_file)
        except (ssl.SSLError, OSError) as exc:
            log.warning("TLS certificate changed but cannot be loaded yet, keeping the old one: %s", exc)
            return False
        self._seen = stamps
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.tls.cert_file)
        return True
