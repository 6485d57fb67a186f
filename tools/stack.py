"""The end-to-end stack of the dashboard picture and the Prometheus tests: the simulated cluster
drifting every second, the exporter (`serve`), and a real Prometheus with the rules, all on loopback."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

import requests

from .processes import ExporterProcess, free_port, terminate

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "prometheus" / "alerts.yml"
GIB = 1 << 30


def wait_for(what, check, timeout=30.0, interval=0.25):
    """Poll `check()` until it returns a truthy value; TimeoutError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except (requests.RequestException, KeyError, IndexError, ValueError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


class Prometheus:
    """A real Prometheus on loopback with a temporary TSDB, scraping one target every second."""

    def __init__(self, workdir: Path, target: str, binary: str = "prometheus", scrape_extra: str = ""):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
            f"rule_files: ['{RULES}']\n"
            "scrape_configs:\n"
            "  - job_name: pve-datastore\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n" + scrape_extra)
        self.log = workdir / "prometheus.log"
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, cwd=workdir)

    def api(self, path, **params):
        reply = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = reply.json()
        assert body["status"] == "success", (path, params, body)
        return body["data"]

    def query(self, expr):
        return self.api("query", query=expr)["result"]

    def stop(self):
        terminate(self.process)


@contextlib.contextmanager
def running_stack(workdir: Path):
    """Simulator (local-lvm and ceph-vm filling) + exporter + Prometheus; yields (prometheus, exporter)."""
    from pve_datastore_exporter.simulator import Simulator

    # drift_rate is a fraction of the size per hour: 3.6 moves usage by 0.1 % of the size each second.
    sim = Simulator(nodes=3, datastores=6, random_seed=1, state_dir=workdir / "sim", drift=True, drift_rate=3.6,
                    auth_delay=0.1).start()
    # A local and a shared datastore certainly fill up, so "Time until full" lists both kinds.
    sim.cluster.set_rate("local-lvm", GIB)
    sim.cluster.set_rate("ceph-vm", 16 * GIB)
    # The risk row's figures: a degraded zpool, a thin pool near its metadata limit, a worn SSD, and a token
    # that sees guests' volumes; every per-node read on, every 5 s.
    from pve_datastore_exporter.simulator.risk import stage_demo

    stage_demo(sim.cluster)
    reads = {f"EXPORTER_{read}_INTERVAL": "5" for read in ("POOLS", "DISKS", "PROVISIONED")}
    exporter = ExporterProcess(workdir, {**sim.env(), "EXPORTER_REFRESH_INTERVAL": "1", "EXPORTER_LOG_LEVEL": "WARNING",
                                         **reads})
    prometheus = None
    try:
        exporter.start()
        wait_for("the exporter's first refresh",
                 lambda: "pve_datastore_up 1" in requests.get(exporter.url + "/metrics", timeout=2).text)
        prometheus = Prometheus(workdir, f"127.0.0.1:{exporter.port}")
        wait_for("Prometheus to be ready", lambda: requests.get(prometheus.url + "/-/ready", timeout=2).ok)
        yield prometheus, exporter
    except BaseException:
        for path in (exporter.log_path, workdir / "prometheus.log"):
            if path.exists():
                print(f"--- {path.name}\n{path.read_text()[-4000:]}", file=sys.stderr)
        raise
    finally:
        if prometheus:
            prometheus.stop()
        exporter.stop()
        sim.stop()
