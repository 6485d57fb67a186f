"""The Grafana dashboard, statically: schema, data source wiring, variables, units, metric names."""

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.needs import in_ci, load_yaml, require_tool
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
    assert [v["name"] for v in variables] == ["datasource", "job", "cluster", "node", "datastore", "type"]
    assert variables[0]["type"] == "datasource" and variables[0]["query"] == "prometheus"
    for variable in variables[1:]:
        assert variable["type"] == "query"
        gq.parse_label_values(gq.variable_query(variable))
    by_name = {v["name"]: v for v in variables}
    for name in ("cluster", "node", "datastore"):
        assert by_name[name]["multi"] and by_name[name]["includeAll"], name
        assert by_name[name]["allValue"] == ".*", name
    assert gq.parse_label_values(gq.variable_query(by_name["cluster"])) == (
        'pve_datastore_info{job=~"$job"}', "pve_cluster")
    for name in ("node", "datastore", "type"):  # they list the selected clusters' values only
        assert 'pve_cluster=~"$cluster"' in gq.variable_query(by_name[name]), name


def test_every_variable_is_used_by_every_capacity_query(dashboard):
    for panel, target in gq.iter_targets(dashboard):
        expr = target["expr"]
        assert '$job"' in expr, (panel["title"], target["refId"])
        assert 'pve_cluster=~"$cluster"' in expr, (panel["title"], target["refId"])
        if "pve_datastore_size_bytes" in expr or "pve_datastore_available_bytes" in expr:
            for var in ("$node", "$datastore", "$type"):
                assert var in expr, (panel["title"], var)
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            assert 'pve_cluster=~"$cluster"' in annotation["expr"], annotation["name"]


def test_legends_name_the_cluster(dashboard):
    # Several clusters on one panel must be told apart; a stat with one value shows no name at all.
    for panel, target in gq.iter_targets(dashboard):
        if panel["type"] != "table":
            assert "{{pve_cluster}}" in target["legendFormat"], (panel["title"], target["refId"])
    table = next(p for p in gq.iter_panels(dashboard) if p["title"] == "Datastores")
    organize = next(t for t in table["transformations"] if t["id"] == "organize")["options"]
    assert organize["renameByName"]["pve_cluster"] == "Cluster" and organize["indexByName"]["pve_cluster"] == 0


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
    for title in ("Capacity", "Used %", "Default HDD datastore", "Default SSD datastore", "Last refresh", "Role",
                  "Age of last successful refresh", "Used % per datastore and node", "Time until full",
                  "Datastores", "Available over time", "Growth rate"):
        assert title in titles, title
    by_title = {p["title"]: p for p in gq.iter_panels(dashboard)}
    assert "predict_linear" in by_title["Time until full"]["targets"][0]["expr"]
    assert "empty" in by_title["Time until full"]["description"]
    assert "pve_datastore_last_refresh_success_timestamp_seconds" in by_title[
        "Age of last successful refresh"]["targets"][0]["expr"]
    assert "pve_datastore_leader" in by_title["Role"]["targets"][0]["expr"]
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
            assert re.search(r"(max|min) by \(job, pve_cluster, datastore\)", expr), panel["title"]


def clauses(expr):
    """(keyword, labels) of every `by (...)` and `on (...)` of an expression."""
    return [(word, {label.strip() for label in labels.split(",")})
            for word, labels in re.findall(r"\b(by|on)\s*\(([^)]*)\)", expr)]


def test_every_join_and_aggregation_keeps_the_clusters_apart(dashboard):
    # Every by/on keeps job and either instance (one exporter) or pve_cluster (all its replicas).
    for expr in dashboard_exprs(dashboard):
        for word, labels in clauses(expr):
            assert "job" in labels and labels & {"instance", "pve_cluster"}, (word, labels, expr)


def test_replicas_are_joined_one_by_one_and_aggregated_by_cluster(dashboard):
    # A datastore series meets the info/active series of its own replica (on instance) and the
    # replicas are then merged (by pve_cluster, without instance): two replicas never count twice.
    # (Merged figures are joined on pve_cluster alone; test_no_panel_counts_a_replica_twice runs them.)
    joins_within_a_replica = 0
    for expr in dashboard_exprs(dashboard):
        for word, labels in clauses(expr):
            if "datastore" in labels:
                assert "pve_cluster" in labels, (labels, expr)
                if word == "by":
                    assert "instance" not in labels, (labels, expr)
                joins_within_a_replica += word == "on" and "instance" in labels
    assert joins_within_a_replica


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


