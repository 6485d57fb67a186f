"""A real exporter process against the simulator, and Debian's Chromium driven by Playwright.

Shared by tests/test_page.py and the screenshot script (python -m tests.screenshot).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from . import processes

CHROMIUM = "/usr/bin/chromium"
# Playwright's own browsers cannot be downloaded here; Debian's Chromium, cut off from the network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class ExporterProcess(processes.ExporterProcess):
    """`serve` on a free loopback port with a SQLite file of its own, set up for the page's tests."""

    def __init__(self, sim_env: dict, workdir: str | os.PathLike | None = None, api_token: str = "",
                 refresh_interval: int = 0, extra_env: dict | None = None):
        env = {**sim_env, "EXPORTER_API_TOKEN": api_token, "EXPORTER_REFRESH_INTERVAL": str(refresh_interval),
               "EXPORTER_LOG_LEVEL": "WARNING", **(extra_env or {})}
        super().__init__(Path(workdir or tempfile.mkdtemp(prefix="pve-page-")), env)


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
