"""Screenshots of the page for the README: `python -m tools.screenshot` (make screenshot).

Starts the simulated cluster and the exporter like the demo, puts two datastores over the 80 %
and 90 % marks, presses Refresh on the page, and saves a wide and a narrow full-page PNG in English
and a wide one in Korean (a browser asking for ko-KR; a Korean font such as fonts-nanum is needed).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from pve_datastore_exporter.simulator import Simulator
from pve_datastore_exporter.simulator.risk import stage_demo

from .browser import CHROMIUM, ExporterProcess, launch_chromium

DOCS = Path(__file__).resolve().parent.parent / "docs"
# name: (width, height, the browser's locale, what the page says once the refresh is done)
SHOTS = {"screenshot.png": (1280, 860, "en-US", "Refreshed"), "screenshot-narrow.png": (375, 812, "en-US", "Refreshed"),
         "screenshot-ko.png": (1280, 860, "ko-KR", "새로고침했습니다")}


def take(url: str, out: Path) -> list[Path]:
    """Open the page at each width, refresh it, and save the PNGs."""
    from playwright.sync_api import expect, sync_playwright

    saved = []
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        for name, (width, height, locale, done) in SHOTS.items():
            page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=1, locale=locale)
            page.goto(url)
            page.click("#refresh")
            expect(page.locator("#messages")).to_contain_text(done, timeout=20_000)
            if width > 800:
                page.click('tr.ds[data-id="local-lvm"] button.toggle')
            page.evaluate("document.activeElement && document.activeElement.blur()")
            page.screenshot(path=out / name, full_page=True)
            saved.append(out / name)
            page.close()
        browser.close()
    return saved


def wait_for_reads(url: str, timeout: float = 30.0) -> None:
    """Until the first refresh and every per-node read (pools, disks, provisioned) are stored."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = requests.get(url + "/api/datastores", timeout=5).json()
        if len({r["read"] for r in answer.get("node_reads", ())}) == 3:
            return
        time.sleep(0.2)
    raise RuntimeError("the per-node reads did not all run")


def main(argv: list[str] | None = None) -> int:
    """Run the simulator and the exporter, take the screenshots, stop both."""
    parser = argparse.ArgumentParser(prog="python -m tools.screenshot", description=__doc__)
    parser.add_argument("--out", type=Path, default=DOCS, help="directory for the PNGs (default %(default)s)")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"screenshot: {CHROMIUM} is missing (apt-get install chromium)", file=sys.stderr)
        return 1
    fonts = shutil.which("fc-list") and subprocess.run(["fc-list", ":lang=ko"], capture_output=True, text=True).stdout
    if not fonts:
        print("screenshot: no Korean font found (apt-get install fonts-nanum): screenshot-ko.png shows boxes",
              file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pve-screenshot-") as tmp:
        with Simulator(nodes=3, datastores=6, random_seed=1, drift=False, state_dir=Path(tmp, "sim"), auth_delay=0.2) as sim:
            sim.cluster.set_usage("local-lvm", fraction=0.93, node="pve2")
            sim.cluster.set_usage("local-lvm", fraction=0.88, node="pve1")
            sim.cluster.set_usage("local-lvm", fraction=0.78, node="pve3")
            sim.cluster.set_usage("nas-backup", fraction=0.91)
            stage_demo(sim.cluster)  # the Risk column: a degraded zpool, thin metadata at 93 %, a worn SSD
            reads = {"EXPORTER_DISKS_INTERVAL": "600", "EXPORTER_PROVISIONED_INTERVAL": "600"}
            with ExporterProcess(sim.env(), tmp, extra_env=reads) as exporter:
                wait_for_reads(exporter.url)
                for path in take(exporter.url + "/", args.out):
                    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
