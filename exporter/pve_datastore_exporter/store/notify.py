"""How a replica hears of a change another process committed: PostgreSQL's LISTEN, SQLite's data_version.

Every write raises the `generation` row in its own transaction (store/__init__.py) and, on
PostgreSQL, sends NOTIFY on CHANGES with the new number; a follower that asks for a refresh sends
NOTIFY on REFRESH. The coordinator takes a notification's generation as it comes; a notification
can be lost (the listening session was down when it was sent), so the generation row itself is the
truth: the coordinator reads it after every reconnect and every few seconds anyway.
"""

from __future__ import annotations

import contextlib
import os
import select
import sqlite3
import time
from urllib.request import pathname2url

from .sessions import SessionError, driver_error, first_line, pg_connect

CHANGES = "pve_datastore_changes"  # payload: the new generation
REFRESH = "pve_datastore_refresh"  # a follower asks the leader to refresh now
GENERATION = "SELECT value FROM generation WHERE id = 1"  # the one read of it, the Store's too


class PgSignals:
    """LISTEN on a session of its own: the changes other replicas commit (with their generation), and requests for a refresh."""

    def __init__(self, url: str, connect=pg_connect):
        self._url, self._connect = url, connect
        self._conn = None

    def wait(self, timeout: float) -> list[tuple[str, str]]:
        """The notifications within `timeout` s as (channel, payload); SessionError when the session is gone.

        Right after (re)connecting it reports a change: whatever was committed unheard must be looked at.
        """
        found = []
        if self._conn is None:
            self._conn = self._connect(self._url)
            self._execute(f"LISTEN {CHANGES}; LISTEN {REFRESH}")
            found.append((CHANGES, ""))
        try:
            if not self._conn.notifies and select.select([self._conn], [], [], timeout)[0]:
                self._conn.poll()
        except (driver_error(), OSError, ValueError) as exc:
            self.close()
            raise SessionError(f"the listening session ended: {first_line(exc)}") from None
        found += [(n.channel, n.payload) for n in self._conn.notifies]
        self._conn.notifies.clear()
        return found

    def generation(self) -> int:
        """The generation the database holds now (0 before the first write)."""
        row = self._execute(GENERATION)
        return row[0] if row else 0

    def close(self) -> None:
        """End the session."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _execute(self, sql: str):
        if self._conn is None:
            raise SessionError("the listening session is closed")
        try:
            with self._conn.cursor() as cursor:
                cursor.execute(sql)
                return cursor.fetchone() if cursor.description else None
        except driver_error() as exc:
            self.close()
            raise SessionError(f"the listening session ended: {first_line(exc)}") from None


class NoSignals:
    """Nothing to hear: a database no other process can open (SQLite in memory)."""

    def __init__(self, sleep=time.sleep):
        self._sleep = sleep

    def wait(self, timeout: float) -> list[tuple[str, str]]:
        """Nothing, after `timeout` s."""
        self._sleep(timeout)
        return []

    def generation(self) -> int:
        """Never compared: nobody else writes."""
        return 0

    def close(self) -> None:
        """Nothing to close."""


class SqliteWatcher:
    """Changes another process committed to a SQLite file (the `set-default` command): PRAGMA data_version.

    data_version changes when another connection commits; it is read on one connection kept open,
    every `timeout` seconds: a query on a page SQLite already holds, with no lock and no file read.
    A file replaced under us (a new inode) is opened anew.
    """

    def __init__(self, path: str, sleep=time.sleep):
        self._path, self._sleep = path, sleep
        self._conn = None
        self._inode = None
        self._seen = None

    def wait(self, timeout: float) -> list[tuple[str, str]]:
        """After `timeout` s: [(CHANGES, "")] when the file changed since the last call, else []."""
        self._sleep(timeout)
        try:
            state = self._state()
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise SessionError(f"cannot watch {self._path}: {exc}") from None
        if state == self._seen:
            return []
        self._seen = state
        return [(CHANGES, "")]

    def generation(self) -> int:
        """The generation the file holds now (0 before the first write)."""
        try:
            row = self._open().execute(GENERATION).fetchone()
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise SessionError(f"cannot read {self._path}: {exc}") from None
        return row[0] if row else 0

    def close(self) -> None:
        """Close the watching connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _state(self) -> tuple[int, int]:
        conn = self._open()
        return self._inode, conn.execute("PRAGMA data_version").fetchone()[0]

    def _open(self) -> sqlite3.Connection:
        inode = os.stat(self._path).st_ino
        if self._conn is not None and inode != self._inode:
            self.close()  # deleted and created again: the old connection would watch the old file forever
        if self._conn is None:
            # mode=rw: never create the file; autocommit: never hold a read transaction open.
            uri = f"file:{pathname2url(os.path.abspath(self._path))}?mode=rw"
            self._conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            self._inode = inode
        return self._conn
