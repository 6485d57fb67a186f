"""The bench harness at a tiny size for one round: structure only, never a timed assertion."""

import dataclasses
import json

import pytest

from tools.bench import report
from tools.bench.exporters import peer_versions
from tools.bench.loadgen import percentile
from tools.bench.run import run, tiny_plan

pytestmark = pytest.mark.slow


def test_percentile_is_nearest_rank():
    samples = [float(v) for v in range(1, 101)]
    assert (percentile(samples, 50), percentile(samples, 99), percentile([7.0], 99)) == (50.0, 99.0, 7.0)
    assert percentile([], 50) is None


def test_ratio_reads_both_ways():
    assert (report.ratio(25.0), report.ratio(0.01), report.ratio(None)) == ("25x", "1/100", "–")


@pytest.mark.timeout(60)
def test_tiny_bench_writes_one_table(tmp_path):
    # The peer runs only when `make bench` already built its venv: a test never installs it.
    with_peer = (peer_versions() or {}).get("prometheus-pve-exporter", "").startswith("3.10.")
    plan = dataclasses.replace(tiny_plan(), with_peer=with_peer)
    out = tmp_path / "out"
    out.mkdir()

    results = run(plan, out, tmp_path / "work")

    size = results["sizes"]["S"]
    assert size["rows"] > 0 and size["bytes"]["ours_gzip"] > 0
    for latency in ("0", "30"):
        entry = size["latency"][latency]
        assert entry["ours"]["proxmox_requests_per_scrape"] == 0  # a scrape never calls Proxmox
        assert entry["refresh"]["proxmox_requests_per_refresh"] == 2
        assert entry["ours"]["sequential"]["errors"] == entry["ours"]["concurrent"]["errors"] == 0
        assert entry["ours"]["concurrent"]["clients"] == 16
        if with_peer:
            assert entry["peer"]["proxmox_requests_per_scrape"] >= 1
            assert entry["peer"]["sequential"]["errors"] == 0
        tls = entry["tls"]  # issue 11: the same exporter over TLS with basic auth, kept alive and not
        assert all(tls[load]["errors"] == 0 and tls[load]["scrapes"] > 0
                   for load in ("sequential", "concurrent", "new_connection"))
    assert size["latency"]["0"]["static"]["sequential"]["content_encoding"] == "gzip"
    assert size["rss_mb"]["ours"] > 0
    # Issue 21: start-up, instances, page polls (304s while nothing changed), nginx when installed.
    assert 0 < size["start_up"]["filled"]["healthz_s"] <= size["start_up"]["filled"]["metrics_with_data_s"]
    assert size["instances"]["2"]["pss_mb"] > size["instances"]["1"]["pss_mb"] > 0
    assert size["interpreter_flags"]["plain"] > 0 and size["interpreter_flags"]["shipped"] > 0
    unchanged = size["page_polls"]["unchanged"]  # the status part is new if its age read otherwise meanwhile
    assert list(unchanged) == ["/?part=status"] and unchanged["/?part=status"]["status"] in (200, 304)
    assert {p["status"] for p in size["page_polls"]["after a default changed"].values()} == {200}
    if plan.nginx_sizes:
        assert size["latency"]["0"]["nginx"]["sequential"]["errors"] == 0
    assert results["imports_ms"]["total"] > 0

    saved = json.loads((out / "results.json").read_text())
    assert saved["meta"]["ours_version"] and saved["meta"]["machine"]
    markdown = (out / "results.md").read_text()
    tables = [line for line in markdown.splitlines() if line.startswith("| Size ")]
    assert len(tables) == 1
    assert "Proxmox requests per scrape" in markdown and "**PASS**" in markdown
    assert "scrape p50 over TLS + basic auth, new connection per scrape" in markdown
    refreshes, scrapes, rounds = plan.flag_rounds  # the row says what was run, not the full plan's figures
    assert f"VmRSS after {refreshes} refreshes and {scrapes} scrapes, the lower of {rounds} (MB)" in markdown
    assert all(row["verdict"] in ("", "PASS", "MISS") for row in saved["table"])


@pytest.mark.timeout(60)
def test_the_pools_read_rows_at_a_tiny_size(tmp_path):
    from tools.bench import risk

    results = risk.bench(("S",), tmp_path, say=lambda message: None, refreshes=1, scrapes=5, seconds=1)
    size = results["S"]
    read = size["pools_read"]
    assert read["proxmox_requests"] == 2 * 3 and read["nodes_failed"] == 0 and read["thin_pools"] >= 3  # lvmthin + zfs per node
    assert size["pools_off"]["scrape_p50_ms"] > 0 and size["pools_on"]["refresh_median_s"] > 0
    md = tmp_path / "results.md"
    md.write_text("# head\n")
    risk.append(results, md)
    assert "| S: 3 × 6 | 6 (2 per node) |" in md.read_text()
