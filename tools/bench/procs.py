"""The processes the bench starts: the simulator, our exporter, the peer, the static server."""

from __future__ import annotations

import http.client
import json
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

from ..processes import free_port

REPO = Path(__file__).resolve().parents[2]
# Settings of ours and the peer's that would leak in from the caller's environment.
# How the image and the Ansible role run the exporter (Dockerfile ENV, the unit's Environment=): no
# docstrings, no column tables in code objects; ~3 MB less resident (docs/architecture.md#memory).
AS_SHIPPED = {"PYTHONOPTIMIZE": "2", "PYTHONNODEBUGRANGES": "1"}
SCRUB = ("PROXMOX_", "EXPORTER_", "DATABASE_URL", "PVE_", "WEB_CONCURRENCY", "GUNICORN_CMD_ARGS", *AS_SHIPPED)


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without anything that configures an exporter, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUB)}
    env.update(extra)
    return env


def rss_kib(pid: int, field: str = "VmRSS") -> int | None:
    """VmRSS (or VmHWM, the peak) of one process in KiB from /proc, None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    """Direct children of `pid` (gunicorn's worker under its master)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(p) for p in task.read_text().split()]
        except OSError:
            continue
    return found


class Proc:
    """A child process with its output in a log file; stop() ends it (and only it)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(argv, env=env, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)
        self.pid = self.popen.pid

    def alive(self) -> bool:
        """Still running."""
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The end of its output, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def rss_kib(self, with_children: bool = False, field: str = "VmRSS") -> int | None:
        """Resident memory of the process (and its children), KiB."""
        pids = [self.pid] + (children(self.pid) if with_children else [])
        values = [rss_kib(p, field) for p in pids]
        return sum(v for v in values if v) or None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`."""
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()


def wait_until(check, proc: Proc, timeout: float, what: str):
    """Poll `check()` until it returns a truthy value; fail early if `proc` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited while waiting for {what}:\n{proc.log_tail()}")
        try:
            value = check()
        except (OSError, http.client.HTTPException, ValueError):
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name}: no {what} after {timeout:.0f} s:\n{proc.log_tail()}")


def http_get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """A plain GET on loopback: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def http_post(port: int, path: str, timeout: float = 60.0) -> tuple[int, bytes]:
    """A POST without body on loopback: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=b"", headers={"Content-Length": "0"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class SimulatorProc:
    """`pve-datastore-exporter simulate` in its own process, so its work never shares our GIL."""

    def __init__(self, nodes: int, datastores: int, log_dir: Path, state_dir: Path, latency_ms: float = 0.0):
        self.port = free_port()
        argv = [sys.executable, "-m", "pve_datastore_exporter", "simulate", "--listen", f"127.0.0.1:{self.port}",
                "--nodes", str(nodes), "--datastores", str(datastores), "--random-seed", "1",
                "--state-dir", str(state_dir), "--latency-ms", str(latency_ms), "--auth-delay", "0.2"]
        self.proc = Proc(f"simulator-{nodes}x{datastores}", argv, clean_env(), log_dir)
        lines = wait_until(self._settings, self.proc, 60, "settings printed")
        self.env = dict(line.split("=", 1) for line in lines)
        self._context = ssl.create_default_context(cafile=self.env["PROXMOX_CA_BUNDLE"])
        wait_until(lambda: self.control("GET", "/_sim/stats") is not None, self.proc, 30, "answer")

    def _settings(self) -> list[str] | None:
        lines = [line for line in self.proc.log_path.read_text().splitlines() if line.startswith("PROXMOX_")]
        return lines if any(line.startswith("PROXMOX_CA_BUNDLE=") for line in lines) else None

    def control(self, method: str, path: str, payload: dict | None = None) -> dict:
        """One call to the uncounted /_sim/ control endpoints."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30, context=self._context)
        try:
            body = json.dumps(payload).encode() if payload is not None else b""
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            data = json.loads(response.read())
            if response.status != 200:
                raise RuntimeError(f"simulator {method} {path}: {response.status} {data}")
            return data
        finally:
            conn.close()

    def requests(self) -> int:
        """API requests served since the last reset."""
        return self.control("GET", "/_sim/stats")["requests"]

    def reset(self) -> None:
        """Zero the request counter."""
        self.control("POST", "/_sim/reset")

    def set_latency(self, latency_ms: float) -> None:
        """Added latency per API request from now on."""
        self.control("POST", "/_sim/faults", {"latency_ms": latency_ms})

    def stop(self) -> None:
        """End the process."""
        self.proc.stop()


def compile_as_shipped() -> None:
    """Write the .pyc files `serve` reads under AS_SHIPPED (the image compiles them at build): else every
    start would compile its imports again, slower and with a higher peak, when bytecode is not written."""
    env = {k: v for k, v in clean_env(**AS_SHIPPED).items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-c", "import pve_datastore_exporter.cli, pve_datastore_exporter.server"],
                   env=env, cwd=REPO, check=True)
