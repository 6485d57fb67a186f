"""End to end: simulated cluster -> exporter (`serve`) -> real Prometheus with the rules -> every
dashboard query answers, every rule group is healthy."""

import re

import pytest
import requests

from tests.needs import require_tool
from tools import grafana_queries as gq
from tools.stack import ROOT, RULES, running_stack, wait_for

pytestmark = pytest.mark.slow

CAPACITY = re.compile(r"pve_datastore_(size|used|available)_bytes")
SHARED_AND_LOCAL = {"ceph-vm", "local-lvm"}  # one shared (rbd) and one local (lvmthin) datastore


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Simulator (drifting every second) + exporter subprocess + Prometheus, with a few samples."""
    require_tool("prometheus")  # skip (or fail in CI) before starting anything
    with running_stack(tmp_path_factory.mktemp("stack")) as (prometheus, exporter):
        # deriv/predict_linear need several distinct samples of every capacity series.
        wait_for("8 samples per capacity series", lambda: prometheus.query(
            "min(count_over_time(pve_datastore_used_bytes[1m])) >= 8"))
        yield prometheus, exporter.url


def test_every_rule_group_loads_and_evaluates_ok(stack):
    prometheus, _ = stack
    expected = set(re.findall(r"^  - name: (\S+)", RULES.read_text(), re.MULTILINE))
    assert expected

    def healthy():
        groups = prometheus.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return {g["name"] for g in groups} == expected and rules and all(r["health"] == "ok" for r in rules)

    wait_for("every rule to be evaluated with health ok", healthy, timeout=15)
    rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
    assert len(rules) == RULES.read_text().count("\n      - alert: ") + RULES.read_text().count("\n      - record: ")
    assert not [r for r in rules if r.get("lastError")]


def test_variables_resolve_from_prometheus(stack):
    prometheus, _ = stack
    values = gq.resolve_variables(prometheus, gq.load())
    assert values["job"] == "pve-datastore"
    assert values["node"] == "(pve1|pve2|pve3)"
    assert "local-lvm" in values["datastore"] and "ceph-vm" in values["datastore"]
    assert "rbd" in values["type"]


@pytest.mark.parametrize("all_value", [None, ".*"], ids=["every-value", "all"])
def test_every_dashboard_query_answers_with_data(stack, all_value):
    prometheus, _ = stack
    dashboard = gq.load()
    values = gq.resolve_variables(prometheus, dashboard, all_value)
    empty, one_sided = [], []
    count = 0
    for panel, target in gq.iter_targets(dashboard):
        expr = gq.substitute(target["expr"], values)
        count += 1
        result = prometheus.query(expr)
        datastores = {s["metric"]["datastore"] for s in result if "datastore" in s["metric"]}
        if not result:
            empty.append(f"{panel['title']} [{target['refId']}]: {expr}")
        elif CAPACITY.search(expr) and datastores and not SHARED_AND_LOCAL <= datastores:
            # Both halves of the shared/local split must answer, not just one of them.
            one_sided.append(f"{panel['title']} [{target['refId']}]: {sorted(datastores)}")
    assert count >= 20
    assert not empty, "queries without data:\n" + "\n".join(empty)
    assert not one_sided, "queries missing shared or local datastores:\n" + "\n".join(one_sided)
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            prometheus.query(gq.substitute(annotation["expr"], values))  # valid, possibly empty


@pytest.mark.parametrize("title, key, tolerance", [
    ("Capacity", "size", 0.0),  # sizes do not drift: exact
    ("Used", "used", 0.02),  # usage drifts by 0.1 % of the size a second
    ("Available", "available", 0.02),
])
def test_dashboard_totals_match_the_exporter_api(stack, title, key, tolerance):
    # The API's figures are cluster-wide (shared once, local summed): the dashboard must agree.
    prometheus, exporter_url = stack
    dashboard = gq.load()
    values = gq.resolve_variables(prometheus, dashboard, ".*")
    panel = next(p for p in gq.iter_panels(dashboard) if p["title"] == title)
    (sample,) = prometheus.query(gq.substitute(panel["targets"][0]["expr"], values))
    datastores = requests.get(exporter_url + "/api/datastores", timeout=5).json()["datastores"]
    expected = sum(d[key] for d in datastores if d["active"] and d["size"])
    assert float(sample["value"][1]) == pytest.approx(expected, rel=tolerance)


def test_datastores_table_queries_line_up_for_the_merge(stack):
    # Grafana's merge transformation joins the table's queries on their labels: every query must
    # answer for the same (job, pve_cluster, datastore) rows, or the table shows half-empty rows.
    prometheus, _ = stack
    dashboard = gq.load()
    values = gq.resolve_variables(prometheus, dashboard, ".*")
    table = next(p for p in gq.iter_panels(dashboard) if p["title"] == "Datastores")
    keys = {}
    for target in table["targets"]:
        result = prometheus.query(gq.substitute(target["expr"], values))
        keys[target["refId"]] = sorted((s["metric"]["pve_cluster"], s["metric"]["datastore"]) for s in result)
    assert len({tuple(k) for k in keys.values()}) == 1, keys
    assert len(keys["A"]) == 5  # local, local-lvm, ceph-vm, nas-backup, tank; old-iso is disabled


def test_shared_datastores_are_one_series_local_ones_one_per_node(stack):
    prometheus, _ = stack
    shared = prometheus.query('datastore:pve_datastore_available_bytes:ratio{datastore="ceph-vm"}')
    assert len(shared) == 1 and "node" not in shared[0]["metric"]
    local = prometheus.query('datastore:pve_datastore_available_bytes:ratio{datastore="local-lvm"}')
    assert sorted(s["metric"]["node"] for s in local) == ["pve1", "pve2", "pve3"]
    assert not prometheus.query('datastore:pve_datastore_available_bytes:ratio{datastore="old-iso"}')


def test_a_healthy_exporter_raises_no_health_or_default_alert(stack):
    prometheus, _ = stack
    alerts = prometheus.api("alerts")["alerts"]
    names = {a["labels"]["alertname"] for a in alerts}
    assert not names & {"PveDatastoreExporterRefreshFailing", "PveDatastoreExporterStale",
                        "PveDatastoreExporterDown", "PveDefaultDatastoreMissing"}, alerts


def readme_promql():
    """Every expression of the README's ```promql blocks (blank-line separated, comments dropped)."""
    blocks = re.findall(r"```promql\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    found = []
    for block in blocks:
        for chunk in re.split(r"\n\s*\n", block):
            expr = "\n".join(line for line in chunk.splitlines() if not line.lstrip().startswith("#")).strip()
            if expr:
                found.append(expr)
    return found


def test_readme_promql_examples_answer_with_data(stack):
    prometheus, _ = stack
    examples = readme_promql()
    assert len(examples) >= 4
    for expr in examples:
        assert prometheus.query(expr), f"README example answered nothing: {expr}"
