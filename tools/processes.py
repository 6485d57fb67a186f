"""The exporter as a real process (`pve-datastore-exporter serve`) for the tools and the fault and end-to-end tests."""

from __future__ import annotations

import errno
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

BIN = Path(sys.executable).parent / "pve-datastore-exporter"


def terminate(proc: subprocess.Popen, grace: float = 10) -> int:
    """SIGTERM, then SIGKILL after `grace` seconds; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace)
    return proc.returncode


_GIVEN: set[int] = set()


def free_port() -> int:
    """A TCP port free on every address right now, taken below the kernel's ephemeral range.

    A port the kernel hands out (bind to port 0) is one it may give the next outgoing connection too,
    before whoever asked binds it: podman's publish of such a port failed once in CI with "address already
    in use". Below the range, only a listener can take it, and the bind on every address checks that.
    """
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    # Below the range; above it when the range starts low (a host tuned for many connections).
    lowest, highest = (max(1024, low - 12000), low) if low > 2048 else (high + 1, min(65536, high + 12001))
    for _ in range(500 if lowest < highest else 0):
        port = random.randrange(lowest, highest)
        if port in _GIVEN or not _free(port):  # two asked in a row before either is bound
            continue
        _GIVEN.add(port)
        return port
    raise RuntimeError(f"no free TCP port in {lowest}-{highest - 1}")


def _free(port: int) -> bool:
    """Nothing bound to `port` on any IPv4 or IPv6 address (podman publishes on both)."""
    for family, address in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            with socket.socket(family) as s:
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind((address, port))
        except OSError as exc:
            if family == socket.AF_INET6 and exc.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                continue  # no IPv6 on this host
            return False
    return True


class ExporterProcess:
    """Starts `serve` with an environment, waits for /healthz, stops it or kills it."""

    def __init__(self, tmp_path: Path, env: dict[str, str], prefix: list[str] | None = None,
                 ca: str | None = None, auth: tuple[str, str] | None = None, cert: tuple[str, str] | None = None):
        self.port = free_port()
        # With a web config: HTTPS checked against `ca`, basic auth as `auth`, for every request here.
        self.verify, self.credentials, self.cert = (ca or True), auth, cert
        self.url = f"{'https://localhost' if ca else 'http://127.0.0.1'}:{self.port}"
        self.db = tmp_path / "db.sqlite"
        self.log_path = tmp_path / f"exporter-{self.port}.log"
        self.env = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": f"sqlite:///{self.db}",
                    "EXPORTER_LISTEN_ADDRESS": f"127.0.0.1:{self.port}", "EXPORTER_REFRESH_INTERVAL": "0",
                    "EXPORTER_LOG_LEVEL": "DEBUG", **env}
        self.prefix = prefix or []  # a command the exporter runs under (e.g. unshare with a read-only mount)
        self.proc: subprocess.Popen | None = None

    def start(self, wait: float = 20) -> ExporterProcess:
        command = [str(BIN), "--env-file", os.devnull, "serve"]
        command = [*self.prefix, *command]
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed by stop() or kill9()
        self.proc = subprocess.Popen(command, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=self.db.parent)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exporter exited {self.proc.returncode}: {self.logs()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1, verify=self.verify, auth=self.credentials,
                                cert=self.cert).ok:
                    return self
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(f"exporter did not answer in {wait}s: {self.logs()}")

    def __enter__(self) -> ExporterProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def db_path(self) -> Path:
        return self.db

    def api(self, path: str = "/api/datastores") -> dict:
        """GET a JSON answer."""
        return self.get(path).json()

    def get(self, path: str, **kw) -> requests.Response:
        kw.setdefault("verify", self.verify)
        kw.setdefault("auth", self.credentials)
        kw.setdefault("cert", self.cert)
        return requests.get(self.url + path, timeout=kw.pop("timeout", 10), **kw)

    def post(self, path: str, **kw) -> requests.Response:
        kw.setdefault("verify", self.verify)
        kw.setdefault("auth", self.credentials)
        kw.setdefault("cert", self.cert)
        return requests.post(self.url + path, timeout=kw.pop("timeout", 30), **kw)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        code = terminate(self.proc)
        self.log.close()
        return code

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)
        self.log.close()
