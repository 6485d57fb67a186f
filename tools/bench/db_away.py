"""`python -m tools.bench.db_away`: GETs while the PostgreSQL host is black-holed (issue 22, item 3).

One `serve` reaches PostgreSQL through a relay (tools/relay.py); the relay then drops every new
connect, as a vanished host does. GET /api/datastores is timed with the database up, then while it is
black-holed (after the one GET that finds it gone, which pays the 3 s connect timeout), then again
once it is back. The main bench (`make bench`) calls `bench()`; alone, this prints its rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path

from ..postgres import PostgresServer
from ..processes import free_port
from ..relay import Relay
from . import report
from .loadgen import Target, load
from .procs import Proc, SimulatorProc, clean_env, http_get, wait_until

SETTINGS = {"EXPORTER_REFRESH_INTERVAL": "3600", "PROXMOX_TIMEOUT": "2", "EXPORTER_LOG_LEVEL": "WARNING"}
PATH = "/api/datastores"


@dataclasses.dataclass(frozen=True)
class AwayPlan:
    """How many GETs in each state, and how long at most."""

    gets: int = 300
    seconds: float = 20.0


def source(port: int) -> str | None:
    """The answer's "source": "db" or "env" (None when it does not answer)."""
    with contextlib.suppress(OSError, ValueError):
        return json.loads(http_get(port, PATH, timeout=10)[1])["source"]
    return None


def bench(work: Path, plan: AwayPlan = AwayPlan(), say=print) -> dict:
    """GET p50 with the database up, black-holed and back; every process stopped before returning."""
    work.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        say("database away: PostgreSQL behind a relay, the simulator (3 x 6), one serve")
        server = PostgresServer()
        stack.callback(server.close)
        relay = Relay(server.port)
        stack.callback(relay.close)
        url = server.create_database("away").replace(f":{server.port}/", f":{relay.port}/")
        sim = SimulatorProc(3, 6, work, work / "simulator-state")
        stack.callback(sim.stop)
        port, env_file = free_port(), work / "empty.env"
        env_file.write_text("")
        env = clean_env(**sim.env, DATABASE_URL=url, EXPORTER_LISTEN_ADDRESS=f"127.0.0.1:{port}", **SETTINGS)
        proc = Proc("serve-db-away", [sys.executable, "-m", "pve_datastore_exporter", "--env-file", str(env_file),
                                      "serve"], env, work)
        stack.callback(proc.stop)
        wait_until(lambda: source(port) == "db", proc, 60, "an answer from the database")
        target = Target(port, PATH, gzip=False)
        result = {"up": load(target, 1, plan.gets, plan.seconds, warmup=20).summary()}
        say("database away: black-holed")
        relay.black_hole()
        started = time.monotonic()
        assert source(port) == "env"
        result["first_get_s"] = time.monotonic() - started  # the one connect that finds the host gone
        result["black_holed"] = load(target, 1, plan.gets, plan.seconds).summary()
        relay.restore()
        started = time.monotonic()
        wait_until(lambda: source(port) == "db", proc, 30, "the database again")
        result["back_after_s"] = time.monotonic() - started
        result["back"] = load(target, 1, plan.gets, plan.seconds).summary()
    result["table"], result["notes"] = rows(result), notes(result)
    return result


def notes(result: dict) -> list[str]:
    """How the rows were measured."""
    return [f"- Database away (issue 22): PostgreSQL {PostgresServer.version()} on loopback behind a TCP relay, one "
            "`serve` over the simulator at 3 nodes x 6 datastores; sequential `GET /api/datastores` (no gzip), "
            f"{result['up']['scrapes']} with the database up, then with the relay dropping every new connect (a "
            "black hole, as a vanished host), after the one GET that finds it gone "
            f"({result['first_get_s']:.1f} s: the connect timeout), then once a probe found it back "
            f"({result['back_after_s']:.1f} s after the relay returned)."]


def rows(result: dict) -> list[dict]:
    """The rows of the bench's table: the black-holed p50 against the database-up p50."""
    label, up, away = "3×6, PostgreSQL black-holed", result["up"]["p50_ms"], result["black_holed"]["p50_ms"]
    ratio = report.divide(away, up)
    return [
        report._row(label, "0 ms", "GET /api/datastores p50, database up (ms)", up),
        report._row(label, "0 ms", "GET /api/datastores p50, database black-holed (ms)", away,
                    target="≤ database up", verdict=report._verdict(ratio is not None and ratio <= 1.2)),
        report._row(label, "0 ms", "the one GET that finds the database gone (s)", result["first_get_s"],
                    target="≤ 3 + 1", verdict=report._verdict(result["first_get_s"] <= 4)),
    ]


def main() -> int:
    """Run this part alone and print its rows."""
    return report.run_alone(bench, "pve-bench-db-away-")


if __name__ == "__main__":
    raise SystemExit(main())
