"""Basic auth and the rate limit of the web config, as plain objects the front (front.py) asks.

The one importer of bcrypt, when a web config has users (`load_bcrypt`, at start): the web config
(webconfig.py) only parses the hashes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import threading
import time
from collections.abc import Callable

from ..config import ConfigError

REALM = 'Basic realm="pve-datastore-exporter", charset="UTF-8"'
DUMMY_HASH = b"$2b$10$" + b"." * 53  # checked for an unknown user, so that it costs the time a known one does


def load_bcrypt():
    """bcrypt, or ConfigError in one line: imported only when basic auth is configured (~0.5 MB otherwise unused)."""
    try:
        import bcrypt
    except ImportError as exc:
        raise ConfigError(f"basic_auth_users in the web config needs bcrypt, which cannot be loaded ({exc})") from None
    return bcrypt


def check_password(users: dict[str, bytes], user: str, password: bytes) -> bool:
    """bcrypt's verdict; an unknown user costs the same time as a known one."""
    hashed = users.get(user, DUMMY_HASH)
    try:
        ok = load_bcrypt().checkpw(password, hashed)
    except ValueError:  # e.g. a NUL byte in the password
        return False
    return ok and user in users


class TokenBucket:
    """exporter-toolkit's rate_limit: one request per `interval` seconds, bursts up to `burst`."""

    def __init__(self, interval: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.interval, self.burst, self.clock = interval, burst, clock
        self.tokens, self.stamp = float(burst), clock()
        self.lock = threading.Lock()

    def take(self) -> bool:
        """Whether a request may go now."""
        with self.lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) / self.interval)
            self.stamp = now
            if self.tokens < 1:
                return False
            self.tokens -= 1
            return True


class BasicAuth:
    """Checks `Authorization: Basic`; a password once verified is remembered as a hash, per user.

    bcrypt at cost 10 takes ~70 ms: a scrape every 15 s must not pay it each time. The cache holds
    one SHA-256 per user, compared in constant time; a changed password simply misses it.
    """

    def __init__(self, users: dict[str, bytes]):
        load_bcrypt()  # at start: a missing bcrypt is a configuration error, not a 500 at the first login
        self.users = users
        self._verified: dict[str, bytes] = {}

    @staticmethod
    def _credentials(header: str) -> tuple[str, bytes, bytes] | None:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            raw = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        name, colon, password = raw.partition(b":")
        if not colon:
            return None
        return name.decode("utf-8", "replace"), password, hashlib.sha256(name + b"\0" + password).digest()

    def _known(self, user: str, digest: bytes) -> bool:
        known = self._verified.get(user)
        return known is not None and hmac.compare_digest(known, digest)

    def remembered(self, header: str) -> str | None:
        """The user if this password was verified before (cheap: no bcrypt), else None."""
        found = self._credentials(header)
        return found[0] if found and self._known(found[0], found[2]) else None

    def user(self, header: str) -> str | None:
        """The authenticated user name, or None (bcrypt unless remembered)."""
        found = self._credentials(header)
        if found is None:
            return None
        user, password, digest = found
        if self._known(user, digest):
            return user
        if not check_password(self.users, user, password):
            return None
        self._verified[user] = digest
        return user
