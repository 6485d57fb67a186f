"""The run: simulator, exporter and Prometheus; every panel's queries; the page as a PNG from Chromium."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import requests

from .. import grafana_queries as gq
from ..browser import CHROMIUM, launch_chromium
from ..stack import running_stack, wait_for
from .layout import PAGE_WIDTH, layout_panels, panel_key
from .page import render_html

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "docs" / "dashboard.png"
MAX_PNG_BYTES = 600 * 1024
DESCRIPTION = "A picture of the Grafana dashboard's layout and data from a real Prometheus run (not a Grafana screenshot)."


def collect(prometheus, dashboard: dict, values: dict, start: float, end: float, step: float = 1.0) -> dict:
    """Every visible panel's queries: instant at `end`, or over [start, end] for timeseries panels."""
    results = {}
    for panel in layout_panels(dashboard):
        queries = []
        for target in panel.get("targets", []):
            if target.get("hide"):
                continue
            expr = gq.substitute(target["expr"], values)
            entry = {"refId": target.get("refId"), "expr": expr}
            try:
                if panel["type"] == "timeseries":
                    data = prometheus.api("query_range", query=expr, start=start, end=end, step=step)
                else:
                    data = prometheus.api("query", query=expr, time=end)
                entry["result"] = data["result"]
            except (AssertionError, requests.RequestException, ValueError, KeyError) as exc:
                entry["result"], entry["error"] = [], str(exc)[:200]
            queries.append(entry)
        results[panel_key(panel)] = queries
    return results


def gather(seconds: float) -> tuple[dict, dict, dict, tuple[float, float], list[str]]:
    """Run the stack for `seconds` of samples; the dashboard, variable values, results, window and notes."""
    dashboard = gq.load()
    with tempfile.TemporaryDirectory(prefix="pve-dashboard-picture-") as tmp, running_stack(Path(tmp)) as (prometheus, _):
        wait_for("the first sample", lambda: prometheus.query("pve_datastore_up"))
        start = time.time()
        print(f"dashboard-picture: Prometheus on {prometheus.url}, collecting {seconds:.0f} s of 1 s scrapes", flush=True)
        wait_for("8 samples per capacity series", lambda: prometheus.query(
            "min(count_over_time(pve_datastore_used_bytes[1m])) >= 8"), timeout=max(30.0, seconds + 10))
        time.sleep(max(0.0, start + seconds - time.time()))
        end = time.time()
        values = gq.resolve_variables(prometheus, dashboard, ".*")  # the dashboard's default: All
        results = collect(prometheus, dashboard, values, start, end)
        version = prometheus.api("status/buildinfo").get("version", "?")
    stamp = f"{datetime.fromtimestamp(start, UTC):%Y-%m-%d %H:%M:%S}–{datetime.fromtimestamp(end, UTC):%H:%M:%S} UTC"
    notes = [
        f"Prometheus {version} scraping the exporter every 1 s; the simulator has 3 nodes × 6 datastores drifting "
        f"fast, local-lvm (local) and ceph-vm (shared) filling. Window {stamp} ({end - start:.0f} s).",
        "Stat, gauge, bar gauge and table panels: /api/v1/query at the end of the window; time series: "
        "/api/v1/query_range over the window, step 1 s. Variables: All (.*); $__rate_interval = "
        f"{gq.TEST_MACROS['__rate_interval']}. Panels placed from gridPos on a 24-column grid, 30 px per unit "
        "+ 8 px gaps (Grafana's). Drawing is approximate: Grafana's own rendering differs in detail.",
    ]
    return dashboard, values, results, (start, end), notes


def screenshot(page_html: str, out: Path, width: int = PAGE_WIDTH) -> None:
    """Save a full-page PNG of the HTML from headless Chromium; every network request is refused."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900}, device_scale_factor=1)
            page.route("**/*", lambda route: route.abort())
            page.set_content(page_html, wait_until="load")
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    """Run the stack, query every panel, render the page and screenshot it."""
    parser = argparse.ArgumentParser(prog="python -m tools.dashboard_picture", description=DESCRIPTION)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the PNG to write (default %(default)s)")
    parser.add_argument("--html", type=Path, help="also keep the rendered HTML here")
    parser.add_argument("--seconds", type=float, default=30, help="seconds of samples to collect (default %(default)s)")
    args = parser.parse_args(argv)
    for tool in ("prometheus", CHROMIUM):
        if not shutil.which(tool):
            print(f"dashboard-picture: {tool} is missing (.ci/run installs it)", file=sys.stderr)
            return 1
    try:
        dashboard, values, results, window, notes = gather(args.seconds)
    except (TimeoutError, LookupError) as exc:  # the stack never got ready, or a variable has no values
        print(f"dashboard-picture: {exc}", file=sys.stderr)
        return 1
    empty = [p["title"] for p in layout_panels(dashboard)
             if p["type"] != "row" and not any(q.get("result") for q in results.get(panel_key(p), []))]
    if empty:
        print(f"dashboard-picture: panels without data: {', '.join(empty)}", file=sys.stderr)
    page_html = render_html(dashboard, results, values=values, window=window, notes=notes)
    if args.html:
        args.html.write_text(page_html)
        print(f"wrote {args.html}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    screenshot(page_html, args.out)
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size // 1024} KiB)")
    if size > MAX_PNG_BYTES:
        print(f"dashboard-picture: {args.out} is over {MAX_PNG_BYTES // 1024} KiB", file=sys.stderr)
        return 1
    return 0

