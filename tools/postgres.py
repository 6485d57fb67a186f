"""A throw-away PostgreSQL server for the tests and the bench: initdb, pg_ctl start and stop, a database each."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .processes import free_port


def pg_bin(name: str) -> str | None:
    """The newest installed PostgreSQL's `name` (initdb, pg_ctl, ...), or one on PATH, or None."""
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]))
    return str(found[-1]) if found else shutil.which(name)


class PostgresServer:
    """One cluster in a temporary folder on a free loopback port; trust auth, fsync off: for tests only."""

    def __init__(self):
        missing = [name for name in ("initdb", "pg_ctl") if pg_bin(name) is None]
        if missing:
            raise FileNotFoundError(f"PostgreSQL's {', '.join(missing)} is not installed")
        # initdb refuses to run as root: become the postgres user for the server's commands.
        self._as = ["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups"] if os.geteuid() == 0 else []
        self.base = Path(tempfile.mkdtemp(prefix="pvedx-pg-"))
        if self._as:
            shutil.chown(self.base, "postgres", "postgres")
        self.data, self.port = self.base / "data", free_port()
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", timeout=120)
        self.start()

    @staticmethod
    def version() -> str:
        """The server's version, from its pg_ctl (e.g. "15.18")."""
        done = subprocess.run([pg_bin("pg_ctl"), "--version"], capture_output=True, text=True, check=False)
        found = re.search(r"\d+(\.\d+)+", done.stdout)  # "pg_ctl (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
        return found[0] if found else "unknown"

    def _run(self, tool: str, *args: str, timeout: float = 90, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*self._as, pg_bin(tool), *args], check=check, capture_output=True, timeout=timeout)

    def start(self) -> None:
        """Start (again) on the same port and data; returns once it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.base / "log"), "-w", "-t", "60", "-o",
                  f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
                  "-c max_connections=200", "start")

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop: "fast" ends every session (their locks go with them), "immediate" is a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False, timeout=60)

    def url(self, database: str = "postgres") -> str:
        """The DATABASE_URL of `database` on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        deadline = time.monotonic() + 30
        while self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name,
                        check=False).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError(f"createdb {name} failed: {(self.base / 'log').read_text()[-2000:]}")
            time.sleep(0.5)
        return self.url(name)

    def sql(self, statement: str, database: str = "postgres") -> list[tuple]:
        """Run one statement as the superuser; its rows."""
        import psycopg2

        conn = psycopg2.connect(self.url(database), connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement)
                return cursor.fetchall() if cursor.description else []
        finally:
            conn.close()

    def close(self) -> None:
        """Stop the server and delete its folder."""
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)
