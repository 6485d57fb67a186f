"""A real exporter process against the simulator, and Debian's Chromium driven by Playwright.

Shared by tests/test_page.py and the screenshot script (python -m tests.screenshot).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

CHROMIUM = "/usr/bin/chromium"
# Playwright's own browsers cannot be downloaded here; Debian's Chromium, cut off from the network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ExporterProcess:
    """`python -m pve_datastore_exporter serve` on a free loopback port, with a SQLite file of its own."""

    def __init__(self, sim_env: dict, workdir: str | os.PathLike | None = None, api_token: str = "",
                 refresh_interval: int = 0, extra_env: dict | None = None):
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="pve-page-"))
        self.db_path = self.workdir / "db.sqlite"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **sim_env, "DATABASE_URL": f"sqlite:///{self.db_path}",
                    "EXPORTER_LISTEN_ADDRESS": f"127.0.0.1:{self.port}",
                    "EXPORTER_REFRESH_INTERVAL": str(refresh_interval), "EXPORTER_API_TOKEN": api_token,
                    "EXPORTER_LOG_LEVEL": "WARNING", **(extra_env or {})}
        self.log_path = self.workdir / "exporter.log"
        self.process = None

    def start(self, timeout: float = 20) -> ExporterProcess:
        """Start and wait until /healthz answers."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pve_datastore_exporter", "--env-file", os.devnull, "serve"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"exporter exited with {self.process.returncode}: {self.log()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).ok:
                    return self
            except requests.RequestException:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"exporter did not answer within {timeout} s: {self.log()}")

    def log(self) -> str:
        """What the exporter wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api(self, path: str = "/api/datastores") -> dict:
        """GET a JSON answer."""
        return requests.get(self.url + path, timeout=10).json()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def launch_chromium(playwright):
    """Debian's Chromium, headless, through Playwright."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def iec(value: int | None) -> str:
    """The page's size text (template macro `iec`, page.js `iec`): two decimals, half up."""
    if value is None:
        return "–"
    unit, name = 1, "B"
    for candidate in ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if value >= unit * 1024:
            unit, name = unit * 1024, candidate
    if unit == 1:
        return f"{value} B"
    hundredths = (value * 100 + unit // 2) // unit
    return f"{hundredths // 100}.{hundredths % 100:02d} {name}"


def percent(used: int | None, size: int | None) -> str:
    """The page's usage text: one decimal, half up."""
    if not size or used is None:
        return "–"
    tenths = (used * 1000 + size // 2) // size
    return f"{tenths // 10}.{tenths % 10} %"
