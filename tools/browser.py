"""A real exporter process against the simulator, and Debian's Chromium driven by Playwright.

Shared by the screenshot script (python -m tools.screenshot), the dashboard picture and tests/test_page.py.
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
    """`serve` on a free loopback port with a SQLite file of its own, set up for the page."""

    def __init__(self, sim_env: dict, workdir: str | os.PathLike | None = None, api_token: str = "",
                 refresh_interval: int = 0, extra_env: dict | None = None):
        env = {**sim_env, "EXPORTER_API_TOKEN": api_token, "EXPORTER_REFRESH_INTERVAL": str(refresh_interval),
               "EXPORTER_LOG_LEVEL": "WARNING", **(extra_env or {})}
        super().__init__(Path(workdir or tempfile.mkdtemp(prefix="pve-page-")), env)


def launch_chromium(playwright):
    """Debian's Chromium, headless, through Playwright."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
