"""What the coordinator needs of the database, opened together: the leader's lock and the change signals."""

from __future__ import annotations

import logging

from .leader import FileLock, HeldLock, PgLock
from .notify import NoSignals, PgSignals, SqliteWatcher
from .sessions import is_sqlite, sqlite_path

log = logging.getLogger(__name__)


class AlreadyServed(Exception):
    """Another process serves this SQLite file: replicas need PostgreSQL."""


def open_coordination(url: str, holder: str) -> tuple:
    """The leader's lock and the change signals for `url`: (PgLock, PgSignals) or (HeldLock, SqliteWatcher).

    A SQLite file is served by one process: its lock file is taken here, or AlreadyServed raised.
    """
    path = sqlite_path(url)
    if not is_sqlite(url):
        return PgLock(url, holder), PgSignals(url)
    if path is None:  # an in-memory database: nobody else can see it
        return HeldLock(), NoSignals()
    lock = FileLock(path + ".lock")
    try:
        holder_seen = lock.acquire()
    except OSError as exc:  # e.g. a read-only folder: serve anyway, as before there was a lock file
        log.warning("cannot take %s.lock (%s): a second `serve` on this file would not be refused", path, exc)
        return HeldLock(), SqliteWatcher(path)
    if holder_seen is not None:
        raise AlreadyServed(f"{path} is served by another process ({holder_seen}); one `serve` per SQLite file: "
                            "for replicas use PostgreSQL (DATABASE_URL=postgresql://...)")
    return HeldLock(lock), SqliteWatcher(path)
