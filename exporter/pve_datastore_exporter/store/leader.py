"""Who may read Proxmox: a PostgreSQL advisory lock on a dedicated session, or a lock file beside a SQLite file.

The PostgreSQL lock is session-level: it lasts as long as the session, and the server releases it
the moment the session ends (the process killed, `pg_terminate_backend`, the host gone once the
server's keepalives notice). Its key is two numbers: LOCK_CLASS and a hash of the database's and
schema's names, so every replica of one cluster (one database) contends for the same lock and two
clusters in two databases never do. docs/architecture.md#replicas has the timeline.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading

from .sessions import SessionError, driver_error, first_line, pg_connect

LOCK_CLASS = 0x70766478  # "pvdx": the first of the lock's two keys
LOCK_KEY = "hashtext(current_database() || '.' || current_schema())"  # the second: this database and schema
TRY_LOCK = f"SELECT pg_try_advisory_lock({LOCK_CLASS}, {LOCK_KEY})"
NOW = "extract(epoch FROM clock_timestamp())"
# Taking over: name the new holder, raise the epoch (the fencing token every write of this holder
# carries), and learn until when the last holder's read may still run.
TAKE_OVER = (f"INSERT INTO leader (id, holder, since, epoch) VALUES (1, %s, {NOW}, 1) "
             "ON CONFLICT (id) DO UPDATE SET holder = EXCLUDED.holder, since = EXCLUDED.since, "
             "epoch = coalesce(leader.epoch, 0) + 1 "
             f"RETURNING greatest(coalesce(reading_until, 0) - {NOW}, 0), epoch")
EPOCH = "SELECT epoch FROM leader WHERE id = 1"  # what a fenced write compares with its own, in its transaction
BEGIN_READ = f"UPDATE leader SET reading_until = {NOW} + %s WHERE id = 1"
END_READ = "UPDATE leader SET reading_until = NULL WHERE id = 1"


class PgLock:
    """The leader's advisory lock on a session of its own, and the read marker that fences each read."""

    def __init__(self, url: str, holder: str, connect=pg_connect):
        self._url, self._holder, self._connect = url, holder, connect
        self._conn = None
        self._mutex = threading.Lock()  # the coordination thread and a refresh thread share the session
        self.epoch: int | None = None  # raised by every take-over: the fencing token of this holder's writes

    def try_acquire(self) -> float | None:
        """Take the lock if it is free: None when another session holds it, else seconds to wait before reading."""
        with self._mutex:
            if self._conn is None:
                self._conn = self._connect(self._url)
            if not self._run(TRY_LOCK):
                return None
            grace, self.epoch = self._run(TAKE_OVER, (self._holder,), row=True)
            return float(grace)

    def begin_read(self, seconds: float) -> None:
        """Mark a read that ends within `seconds`; SessionError when the session (so the lock) is gone."""
        with self._mutex:
            self._run(BEGIN_READ, (seconds,))

    def end_read(self) -> None:
        """Clear the mark; SessionError when the session ended during the read (another may lead now)."""
        with self._mutex:
            self._run(END_READ)

    def check(self) -> None:
        """SessionError unless the session, and so the lock, is still there."""
        with self._mutex:
            self._run("SELECT 1")

    def release(self) -> None:
        """End the session: the server releases the lock at once."""
        with self._mutex:
            self._close()

    def _run(self, sql: str, args: tuple = (), row: bool = False):
        if self._conn is None:
            raise SessionError("the lock's session is closed")
        try:
            with self._conn.cursor() as cursor:
                cursor.execute(sql, args)
                if not cursor.description:
                    return None
                return cursor.fetchone() if row else cursor.fetchone()[0]
        except driver_error() as exc:
            self._close()
            raise SessionError(f"the lock's session ended: {first_line(exc)}") from None

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


class FileLock:
    """An exclusive flock on `<db>.lock` for the life of the process: one `serve` per SQLite file."""

    def __init__(self, path: str):
        self.path = path
        self._file = None

    def acquire(self) -> str | None:
        """None when the lock is this process's now, else what the holder wrote (its pid)."""
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for the process's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            return holder
        handle.truncate(0)
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        self._file = handle
        return None

    def release(self) -> None:
        """Let another process serve the file (the kernel does it too when the process dies)."""
        if self._file is not None:
            self._file.close()
            self._file = None


class HeldLock:
    """The lock of a process that leads alone (a SQLite file it holds): always held, nothing to fence."""

    epoch = None  # nothing to fence: no other process writes as the leader

    def __init__(self, file_lock: FileLock | None = None):
        self._file_lock = file_lock

    def try_acquire(self) -> float | None:
        """Held from the start: nothing to wait for."""
        return 0.0

    def begin_read(self, seconds: float) -> None:
        """Nothing to mark: no other process reads."""

    def end_read(self) -> None:
        """Nothing to clear."""

    def check(self) -> None:
        """Always held."""

    def release(self) -> None:
        """Release the lock file, if any."""
        if self._file_lock is not None:
            self._file_lock.release()
