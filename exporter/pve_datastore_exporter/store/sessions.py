"""Connections beside peewee's: the PostgreSQL sessions of the leader's lock and of the change signals.

psycopg2 is imported here (and only when PostgreSQL is configured: it is an optional extra).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlparse

# Every failure of a dedicated session is detected within seconds, from both ends:
# - this side: keepalives on an idle connection, tcp_user_timeout on unacknowledged data (a query
#   sent into a dead network), connect_timeout on a host that does not answer;
# - the server's side (the `options`): its keepalives end the session of a host that is gone, which
#   releases the leader's advisory lock; statement_timeout bounds a query that waits on a lock.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 2,
              "tcp_user_timeout": 8000}
SESSION = {"connect_timeout": 3, **KEEPALIVES, "application_name": "pve-datastore-exporter",
           "options": "-c statement_timeout=3000 -c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 "
                      "-c tcp_keepalives_count=2 -c tcp_user_timeout=8000"}
# The store's own connections (one per call): a database host that is gone fails a call in seconds.
MAIN = {"connect_timeout": 3, **KEEPALIVES}


class SessionError(Exception):
    """A dedicated session cannot be opened, or has ended: its lock and its notifications are gone."""


def is_sqlite(url: str) -> bool:
    """True for a sqlite:// URL (a file or memory), False for PostgreSQL: the one test of which database it is."""
    return urlparse(url).scheme.startswith("sqlite")


def sqlite_path(url: str) -> str | None:
    """The file of a sqlite:/// URL (relative to the working directory), None for another database or memory."""
    if not is_sqlite(url) or ":///" not in url:
        return None
    path = url.split(":///", 1)[1]
    return path if path and path != ":memory:" else None


def with_defaults(url: str, defaults: dict) -> dict:
    """`defaults` without the parameters the URL's query sets itself (the operator's word wins)."""
    given = dict(parse_qsl(urlparse(url).query))
    extra = {k: v for k, v in defaults.items() if k not in given}
    if "options" in given and "options" in defaults:
        extra["options"] = f"{defaults['options']} {given['options']}"
    return extra


def pg_params(url: str, defaults: dict) -> dict:
    """The connection's parameters in a postgresql:// URL, then `defaults` for those it does not set: the one parser
    of the URL, so the store's connections and the dedicated sessions log in alike. The user and password are
    percent-decoded as libpq does (%40 is @)."""
    from playhouse.db_url import parseresult_to_dict

    # A password with / ? # cannot stand in a URL as it is: percent-encoding is the only way to write it.
    return {**parseresult_to_dict(urlparse(url), unquote_password=True, unquote_user=True), **with_defaults(url, defaults)}


def pg_connect(url: str):
    """A new autocommit psycopg2 session for `url`, with SESSION's timeouts; SessionError when it fails."""
    import psycopg2

    try:
        conn = psycopg2.connect(**pg_params(url, SESSION))
    except psycopg2.Error as exc:
        raise SessionError(f"cannot open a database session: {first_line(exc)}") from None
    conn.autocommit = True
    return conn


def first_line(exc: BaseException) -> str:
    """A driver's error in one line (psycopg2's carry the server's DETAIL and HINT on further lines)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def driver_error():
    """psycopg2.Error: what a dedicated session raises."""
    import psycopg2

    return psycopg2.Error
