"""Who may write (refresh, change the defaults): one pure function of a request's plain facts.

Reads are open, as exporters' are. A write needs, in this order: no other site's Origin (CSRF);
with basic auth on (the web config), an authenticated user listed in EXPORTER_WRITE_USERS (a
scrape credential alone never changes defaults); else the bearer token when EXPORTER_API_TOKEN is
set; else a loopback client that names this machine by a loopback name.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import NamedTuple

from ..answers import N_

READS = frozenset({"GET", "HEAD", "OPTIONS"})


class Refusal(NamedTuple):
    """Why a write is refused: a status, a machine code and the sentence (translated where it is answered)."""

    status: int
    code: str
    message: str  # the English source text; its %(name)s placeholders are filled from `values`
    values: tuple[tuple[str, str], ...] = ()

    def english(self) -> str:
        """The sentence in English, its placeholders filled."""
        return self.message % dict(self.values)


CROSS_SITE = Refusal(403, "forbidden", N_("Cross-site requests are refused; call the API directly or use its page."))
NOT_LOOPBACK = Refusal(403, "forbidden", N_("Changes are accepted from loopback only (Host localhost or a loopback "
                                            "address) while EXPORTER_API_TOKEN is not set."))
NO_TOKEN = Refusal(401, "unauthorized", N_("A valid 'Authorization: Bearer <token>' header is required."))
READER = N_("User %(user)s may read but not change anything: list it in EXPORTER_WRITE_USERS.")


def writers(write_users: str) -> frozenset[str]:
    """EXPORTER_WRITE_USERS (a comma list, checked by config.py) as a set, parsed once at start."""
    return frozenset(name for name in write_users.split(",") if name)


def token_required(basic_auth: bool, api_token: str) -> bool:
    """Whether writers must send the bearer token: with basic auth the browser's own credentials authorise writes."""
    return bool(api_token) and not basic_auth


def token_unused(basic_auth: bool, api_token: str) -> bool:
    """Whether a configured token goes unused (basic auth decides the writers): said once at start."""
    return bool(api_token) and basic_auth


def refusal(*, method: str, origin: str | None, host: str, host_url: str, remote_addr: str | None,
            user: str | None, basic_auth: bool, writers: frozenset[str], api_token: str,
            authorization: str) -> Refusal | None:
    """Why this request may not write, or None when it may (every read may)."""
    if method.upper() in READS:
        return None
    if origin and origin.rstrip("/") != host_url.rstrip("/"):
        # A browser on the exporter's host must not let another site change the defaults (CSRF).
        return CROSS_SITE
    if basic_auth:
        # Basic auth (the web config) is on: a user who may scrape may not change defaults by that alone.
        return None if user is not None and user in writers else Refusal(403, "forbidden", READER, (("user", repr(user)),))
    if not api_token:
        # Loopback clients only, and by a loopback name: a rebound DNS name that resolves to
        # 127.0.0.1 carries the attacker's Host header and is refused.
        return None if is_loopback(remote_addr) and local_host_header(host) else NOT_LOOPBACK
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_token.encode()):
        return NO_TOKEN
    return None


def is_loopback(address: str | None) -> bool:
    """True for a loopback address, ::ffff:127.0.0.1 (a dual-stack listener's) and a scoped ::1 included."""
    try:
        ip = ipaddress.ip_address((address or "").split("%")[0])
    except ValueError:
        return False
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback


def local_host_header(host: str) -> bool:
    """True when the Host header names this machine by a loopback name or address."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]").lower().rstrip(".")
    # Not *.localhost: a name only a resolver decides about is not a loopback name.
    return name == "localhost" or is_loopback(name)
