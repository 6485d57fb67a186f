"""The Prometheus rules: promtool's checks and unit tests, and what every alert must carry."""

import re
import subprocess
from pathlib import Path

import pytest

from tests.needs import load_yaml, require_tool

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "prometheus" / "alerts.yml"
RULE_TESTS = sorted((ROOT / "prometheus" / "tests").glob("*.yml"))
EXAMPLE_CONFIG = ROOT / "prometheus" / "prometheus.example.yml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
RUNBOOK_BASE = "https://github.com/pve-datastore-exporter/pve-datastore-exporter/blob/main/docs/runbooks.md#"


def promtool(*args, cwd=ROOT):
    """Run promtool; the completed process, whatever its exit status."""
    return subprocess.run([require_tool("promtool"), *map(str, args)], check=False, cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def alerting_rules():
    return [r for g in load_yaml(RULES)["groups"] for r in g["rules"] if "alert" in r]


def github_anchors(markdown):
    """The anchors GitHub makes for the headings of a Markdown text."""
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            text = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


@pytest.mark.slow
def test_promtool_check_rules():
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.slow
def test_promtool_unit_tests_pass():
    assert RULE_TESTS, "no promtool test files in prometheus/tests/"
    result = promtool("test", "rules", *RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS), result.stdout


@pytest.mark.slow
def test_example_config_is_valid_and_loads_the_rules_from_any_directory(tmp_path):
    # Run from elsewhere: rule_files must resolve against the config file, not the working dir.
    result = promtool("check", "config", EXAMPLE_CONFIG, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Checking {RULES}" in result.stdout, result.stdout
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_example_config_scrapes_the_exporter_under_the_documented_job_name():
    config = load_yaml(EXAMPLE_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert "pve-datastore" in jobs
    assert jobs["pve-datastore"]["static_configs"][0]["targets"] == ["127.0.0.1:9863"]
    assert (EXAMPLE_CONFIG.parent / config["rule_files"][0]).resolve() == RULES


def test_every_alert_has_severity_summary_description_and_a_runbook_section():
    anchors = github_anchors(RUNBOOKS.read_text())
    for rule in alerting_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        annotations = rule["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        assert annotations["runbook_url"] == RUNBOOK_BASE + name.lower(), name
        assert name.lower() in anchors, f"docs/runbooks.md has no '## {name}' section"


def test_descriptions_humanize_their_values():
    for rule in alerting_rules():
        description = rule["annotations"]["description"]
        if "$value" in description:
            assert re.search(r"\$value \| humanize", description), rule["alert"]


def test_capacity_alerts_only_look_at_active_enabled_datastores():
    rules = {r["record"]: r["expr"] for g in load_yaml(RULES)["groups"] for r in g["rules"] if "record" in r}
    # Replicas: the size takes the largest figure, the available space the smallest.
    for name, aggregation in (("datastore:pve_datastore_size_bytes:active", "max"),
                              ("datastore:pve_datastore_available_bytes:active", "min")):
        expr = rules[name]
        assert expr.count("pve_datastore_active == 1") == 2, name
        assert expr.count('enabled="true"') == 2, name
        assert f"{aggregation} by (job, pve_cluster, datastore, node)" in expr, name
        assert f"{aggregation} by (job, pve_cluster, datastore)" in expr, name
    for rule in alerting_rules():
        if rule["alert"] in ("PveDatastoreFillingUp", "PveDatastoreAlmostFull"):
            assert "datastore:pve_datastore_available_bytes:" in rule["expr"]


def clauses(rule):
    """(keyword, labels) of every `by (...)` and `on (...)` of a rule's expression and annotations."""
    texts = "\n".join([rule["expr"], *rule.get("annotations", {}).values()])
    return [(word, {label.strip() for label in labels.split(",")})
            for word, labels in re.findall(r"\b(by|on)\s*\(([^)]*)\)", texts)]


def test_every_join_and_aggregation_keeps_the_cluster_apart():
    # Two clusters in one Prometheus must never collide: every by/on keeps job and either instance
    # (one exporter) or pve_cluster (every replica of one cluster).
    for rule in [r for g in load_yaml(RULES)["groups"] for r in g["rules"]]:
        for word, labels in clauses(rule):
            if labels == {"reason"}:
                continue
            assert "job" in labels and labels & {"instance", "pve_cluster"}, (rule, word, labels)


def test_replicas_are_joined_one_by_one_and_aggregated_by_cluster():
    # Datastore series of two replicas: a join pairs a replica's series with its own (on instance),
    # an aggregation merges the replicas (by pve_cluster, never instance), so they alert once.
    for rule in [r for g in load_yaml(RULES)["groups"] for r in g["rules"]]:
        for word, labels in clauses(rule):
            if "datastore" not in labels:
                continue
            if word == "on":
                assert {"job", "instance", "pve_cluster"} <= labels, (rule, labels)
            else:
                assert "pve_cluster" in labels and "instance" not in labels, (rule, labels)


def test_the_self_metrics_find_their_cluster_through_one_recording_rule():
    # pve_datastore_up, pve_datastore_leader, ... and up carry no pve_cluster: every rule that adds
    # it joins the instance -> cluster table, which is unique per instance (topk 1).
    rules = {r["record"]: r["expr"] for g in load_yaml(RULES)["groups"] for r in g["rules"] if "record" in r}
    assert "topk by (job, instance) (1," in rules["instance:pve_datastore_cluster:info"]
    text = RULES.read_text()
    joins = re.findall(r"group_left \(pve_cluster\)\s*([\w:]+)", text)
    assert joins and set(joins) == {"instance:pve_datastore_cluster:info"}, joins


def test_every_alert_has_a_firing_and_a_silent_promtool_case():
    fired, silent = set(), set()
    for path in RULE_TESTS:
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alerting_rules()}
    assert names <= fired, f"no firing case for {names - fired}"
    assert names <= silent, f"no 'must not fire' case for {names - silent}"


def replicas_per_cluster(case):
    """pve_cluster -> the instances whose input series carry it, in one promtool test case."""
    found = {}
    for entry in case["input_series"]:
        labels = dict(re.findall(r'(\w+)="([^"]*)"', entry["series"]))
        if "pve_cluster" in labels:
            found.setdefault(labels["pve_cluster"], set()).add(labels["instance"])
    return found


def test_every_alert_fires_once_for_a_cluster_served_by_two_replicas():
    # promtool compares the whole list of firing alerts: a case whose input has two replicas of one
    # cluster and whose expected alerts name that cluster once is a "must not fire twice" check.
    covered = set()
    for path in RULE_TESTS:
        for case in load_yaml(path)["tests"]:
            pairs = {cluster for cluster, instances in replicas_per_cluster(case).items() if len(instances) >= 2}
            for check in case.get("alert_rule_test", []):
                clusters = [alert["exp_labels"].get("pve_cluster") for alert in check.get("exp_alerts", [])]
                if any(cluster in pairs for cluster in clusters):
                    covered.add(check["alertname"])
    names = {rule["alert"] for rule in alerting_rules()}
    assert names <= covered, f"no case with two replicas of a cluster for {names - covered}"
