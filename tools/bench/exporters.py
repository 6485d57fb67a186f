"""The three things scraped: our exporter, prometheus-pve-exporter 3.10.x, and the static-file baseline."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from ..processes import free_port
from .procs import AS_SHIPPED, REPO, Proc, clean_env, http_get, http_post, wait_until

# The peer, 3.10.x, is installed by `make bench` from this lock (requirements/bench.in holds the range).
PEER_LOCK = REPO / "requirements" / "bench.txt"
PEER_VENV = REPO / ".venv-bench"
# Every collector off except the two that report storage: the peer's cheapest honest setup.
PEER_FLAGS = ("--collector.status", "--collector.resources", "--no-collector.version", "--no-collector.node",
              "--no-collector.cluster", "--no-collector.backup-info", "--no-collector.qdevice",
              "--no-collector.config", "--no-collector.replication", "--no-collector.subscription",
              "--no-collector.pve-api-metrics", "--no-collector.target-metrics")
REFRESH_COUNT = re.compile(rb"^pve_datastore_refresh_duration_seconds_count ([0-9.e+]+)$", re.M)
REFRESH_SUM = re.compile(rb"^pve_datastore_refresh_duration_seconds_sum ([0-9.e+]+)$", re.M)


class Ours:
    """`pve-datastore-exporter serve` against the simulator; refreshes once at start, then hourly."""

    def __init__(self, sim_env: dict[str, str], work: Path, log_dir: Path, name: str, shipped: bool = True,
                 **settings: str):
        self.port = free_port()
        env_file = work / "empty.env"
        env_file.write_text("")
        env = clean_env(**sim_env, **(AS_SHIPPED if shipped else {}), DATABASE_URL=f"sqlite:///{work / f'{name}.db'}",
                        EXPORTER_LISTEN_ADDRESS=f"127.0.0.1:{self.port}",
                        EXPORTER_REFRESH_INTERVAL="3600",  # no refresh during the scrape phases
                        EXPORTER_LOG_LEVEL="WARNING",
                        # The pools read is measured on its own (tools/bench/risk.py), not inside these rows.
                        **{"EXPORTER_POOLS_INTERVAL": "0", **settings})
        argv = [sys.executable, "-m", "pve_datastore_exporter", "--env-file", str(env_file), "serve"]
        self.proc = Proc(name, argv, env, log_dir)
        wait_until(lambda: self.refreshes() >= 1, self.proc, 120, "first refresh")

    def refreshes(self) -> int:
        """How many refreshes the exporter's histogram has seen."""
        status, body = http_get(self.port, "/metrics")
        found = REFRESH_COUNT.search(body) if status == 200 else None
        return int(float(found[1])) if found else 0

    def refresh_histogram(self) -> dict:
        """pve_datastore_refresh_duration_seconds: count and sum as the exporter reports them."""
        _, body = http_get(self.port, "/metrics")
        count, total = REFRESH_COUNT.search(body), REFRESH_SUM.search(body)
        return {"count": int(float(count[1])), "sum_s": float(total[1])} if count and total else {}

    def refresh(self) -> float:
        """POST /api/datastores/refresh; the seconds it took (raises unless 200)."""
        start = time.perf_counter()
        status, body = http_post(self.port, "/api/datastores/refresh")
        elapsed = time.perf_counter() - start
        if status != 200:
            raise RuntimeError(f"refresh answered {status}: {body[:300]!r}")
        return elapsed

    def stop(self) -> None:
        """End the process."""
        self.proc.stop()


def peer_versions(venv: Path = PEER_VENV) -> dict[str, str] | None:
    """{"prometheus-pve-exporter": v, "gunicorn": v, "python": v} from the bench venv, None without it."""
    python = venv / "bin" / "python"
    if not (venv / "bin" / "pve_exporter").exists():
        return None
    code = ("import importlib.metadata as m, json, platform; print(json.dumps({p: m.version(p) for p in "
            "('prometheus-pve-exporter', 'gunicorn', 'proxmoxer', 'prometheus-client')} | "
            "{'python': platform.python_version()}))")
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def require_peer_venv(venv: Path = PEER_VENV) -> dict[str, str]:
    """The bench venv's versions; fails unless it holds prometheus-pve-exporter 3.10.x."""
    versions = peer_versions(venv)
    if not (versions and versions["prometheus-pve-exporter"].startswith("3.10.")):
        # One way in, the Makefile's: pinned with hashes from PEER_LOCK, rebuilt when the lock changes.
        raise RuntimeError(f"{venv}: no prometheus-pve-exporter 3.10.x; `make bench` builds it from {PEER_LOCK.relative_to(REPO)}"
                           " (or run with --no-peer)")
    return versions


class Peer:
    """prometheus-pve-exporter under its own server (gunicorn, 1 worker x 2 threads in 3.10)."""

    def __init__(self, sim_env: dict[str, str], sim_port: int, work: Path, log_dir: Path, name: str,
                 venv: Path = PEER_VENV):
        self.port = free_port()
        config = work / f"{name}.yml"
        # verify_ssl: false as its docs show for self-signed clusters; token auth, no ticket call.
        module = {"user": sim_env["PROXMOX_USER"], "token_name": sim_env["PROXMOX_TOKEN_NAME"],
                  "token_value": sim_env["PROXMOX_TOKEN_VALUE"]}
        config.write_text("default:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in module.items())
                          + "  verify_ssl: false\n")
        argv = [str(venv / "bin" / "pve_exporter"), "--config.file", str(config),
                "--web.listen-address", f"127.0.0.1:{self.port}", *PEER_FLAGS]
        self.proc = Proc(name, argv, clean_env(), log_dir)
        # The target carries the port: proxmoxer splits "host:port" (the module has no port option).
        self.path = f"/pve?module=default&target=127.0.0.1:{sim_port}&cluster=1&node=0"
        wait_until(lambda: http_get(self.port, "/")[0] == 200, self.proc, 60, "HTTP answer")

    def stop(self) -> None:
        """End gunicorn (master and worker)."""
        self.proc.stop()


class Static:
    """The same exposition bytes as a file, served by our listener (tools/bench/static.py)."""

    def __init__(self, directory: Path, log_dir: Path, name: str):
        self.port = free_port()
        argv = [sys.executable, "-m", "tools.bench.static", "--dir", str(directory), "--port", str(self.port)]
        self.proc = Proc(name, argv, clean_env(PYTHONPATH=str(REPO)), log_dir)
        wait_until(lambda: http_get(self.port, "/metrics")[0] == 200, self.proc, 30, "HTTP answer")

    def stop(self) -> None:
        """End the process."""
        self.proc.stop()
