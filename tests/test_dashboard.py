"""The Grafana dashboard, statically: schema, data source wiring, variables, units, metric names."""

import json
import re
from pathlib import Path

import pytest

from tests.needs import in_ci, load_yaml
from tools import grafana_queries as gq

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "prometheus" / "alerts.yml"
GOLDEN = ROOT / "tests" / "data" / "golden_metrics.txt"
PROVISIONING = ROOT / "grafana" / "provisioning"
ALLOWED_PANELS = {"timeseries", "stat", "gauge", "bargauge", "table", "row", "text"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# A project metric name that is not part of a recording rule's name (those contain colons).
PROJECT_METRIC = re.compile(r"(?<![\w:])((?:pve_datastore|process)_[a-z0-9_]+)(?![\w:])")
RECORDED = re.compile(r"(?<![\w:])([a-z_]+:[a-z0-9_]+:[a-z0-9_]+)(?![\w:])")


@pytest.fixture(scope="module")
def dashboard():
    return gq.load()


def query_panels(dashboard):
    return [p for p in gq.iter_panels(dashboard) if p["type"] not in ("row", "text")]


def dashboard_exprs(dashboard):
    exprs = [t["expr"] for _, t in gq.iter_targets(dashboard)]
    exprs += [gq.variable_query(v) for v in gq.variables(dashboard) if v["type"] == "query"]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    return exprs


def rules_text():
    return RULES.read_text()


def golden_metric_names():
    """Sample and TYPE names of the exporter's golden exposition."""
    if not GOLDEN.exists():
        message = f"{GOLDEN.relative_to(ROOT)} does not exist yet (make golden)"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    names = set()
    for line in GOLDEN.read_text().splitlines():
        if line.startswith(("# TYPE ", "# HELP ")):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def test_identity_and_schema(dashboard):
    assert dashboard["schemaVersion"] == 41
    assert dashboard["uid"] == "pve-datastores"
    assert dashboard["title"] and dashboard["id"] is None
    assert {"proxmox", "pve-datastore-exporter"} <= set(dashboard["tags"])


def test_only_current_panel_types(dashboard):
    types = {p["type"] for p in gq.iter_panels(dashboard)}
    assert types <= ALLOWED_PANELS, types - ALLOWED_PANELS


def test_no_import_placeholders():
    text = gq.DASHBOARD.read_text()
    assert "__inputs" not in text and "__requires" not in text
    assert "DS_PROMETHEUS" not in text


def test_every_query_goes_to_the_datasource_variable(dashboard):
    for panel in query_panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, (panel["title"], target["refId"])
            assert target["expr"].strip(), (panel["title"], target["refId"])
    for variable in gq.variables(dashboard)[1:]:
        assert variable["datasource"] == DATASOURCE, variable["name"]
    for annotation in dashboard["annotations"]["list"]:
        if not annotation.get("builtIn"):
            assert annotation["datasource"] == DATASOURCE, annotation["name"]


def test_variables_in_order(dashboard):
    variables = gq.variables(dashboard)
    assert [v["name"] for v in variables] == ["datasource", "job", "node", "datastore", "type"]
    assert variables[0]["type"] == "datasource" and variables[0]["query"] == "prometheus"
    for variable in variables[1:]:
        assert variable["type"] == "query"
        gq.parse_label_values(gq.variable_query(variable))
    by_name = {v["name"]: v for v in variables}
    for name in ("node", "datastore"):
        assert by_name[name]["multi"] and by_name[name]["includeAll"], name


def test_every_variable_is_used_by_every_capacity_query(dashboard):
    for panel, target in gq.iter_targets(dashboard):
        expr = target["expr"]
        assert '$job"' in expr, (panel["title"], target["refId"])
        if "pve_datastore_size_bytes" in expr or "pve_datastore_available_bytes" in expr:
            for var in ("$node", "$datastore", "$type"):
                assert var in expr, (panel["title"], var)


def test_units_and_thresholds(dashboard):
    units = set()
    for panel in query_panels(dashboard):
        defaults = panel["fieldConfig"]["defaults"]
        panel_units = {defaults.get("unit")} | {
            prop["value"] for o in panel["fieldConfig"]["overrides"] for prop in o["properties"]
            if prop["id"] == "unit"}
        panel_units.discard(None)
        assert panel_units or defaults.get("mappings"), f"{panel['title']} has no unit"
        units |= panel_units
        percent = [defaults] if defaults.get("unit") == "percentunit" else []
        percent += [{p["id"]: p["value"] for p in o["properties"]} for o in panel["fieldConfig"]["overrides"]
                    if any(p["id"] == "unit" and p["value"] == "percentunit" for p in o["properties"])]
        for field in percent:
            steps = [s["value"] for s in field["thresholds"]["steps"]]
            assert steps == [None, 0.8, 0.9], panel["title"]
    assert {"bytes", "percentunit", "s", "binBps"} <= units


def test_panel_titles_are_unique(dashboard):
    titles = [p["title"] for p in gq.iter_panels(dashboard)]
    assert len(titles) == len(set(titles))


def test_layout_is_a_grid_without_overlaps(dashboard):
    panels = list(gq.iter_panels(dashboard))
    assert len({p["id"] for p in panels}) == len(panels)
    cells = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & area, f"{panel['title']} overlaps another panel"
        cells |= area


def test_expected_panels(dashboard):
    titles = {p["title"] for p in gq.iter_panels(dashboard)}
    for title in ("Capacity", "Used %", "Default HDD datastore", "Default SSD datastore", "Last refresh",
                  "Age of last successful refresh", "Used % per datastore and node", "Time until full",
                  "Datastores", "Available over time", "Growth rate"):
        assert title in titles, title
    by_title = {p["title"]: p for p in gq.iter_panels(dashboard)}
    assert "predict_linear" in by_title["Time until full"]["targets"][0]["expr"]
    assert "empty" in by_title["Time until full"]["description"]
    assert "pve_datastore_last_refresh_success_timestamp_seconds" in by_title[
        "Age of last successful refresh"]["targets"][0]["expr"]
    table = by_title["Datastores"]
    assert any("pve_datastore_info" in t["expr"] for t in table["targets"])
    gauge_cells = [o for o in table["fieldConfig"]["overrides"]
                   for p in o["properties"] if p["id"] == "custom.cellOptions" and p["value"]["type"] == "gauge"]
    assert gauge_cells, "the table's Used % column is not a gauge cell"


def test_shared_datastores_are_counted_once(dashboard):
    # Every capacity figure splits on shared: max over nodes for shared, per node/sum for local.
    for panel, target in gq.iter_targets(dashboard):
        expr = target["expr"]
        if re.search(r"pve_datastore_(size|used|available)_bytes", expr):
            assert expr.count('shared="true"') == expr.count('shared="false"') >= 1, panel["title"]
            assert "max by (job, instance, datastore)" in expr, panel["title"]


def test_every_join_and_aggregation_keeps_job_and_instance(dashboard):
    for expr in dashboard_exprs(dashboard):
        for clause in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", expr):
            labels = {label.strip() for label in clause.split(",")}
            assert {"job", "instance"} <= labels, (clause, expr)


def test_metric_names_exist_in_the_golden_exposition(dashboard):
    golden = golden_metric_names()
    used = {m for expr in dashboard_exprs(dashboard) for m in PROJECT_METRIC.findall(expr)}
    used |= set(PROJECT_METRIC.findall(rules_text()))
    assert used, "no metric names found"
    assert not used - golden, f"not in {GOLDEN.name}: {sorted(used - golden)}"


def golden_label_names():
    """metric name -> the label names its golden samples carry."""
    labels = {}
    for line in GOLDEN.read_text().splitlines():
        match = re.match(r"([a-z_:][\w:]*)\{([^}]*)\}", line)
        if match:
            labels.setdefault(match.group(1), set()).update(re.findall(r'(\w+)="', match.group(2)))
    return labels


def test_label_matchers_use_labels_the_exporter_exports(dashboard):
    golden_metric_names()  # skip or fail when the golden file is missing
    exported = golden_label_names()
    texts = [*dashboard_exprs(dashboard), rules_text()]
    for metric, matchers in re.findall(r"(?<![\w:])(pve_datastore_\w+)\{([^}]*)\}", "\n".join(texts)):
        names = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers)) - {"job", "instance"}
        assert names <= exported.get(metric, set()), (metric, names - exported.get(metric, set()))


def test_recorded_names_used_by_the_rules_are_recorded():
    text = rules_text()
    recorded = set(re.findall(r"^\s*- record: (\S+)", text, re.MULTILINE))
    assert RECORDED.findall(text) and set(RECORDED.findall(text)) <= recorded


def test_provisioning_files():
    providers = load_yaml(PROVISIONING / "dashboards" / "pve-datastores.yml")
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
    sources = load_yaml(PROVISIONING / "datasources" / "prometheus.yml")
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["uid"] == "prometheus"


def test_dashboard_json_is_formatted_stably():
    text = gq.DASHBOARD.read_text()
    assert text == json.dumps(json.loads(text), indent=2) + "\n"
