"""`python -m tools.bench.run`: three cluster sizes, two Proxmox latencies, three servers, one table.

Writes tools/bench/results.md and tools/bench/results.json; about 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pve_datastore_exporter import __version__

from . import db_away, lean, replicas, report
from . import risk as risk_bench
from . import tls as tls_bench
from .exporters import PEER_VENV, Ours, Peer, Static, require_peer_venv
from .loadgen import Run, Target, fetch, load
from .procs import SimulatorProc, compile_as_shipped
from .static import write as write_static

HERE = Path(__file__).resolve().parent
SIZES = {"S": (3, 6), "M": (50, 20), "L": (100, 100)}  # nodes x datastores


@dataclasses.dataclass(frozen=True)
class Counts:
    """One measurement's bounds: at most `seq` scrapes / `seq_s` s alone, `conc` / `conc_s` s concurrently."""

    seq: int
    seq_s: float
    conc: int = 0
    conc_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to run and how much of it."""

    sizes: tuple[str, ...] = ("S", "M", "L")
    latencies: tuple[float, ...] = (0.0, 30.0)
    clients: int = 16
    rounds: int = 3  # ours and the static file alternate this often; the samples are pooled
    warmup: int = 20
    refreshes: int = 5
    fast: Counts = Counts(200, 3, 1000, 4)  # ours and the static file, per round
    plain: Counts = Counts(100, 3)  # the no-gzip path, sequential only
    peer: dict = dataclasses.field(default_factory=lambda: {
        "S": Counts(60, 15, 160, 25), "M": Counts(40, 15, 96, 30), "L": Counts(12, 20, 32, 60)})
    with_peer: bool = True
    exact_sizes: tuple[str, ...] = ("M", "L")  # also timed with EXPORTER_EXACT_AVAILABLE=true
    with_replicas: bool = True  # three replicas on PostgreSQL (tools/bench/replicas.py)
    with_db_away: bool = True  # GETs while PostgreSQL is black-holed (tools/bench/db_away.py)
    tls_sizes: tuple[str, ...] = ("M",)  # also scraped over TLS with basic auth (tools/bench/tls.py)
    risk_sizes: tuple[str, ...] = ("M", "L")  # the per-node pools read (tools/bench/risk.py)
    # Issue 21 (tools/bench/lean.py): start-up, nginx as the higher anchor, page polls, instances per host.
    start_sizes: tuple[str, ...] = ("S", "L")
    nginx_sizes: tuple[str, ...] = ("S", "L")
    poll_sizes: tuple[str, ...] = ("L",)
    instance_counts: tuple[int, ...] = (1, 5, 10)  # serve processes at S, on the S simulator
    flag_rounds: tuple[int, int, int] = (6, 400, 2)  # refreshes, scrapes, rounds: RSS as shipped and plain (S)
    settle_s: float = 1.5  # before a memory figure: malloc_trim runs a second after a refresh


def tiny_plan() -> Plan:
    """The smoke test's plan: S only, one round of a few scrapes."""
    return Plan(sizes=("S",), rounds=1, warmup=2, refreshes=2, fast=Counts(10, 2, 32, 2), plain=Counts(5, 2),
                peer={"S": Counts(2, 5, 4, 10)}, with_replicas=False, with_db_away=False, tls_sizes=("S",), start_sizes=("S",),
                nginx_sizes=("S",) if lean.nginx_available() else (), poll_sizes=("S",), instance_counts=(1, 2),
                flag_rounds=(1, 10, 1), settle_s=0.1,
                risk_sizes=())


def say(message: str) -> None:
    """Progress on stderr."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _pooled(runs: list[Run]) -> Run | None:
    pooled = None
    for run in runs:
        pooled = run if pooled is None else pooled.merge(run)
    return pooled


def _scrapes(*runs: Run) -> int:
    return sum(len(r.latencies) + len(r.errors) for r in runs)


def fast_rounds(plan: Plan, sim: SimulatorProc, servers: dict[str, int | Target]) -> dict[str, dict]:
    """Ours (the static file, ours over TLS) in alternating rounds; Proxmox requests counted over ours' scrapes."""
    targets = {who: port if isinstance(port, Target) else Target(port) for who, port in servers.items()}
    for target in targets.values():
        load(target, 1, plan.warmup, 10)
    sim.reset()
    runs = {who: {"sequential": [], "concurrent": []} for who in targets}
    for _ in range(plan.rounds):
        for who, target in targets.items():
            runs[who]["sequential"].append(load(target, 1, plan.fast.seq, plan.fast.seq_s))
        for who, target in targets.items():
            runs[who]["concurrent"].append(load(target, plan.clients, plan.fast.conc, plan.fast.conc_s))
    requests = sim.requests()
    out = {}
    for who, loads in runs.items():
        seq, conc = _pooled(loads["sequential"]), _pooled(loads["concurrent"])
        out[who] = {"sequential": seq.summary(), "concurrent": conc.summary()}
    scrapes = _scrapes(*runs["ours"]["sequential"], *runs["ours"]["concurrent"])
    out["ours"].update(proxmox_requests=requests, proxmox_requests_per_scrape=requests / scrapes if scrapes else None)
    return out


