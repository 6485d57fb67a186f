"""The per-node reads' bench rows (issue 19): Proxmox calls and time of one pools read, all nodes, and the
capacity refresh and the scrape p50 with the pools read running beside them (every 5 s) and with it off.

Called by tools/bench/run.py after the sizes; appends its own section to results.md.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from pve_datastore_exporter.config import Config
from pve_datastore_exporter.service import Service

from .exporters import Ours
from .loadgen import Target, load
from .procs import SimulatorProc

SIZES = {"S": (3, 6), "M": (50, 20), "L": (100, 100)}  # as run.py's
BUSY_INTERVAL = "5"  # s: a pools read runs all through the measurement of the exporter that has it on


def one_pools_read(sim: SimulatorProc, work: Path, reads: int = 3) -> dict:
    """In this process: a refresh, then `reads` pools reads of every node, each timed and its Proxmox calls counted."""
    env = sim.env
    config = Config(proxmox_host=env["PROXMOX_HOST"], proxmox_user=env["PROXMOX_USER"],
                    proxmox_token_name=env["PROXMOX_TOKEN_NAME"], proxmox_token_value=env["PROXMOX_TOKEN_VALUE"],
                    proxmox_ca_bundle=env["PROXMOX_CA_BUNDLE"], proxmox_cluster_name="bench",
                    database_url=f"sqlite:///{work / 'pools-read.db'}")
    service = Service(config)
    service.start()
    service.refresh()
    samples, calls = [], []
    for _ in range(reads):
        sim.reset()
        started = time.perf_counter()
        service.node_reads.run("pools")
        samples.append(time.perf_counter() - started)
        calls.append(sim.requests())
    failed = [r for r in service.view.risk.reads if r.read == "pools" and r.reason]
    return {"median_s": statistics.median(samples), "samples_s": samples, "proxmox_requests": statistics.median(calls),
            "nodes_failed": len(failed), "thin_pools": len(service.view.risk.thin_pools),
            "zfs_pools": len(service.view.risk.zfs_pools)}


def beside(ours: Ours, sim: SimulatorProc, refreshes: int, scrapes: int, seconds: float) -> dict:
    """The refresh (median of `refreshes`) and the sequential scrape p50 of one exporter."""
    ours.refresh()  # untimed: it may only join the first refresh
    timed = [ours.refresh() for _ in range(refreshes)]
    run = load(Target(ours.port), 1, scrapes, seconds, warmup=5)
    return {"refresh_median_s": statistics.median(timed), "scrape_p50_ms": run.summary()["p50_ms"]}


def bench_size(name: str, work: Path, refreshes: int = 5, scrapes: int = 200, seconds: float = 3.0) -> dict:
    """One size: the pools read alone, then two exporters, the pools read off and every 5 s."""
    nodes, datastores = SIZES[name]
    work.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        sim = SimulatorProc(nodes, datastores, work, work / "simulator-state")
        stack.callback(sim.stop)
        result = {"nodes": nodes, "datastores": datastores, "pools_read": one_pools_read(sim, work)}
        for label, interval in (("off", "0"), ("on", BUSY_INTERVAL)):
            ours = Ours(sim.env, work, work, f"risk-{label}-{name}", EXPORTER_POOLS_INTERVAL=interval)
            stack.callback(ours.stop)
            result[f"pools_{label}"] = beside(ours, sim, refreshes, scrapes, seconds)
            ours.stop()
    return result


def bench(sizes: tuple[str, ...], work: Path, say: Callable[[str], None], **counts) -> dict:
    """Every size asked for: {size: its figures}."""
    found = {}
    for name in sizes:
        say(f"{name}: the pools read (thin pools and zpools of every node), and the refresh and scrapes beside it")
        found[name] = bench_size(name, work / name, **counts)
    return found


def markdown(results: dict) -> list[str]:
    """The section of results.md."""
    lines = ["", "## The per-node pools read (issue 19)", "",
             "| Size | Proxmox calls per pools interval | one pools read, all nodes | refresh, pools read off / every 5 s "
             "| scrape p50, pools read off / every 5 s |", "| --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        read, off, on = r["pools_read"], r["pools_off"], r["pools_on"]
        lines.append(f"| {name}: {r['nodes']} × {r['datastores']} | {read['proxmox_requests']:.0f} "
                     f"({read['proxmox_requests'] / r['nodes']:.0f} per node) | {read['median_s'] * 1000:.0f} ms "
                     f"| {off['refresh_median_s'] * 1000:.0f} ms / {on['refresh_median_s'] * 1000:.0f} ms "
                     f"| {off['scrape_p50_ms']:.2f} ms / {on['scrape_p50_ms']:.2f} ms |")
    lines += ["", "- The pools read: `GET /nodes/{node}/disks/lvmthin` and `/disks/zfs` of every online node, in fenced "
              "batches of 4 nodes (one call per node at a time), and its write to the database; timed in the bench's process "
              "(median of 3), its calls counted by the simulator. Two exporters then run one after the other, one "
              f"with `EXPORTER_POOLS_INTERVAL=0`, one with `{BUSY_INTERVAL}` (a read every 5 s during its measurement): "
              "their refresh (median of 5 POSTs) and sequential scrape p50 should not differ beyond the noise."]
    return lines


def append(results: dict | None, md: Path) -> None:
    """Add the section to results.md (written by report.write), when the rows were measured."""
    if results:
        md.write_text(md.read_text() + "\n".join(markdown(results)) + "\n")