# --- Every panel's query on a real Prometheus holding two replicas of each of two clusters ------
#
# One TSDB, backfilled with `promtool tsdb create-blocks-from openmetrics` (no scrape, no exporter,
# fixed timestamps): job SINGLE has one exporter per cluster, job PAIR two replicas per cluster with
# the same figures (as replicas over one database have). Every panel must answer the same for both
# jobs: a query that sums or counts over replicas answers twice as much under PAIR.

SINGLE, PAIR = "pve-datastore-single", "pve-datastore-pair"
CLUSTERS = {"alpha": 1, "beta": 2}  # cluster -> a scale, so the clusters' figures differ
NODES = ("pve1", "pve2", "pve3")
GIB = 1 << 30
STEP, SAMPLES = 60, 120  # two hours of samples a minute apart, ending at END
END = 1_700_006_400  # a fixed time (2023-11-15), so the test never depends on the clock
MACROS = {**gq.TEST_MACROS, "__rate_interval": "4m"}  # deriv/rate need samples a minute apart
# (name, type, content, shared, enabled, {node: (size GiB, used GiB at the start, GiB a minute)}, active nodes)
DATASTORES = [
    ("ceph-vm", "rbd", "images,rootdir", True, True, {n: (10240, 3072, 1.0) for n in NODES}, NODES),
    ("nas-backup", "nfs", "backup,iso", True, True, {n: (4096, 1024, 0.0) for n in NODES}, NODES),
    ("local-lvm", "lvmthin", "images,rootdir", False, True,
     {"pve1": (1024, 200, 0.1), "pve2": (2048, 100, 0.0), "pve3": (1024, 900, 0.2)}, NODES),
    ("local", "dir", "backup,iso,vztmpl", False, True, {n: (100, 20, 0.0) for n in NODES}, NODES),
    ("tank", "zfspool", "images,rootdir", False, True, {"pve1": (500, 50, 0.0)}, ("pve1",)),  # gone on pve2
    ("old-iso", "dir", "iso", False, False, {}, ()),
]


def capacity(scale, name, node, index):
    """(size, used, available) in bytes of a datastore on a node at sample `index`."""
    size, used, rate = next(d[5] for d in DATASTORES if d[0] == name)[node]
    size, used = size * scale * GIB, (used + rate * index) * scale * GIB
    return size, used, size - used


