"""Whether the database answers: once a connect failed, calls fail at once until a background probe connects."""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from peewee import DatabaseError, OperationalError

log = logging.getLogger(__name__)

PROBE = 1.0  # s between a probe's connects while the database is away (each waits up to its connect timeout)


class DatabaseAway(OperationalError):
    """A connect to the database failed, and no probe has found it since: no call tries again meanwhile."""


class Reach:
    """The connections of one peewee database, each call's own; on PostgreSQL, a failed connect remembered.

    A vanished host (packets dropped) costs a whole connect timeout: paid once, by the call that
    finds it gone, then by a background probe only, never by every GET. SQLite is a file: never away.
    """

    def __init__(self, database, remote: bool, sleep=time.sleep):
        self._database, self._remote, self._sleep = database, remote, sleep
        self._away = threading.Event()  # set from a failed connect until a probe connects
        self._probing = threading.Lock()
        # Connects one at a time, the flag read again under it: peewee's connect() holds the database's lock
        # for the whole connect, so calls past a first check would each pay a connect timeout in turn.
        self._connecting = threading.Lock()

    @contextlib.contextmanager
    def connection(self):
        """A connection for one call; DatabaseAway at once while the host is known to be gone."""
        self._check()
        if self._remote and self._database.is_closed():
            with self._connecting:
                self._check()  # a call connecting before us may have found the host gone meanwhile
                try:
                    self._database.connect()
                except OperationalError as exc:
                    self._went_away(exc)
                    raise
        with self._database.connection_context():
            yield

    def _check(self) -> None:
        """DatabaseAway while the host is known to be gone."""
        if self._away.is_set():
            raise DatabaseAway("the database did not answer a connect; a probe tries again every second")

    def _went_away(self, exc: Exception) -> None:
        with self._probing:
            if self._away.is_set():
                return
            self._away.set()
        text = str(exc).strip()
        log.warning("database connect failed (%s): answering from memory until a probe every %s s connects",
                    text.splitlines()[0] if text else type(exc).__name__, PROBE)
        threading.Thread(target=self._probe, name="database-probe", daemon=True).start()

    def _probe(self) -> None:
        """Connect every PROBE s (this thread's own connection: peewee's are per thread) until one succeeds."""
        while True:
            self._sleep(PROBE)
            try:
                with self._database.connection_context():
                    self._database.execute_sql("SELECT 1")
            except DatabaseError:
                continue
            self._away.clear()
            log.info("database answers again")
            return
