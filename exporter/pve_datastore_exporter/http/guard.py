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


def load_bcrypt():
    """bcrypt, or ConfigError in one line: imported only when basic auth is configured (~0.5 MB otherwise unused)."""
    try:
        import bcrypt
    except ImportError as exc:
        raise ConfigError(f"basic_auth_users in the web config needs bcrypt, which cannot be loaded ({exc})") from None
    return bcrypt


def dummy_hash(users: dict[str, bytes]) -> bytes:
    """A hash nobody's password matches, at the highest cost of the configured ones (10 when none).

    Checked for an unknown user, so that it costs what a known user's check does: bcrypt's time
    is set by the cost alone (cost 5: ~3 ms, 10: ~70 ms, 12: ~250 ms).
    """
    cost = max((int(hashed[4:6]) for hashed in users.values()), default=10)
    return b"$2b$%02d$" % cost + b"." * 53


def mixed_costs(users: dict[str, bytes]) -> bool:
    """Whether the hashes differ in cost: then timing tells a cheaper user's name from an unknown one."""
    return len({hashed[4:6] for hashed in users.values()}) > 1


def check_password(users: dict[str, bytes], user: str, password: bytes, dummy: bytes | None = None) -> bool:
    """bcrypt's verdict; an unknown user costs what a known one does (the dummy hash's cost)."""
    hashed = users.get(user) or dummy or dummy_hash(users)
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

    def full(self) -> bool:
        """Whether the bucket has refilled (as good as a new one)."""
        with self.lock:
            return self.tokens + (self.clock() - self.stamp) / self.interval >= self.burst

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
    one SHA-256 per user beside the bcrypt hash it was verified against, compared in constant
    time: a changed password or a removed user (a re-read web config) is never let in from it.
    """

    def __init__(self, users: dict[str, bytes], check: Callable[..., bool] = check_password,
                 remembered_from: BasicAuth | None = None):
        load_bcrypt()  # at start: a missing bcrypt is a configuration error, not a 500 at the first login
        self.users, self.check = users, check
        self.dummy = dummy_hash(users)
        # A re-read web config keeps what was verified against the same hash: no bcrypt storm.
        self._verified: dict[str, tuple[bytes, bytes]] = {
            user: entry for user, entry in (remembered_from._verified if remembered_from else {}).items()
            if users.get(user) == entry[0]}

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
        hashed, known = self._verified.get(user, (None, None))
        return known is not None and hashed == self.users.get(user) and hmac.compare_digest(known, digest)

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
        hashed = self.users.get(user)
        if not self.check(self.users, user, password, self.dummy):
            return None
        self._verified[user] = (hashed, digest)
        return user