def replica_series(cluster, scale, leader, index):
    """{series: value} that one replica of `cluster` exports at sample `index` (pve_cluster, datastore and self-metrics)."""
    base = f'pve_cluster="{cluster}"'
    out = {}
    for name, kind, content, shared, enabled, nodes, active in DATASTORES:
        flags = dict(shared=shared, enabled=enabled, is_default_hdd=name == "ceph-vm", is_default_ssd=name == "local")
        attributes = ",".join(f'{k}="{str(v).lower()}"' for k, v in flags.items())
        out[f'pve_datastore_info{{{base},datastore="{name}",type="{kind}",content="{content}",{attributes}}}'] = 1
        for node in nodes:
            labels = f'{base},datastore="{name}",node="{node}"'
            out[f"pve_datastore_active{{{labels}}}"] = int(node in active)
            if node in active:
                for metric, value in zip(("size", "used", "available"), capacity(scale, name, node, index), strict=True):
                    out[f"pve_datastore_{metric}_bytes{{{labels}}}"] = value
    for role, name in (("hdd", "ceph-vm"), ("ssd", "local")):
        out[f'pve_datastore_default{{{base},role="{role}",datastore="{name}",source="db"}}'] = 1
    out.update(risk_series(base, cluster, scale))
    refreshes = index if leader else 0  # followers make no refresh of their own
    out.update({"up": 1, "pve_datastore_up": 1, "pve_datastore_leader": int(leader),
                "pve_datastore_last_refresh_success_timestamp_seconds": END - (SAMPLES - 1 - index) * STEP - 5,
                'pve_datastore_refresh_duration_seconds_bucket{le="0.5"}': refreshes,
                'pve_datastore_refresh_duration_seconds_bucket{le="+Inf"}': refreshes,
                "pve_datastore_refresh_duration_seconds_sum": 0.2 * refreshes,
                "pve_datastore_refresh_duration_seconds_count": refreshes,
                'pve_datastore_refresh_failures_total{reason="timeout"}': refreshes // 10})
    return out


def risk_series(base, cluster, scale):
    """The per-node reads' series of one replica: thin pools (one backing no datastore), a zpool, disks, provisioned."""
    out = {}
    for i, node in enumerate(NODES):
        pool = f'{base},datastore="local-lvm",node="{node}",thin_pool="pve/data"'
        out[f"pve_datastore_thin_metadata_size_bytes{{{pool}}}"] = GIB
        out[f"pve_datastore_thin_metadata_used_bytes{{{pool}}}"] = GIB * (0.3 + 0.3 * i) // scale
        size = capacity(scale, "local-lvm", node, 0)[0]
        out[f'pve_datastore_provisioned_bytes{{{base},datastore="local-lvm",node="{node}"}}'] = size * (1 + i) // 2
    spare = f'{base},node="pve1",thin_pool="vg-spare/scratch"'  # backs no datastore: no datastore label
    out[f"pve_datastore_thin_metadata_size_bytes{{{spare}}}"] = GIB
    out[f"pve_datastore_thin_metadata_used_bytes{{{spare}}}"] = GIB // 10
    out[f'pve_datastore_provisioned_bytes{{{base},datastore="ceph-vm",node="pve1"}}'] = 12288 * scale * GIB
    zpool = f'{base},node="pve1",pool="tank"'
    health = "DEGRADED" if cluster == "beta" else "ONLINE"
    for state in ("ONLINE", "DEGRADED", "FAULTED"):
        out[f'pve_datastore_zfs_pool_state{{{zpool},state="{state}"}}'] = int(state == health)
    out.update({f"pve_datastore_zfs_pool_size_bytes{{{zpool}}}": 1000 * GIB, f"pve_datastore_zfs_pool_allocated_bytes{{{zpool}}}":
                850 * GIB, f"pve_datastore_zfs_pool_fragmentation_ratio{{{zpool}}}": 0.31})
    for node, devpath, kind, healthy, life in (("pve1", "/dev/sda", "ssd", 1, 0.07), ("pve2", "/dev/sdb", "hdd", 0, None)):
        disk = f'{base},node="{node}",devpath="{devpath}"'
        out[f'pve_datastore_disk_info{{{disk},type="{kind}",model="M-{kind}",serial="S{scale}"}}'] = 1
        out[f"pve_datastore_disk_healthy{{{disk}}}"] = healthy
        if life is not None:
            out[f"pve_datastore_disk_life_left_ratio{{{disk}}}"] = life
    return out


def openmetrics():
    """Two clusters, each exported once under SINGLE and by two replicas under PAIR, as OpenMetrics text."""
    samples = {}
    for cluster, scale in CLUSTERS.items():
        targets = [(SINGLE, f"{cluster}-0:9863", True), (PAIR, f"{cluster}-1:9863", True),
                   (PAIR, f"{cluster}-2:9863", False)]
        for job, instance, leader in targets:
            for index in range(SAMPLES):
                when = END - (SAMPLES - 1 - index) * STEP
                for series, value in replica_series(cluster, scale, leader, index).items():
                    name, _, labels = series.partition("{")
                    target = f'job="{job}",instance="{instance}"'
                    labels = f"{{{target},{labels}" if labels else f"{{{target}}}"
                    samples.setdefault(name, []).append(f"{name}{labels} {value} {when}")
    return "".join(f"# TYPE {name} unknown\n" + "\n".join(lines) + "\n" for name, lines in samples.items()) + "# EOF\n"


class BackfilledPrometheus:
    """A real Prometheus on loopback over a backfilled TSDB, scraping nothing."""

    def __init__(self, workdir):
        from tools.processes import free_port

        data = workdir / "om.txt"
        data.write_text(openmetrics())
        subprocess.run([require_tool("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(data),
                        str(workdir / "tsdb")], check=True, capture_output=True, timeout=120)
        (workdir / "prometheus.yml").write_text("global: {evaluation_interval: 1m}\n")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(workdir / "prometheus.log", "w")  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            [require_tool("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'tsdb'}", "--storage.tsdb.retention.time=100y",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=workdir)

    def api(self, path, **params):
        body = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10).json()
        assert body["status"] == "success", (path, params, body)
        return body["data"]

    def query(self, expr):
        return self.api("query", query=expr, time=END)["result"]

    def stop(self):
        from tools.processes import terminate

        terminate(self.process)
        self.log.close()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    """The backfilled Prometheus, once it answers with every sample loaded."""
    require_tool("promtool")
    require_tool("prometheus")
    prometheus = BackfilledPrometheus(tmp_path_factory.mktemp("replicas"))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if prometheus.query(f'count(up{{job="{PAIR}"}})'):
                    break
            except (requests.RequestException, ValueError, AssertionError):
                pass
            assert time.monotonic() < deadline and prometheus.process.poll() is None, "Prometheus never got ready"
            time.sleep(0.2)
        yield prometheus
    finally:
        prometheus.stop()


def answers(prometheus, dashboard, job, cluster=".*"):
    """{(panel, refId): {labels without job and instance: value}} of every panel query, and the raw results."""
    values = gq.resolve_variables(prometheus, dashboard, ".*", at=END)
    values.update(job=gq.regex_value([job]), cluster=cluster)
    found, raw = {}, {}
    for panel, target in gq.iter_targets(dashboard):
        key = (panel["title"], target["refId"])
        raw[key] = prometheus.query(gq.substitute(target["expr"], values, MACROS))
        found[key] = {tuple(sorted((k, v) for k, v in s["metric"].items() if k not in ("job", "instance"))):
                      float(s["value"][1]) for s in raw[key]}
    return found, raw


PER_REPLICA = {"Last refresh", "Role", "Age of last successful refresh", "Scrape", "Refresh duration",
               "Refresh failures by reason"}


@pytest.mark.slow
def test_the_variables_list_both_clusters(replicas, dashboard):
    values = gq.resolve_variables(replicas, dashboard, at=END)
    assert values["cluster"] == "(alpha|beta)"
    assert values["node"] == "(pve1|pve2|pve3)"
    assert "old-iso" in values["datastore"] and "rbd" in values["type"]


@pytest.mark.slow
def test_no_panel_counts_a_replica_twice(replicas, dashboard):
    single, _ = answers(replicas, dashboard, SINGLE)
    pair, raw = answers(replicas, dashboard, PAIR)
    assert len(single) >= 20
    wrong = []
    for key, result in single.items():
        clusters = {dict(labels).get("pve_cluster") for labels in result}
        if clusters != set(CLUSTERS):  # every panel answers, and every series names its cluster
            wrong.append(f"{key}: clusters {clusters}")
        elif key[0] in PER_REPLICA:  # one series per replica, each with its cluster
            if len(raw[key]) != 2 * len(result):
                wrong.append(f"{key}: {len(raw[key])} series for two replicas of {len(result)}")
        elif any("instance" in s["metric"] for s in raw[key]):
            wrong.append(f"{key}: one series per replica, {len(raw[key])} for {len(result)}")
        elif pair[key].keys() != result.keys() or any(
                pair[key][labels] != pytest.approx(value, rel=1e-9) for labels, value in result.items()):
            wrong.append(f"{key}: {result} with one exporter, {pair[key]} with two replicas")
    assert not wrong, "\n".join(wrong)


@pytest.mark.slow
def test_the_cluster_variable_selects_one_cluster(replicas, dashboard):
    one, _ = answers(replicas, dashboard, PAIR, cluster="beta")
    both, _ = answers(replicas, dashboard, PAIR)
    for key, result in one.items():
        assert result, key
        assert {dict(labels).get("pve_cluster") for labels in result} == {"beta"}, key
        if key[0] not in PER_REPLICA:
            assert result == {k: v for k, v in both[key].items() if ("pve_cluster", "beta") in k}, key


@pytest.mark.slow
def test_the_risk_row_answers_per_object_once_for_two_replicas(replicas, dashboard):
    pair, _ = answers(replicas, dashboard, PAIR, cluster="beta")
    thin = {dict(k)["node"] + " " + dict(k)["thin_pool"]: v for k, v in pair[("Thin pool metadata by node", "A")].items()}
    assert thin == pytest.approx({"pve1 pve/data": 0.15, "pve2 pve/data": 0.3, "pve3 pve/data": 0.45,
                                  "pve1 vg-spare/scratch": 0.1}, abs=0.001)  # the unbacked pool too
    over = {(dict(k)["datastore"], dict(k)["node"]): v for k, v in pair[("Overcommit per datastore", "A")].items()}
    assert over[("ceph-vm", "shared")] == pytest.approx(12288 / 10240) and over[("local-lvm", "pve3")] == pytest.approx(1.5)
    assert [dict(k)["state"] for k in pair[("ZFS pools", "A")]] == ["DEGRADED"]
    smart = {dict(k)["devpath"]: v for k, v in pair[("Disks: SMART and life left", "A")].items()}
    assert smart == {"/dev/sda": 1.0, "/dev/sdb": 0.0}
    assert list(pair[("Disks: SMART and life left", "B")].values()) == pytest.approx([7.0])


@pytest.mark.slow
@pytest.mark.parametrize("title, column", [("Capacity", 0), ("Used", 1), ("Available", 2)])
def test_cluster_totals_count_shared_datastores_once_and_replicas_once(replicas, dashboard, title, column):
    pair, _ = answers(replicas, dashboard, PAIR)
    for cluster, scale in CLUSTERS.items():
        expected = 0
        for name, _, _, shared, enabled, nodes, active in DATASTORES:
            figures = [capacity(scale, name, node, SAMPLES - 1)[column] for node in nodes if node in active]
            expected += (max(figures) if shared else sum(figures)) if figures and enabled else 0
        (value,) = [v for labels, v in pair[(title, "A")].items() if dict(labels)["pve_cluster"] == cluster]
        assert value == pytest.approx(expected, rel=1e-9), cluster