def peer_runs(plan: Plan, counts: Counts, sim: SimulatorProc, peer: Peer) -> dict:
    """The peer alone: one warm-up, then sequential and concurrent scrapes, Proxmox requests counted."""
    target = Target(peer.port, peer.path)
    load(target, 1, 1, 60)
    sim.reset()
    seq = load(target, 1, counts.seq, counts.seq_s)
    conc = load(target, plan.clients, counts.conc, counts.conc_s)
    requests, scrapes = sim.requests(), _scrapes(seq, conc)
    return {"sequential": seq.summary(), "concurrent": conc.summary(), "proxmox_requests": requests,
            "proxmox_requests_per_scrape": requests / scrapes if scrapes else None}


def measure_refresh(ours: Ours, sim: SimulatorProc, count: int, seconds: float = 60.0) -> dict:
    """POST /api/datastores/refresh `count` times (at most `seconds`): median and Proxmox calls each."""
    # Untimed first: it may only join the refresh still publishing (the histogram counts it before
    # the new bytes are rendered), and a joined refresh calls Proxmox zero times.
    ours.refresh()
    sim.reset()
    samples, deadline = [], time.monotonic() + seconds
    while len(samples) < count and time.monotonic() < deadline:
        samples.append(ours.refresh())
    return {"samples_s": samples, "median_s": statistics.median(samples),
            "proxmox_requests_per_refresh": sim.requests() / len(samples), "histogram": ours.refresh_histogram()}


def start_exact(name: str, plan: Plan, sim: SimulatorProc, work: Path, stack: contextlib.ExitStack) -> Ours | None:
    """A second exporter with EXPORTER_EXACT_AVAILABLE=true (one more call per node and refresh), or None."""
    if name not in plan.exact_sizes:
        return None
    exact = Ours(sim.env, work, work, f"ours-exact-{name}", EXPORTER_EXACT_AVAILABLE="true")
    stack.callback(exact.stop)
    return exact


def bench_size(name: str, plan: Plan, work: Path) -> dict:
    """Everything measured at one cluster size; every process stopped before returning."""
    nodes, datastores = SIZES[name]
    with contextlib.ExitStack() as stack:
        say(f"{name}: {nodes} nodes x {datastores} datastores: starting the simulator and the exporters")
        sim = SimulatorProc(nodes, datastores, work, work / "simulator-state")
        stack.callback(sim.stop)
        lean_figures = before_ours(name, plan, sim, work)
        ours = Ours(sim.env, work, work, f"ours-{name}")
        stack.callback(ours.stop)
        peer = Peer(sim.env, sim.port, work, work, f"peer-{name}") if plan.with_peer else None
        if peer:
            stack.callback(peer.stop)
        exact = start_exact(name, plan, sim, work, stack)
        tls = tls_bench.start(name, plan.tls_sizes, sim.env, work, stack)
        zipped, plain = fetch(ours.port, gzip=True), fetch(ours.port, gzip=False)
        write_static(work / f"static-{name}", plain["body"], zipped["body"])
        static = Static(work / f"static-{name}", work, f"static-{name}")
        stack.callback(static.stop)
        nginx = lean.Nginx(work / f"static-{name}", work, f"nginx-{name}", zipped["content_type"]) \
            if name in plan.nginx_sizes else None
        if nginx:
            stack.callback(nginx.stop)
        result = {"nodes": nodes, "datastores": datastores, "rows": plain["body"].count(b"\npve_datastore_active{"),
                  "bytes": {"ours_gzip": zipped["bytes"], "ours_plain": plain["bytes"]}, "latency": {}}
        for index, latency in enumerate(plan.latencies):
            sim.set_latency(latency)
            say(f"{name} {latency:g} ms: refresh, then ours{' and the static file' if index == 0 else ''}")
            entry = {"refresh": measure_refresh(ours, sim, plan.refreshes)}
            if exact:
                entry["refresh_exact"] = measure_refresh(exact, sim, plan.refreshes)
            servers = ({"ours": ours.port} | ({"static": static.port} if index == 0 else {})
                       | ({"nginx": nginx.port} if nginx and index == 0 else {})
                       | ({"tls": tls.target} if tls else {}))  # TLS in the same rounds as plain: one drift
            entry.update(fast_rounds(plan, sim, servers))
            if tls:
                say(f"{name} {latency:g} ms: ours over TLS, a new connection per scrape")
                entry["tls"]["new_connection"] = tls_bench.new_connections(tls, plan.fast.seq, plan.fast.seq_s)
            if peer:
                say(f"{name} {latency:g} ms: prometheus-pve-exporter")
                entry["peer"] = peer_runs(plan, plan.peer[name], sim, peer)
                result["bytes"]["peer"] = entry["peer"]["sequential"]["body_bytes"]
            result["latency"][f"{latency:g}"] = entry
        result["plain"] = {who: load(Target(port, gzip=False), 1, plan.plain.seq, plan.plain.seq_s,
                                             warmup=plan.warmup).summary()
                           for who, port in (("ours", ours.port), ("static", static.port))}
        result["rss_mb"] = {"ours": _mb(ours.proc.rss_kib()), "ours_peak": _mb(ours.proc.rss_kib(field="VmHWM")),
                            "peer": _mb(peer.proc.rss_kib(with_children=True)) if peer else None}
        if name in plan.poll_sizes:  # after the memory: the page's first render loads its templates and Babel
            say(f"{name}: page polls with If-None-Match")
            result["page_polls"] = lean.page_polls(ours.port, lean.other_datastore(ours.port))
    return result | lean_figures


def before_ours(name: str, plan: Plan, sim: SimulatorProc, work: Path) -> dict:
    """Issue 21's figures taken before our exporter starts: start-up times, and several instances at S."""
    out = {}
    if name in plan.start_sizes:
        say(f"{name}: start-up, an empty database then a filled one")
        out["start_up"] = lean.start_up(sim.env, work, name)
    if name == "S" and plan.instance_counts:
        say(f"S: {', '.join(map(str, plan.instance_counts))} serve processes")
        out["instances"] = lean.instances(sim.env, work, plan.instance_counts, plan.settle_s)
        say("S: serve as shipped and under a plain python, the same refreshes and scrapes")
        out["interpreter_flags"] = lean.interpreter_flags(sim.env, work, *plan.flag_rounds, settle=plan.settle_s)
    return out


def _mb(kib: int | None) -> float | None:
    # /proc says kB and means KiB; the target says MB: 10^6 bytes.
    return None if kib is None else kib * 1024 / 1e6


def run(plan: Plan, out_dir: Path, work: Path) -> dict:
    """The whole bench; returns the results (also written to out_dir)."""
    started = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    compile_as_shipped()
    meta = report.machine() | {"ours_version": __version__, "server": "uvicorn {} + httptools {} + a2wsgi {}".format(
                                   *(importlib.metadata.version(d) for d in ("uvicorn", "httptools", "a2wsgi"))),
                               "peer": require_peer_venv() if plan.with_peer else None}
    results = {"meta": meta, "plan": dataclasses.asdict(plan), "sizes": {}, "imports_ms": lean.import_times()}
    for name in plan.sizes:
        results["sizes"][name] = bench_size(name, plan, work)
    if plan.with_replicas:
        results["replicas"] = replicas.bench(work / "replicas", say=say)
    if plan.with_db_away:
        results["db_away"] = db_away.bench(work / "db-away", say=say)
    if plan.risk_sizes:
        results["risk"] = risk_bench.bench(tuple(s for s in plan.risk_sizes if s in plan.sizes), work / "risk", say)
    meta.update(loadavg_end=os.getloadavg(), duration_s=time.monotonic() - started)
    report.write(results, out_dir)
    risk_bench.append(results.get("risk"), out_dir / "results.md")
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the full plan, print the table, keep the processes' logs only when something failed."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench.run", description=__doc__)
    parser.add_argument("--sizes", default="S,M,L", help="comma list of S, M, L (default %(default)s)")
    parser.add_argument("--out", type=Path, default=HERE, help="where results.md/json go (default tools/bench)")
    parser.add_argument("--no-peer", action="store_true", help=f"skip prometheus-pve-exporter ({PEER_VENV})")
    parser.add_argument("--no-replicas", action="store_true",
                        help="skip the replicas on PostgreSQL (issue 10) and the black-holed database (issue 22)")
    args = parser.parse_args(argv)
    sizes = tuple(s.strip().upper() for s in args.sizes.split(",") if s.strip())
    if not sizes or not set(sizes) <= set(SIZES):
        parser.error(f"--sizes: choose from {', '.join(SIZES)}")
    plan = Plan(sizes=sizes, with_peer=not args.no_peer, with_replicas=not args.no_replicas,
                with_db_away=not args.no_replicas)
    work = Path(tempfile.mkdtemp(prefix="pve-bench-"))
    try:
        results = run(plan, args.out, work)
    except BaseException:
        say(f"failed; the processes' logs are in {work}")
        raise
    shutil.rmtree(work, ignore_errors=True)
    print(report.markdown_table(results["table"]))
    print(f"\nwrote {args.out / 'results.md'} and {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
