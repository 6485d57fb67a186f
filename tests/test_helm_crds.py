"""The chart's ServiceMonitor and PrometheusRule against the Prometheus Operator's CRD schemas, as the npm
package @kubernetes-models/prometheus-operator compiles them (tests/crds/: its lock, and the checker)."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from .helm import render
from .needs import require_tool
from .test_helm import TOKEN, WEB_CONFIG

pytestmark = pytest.mark.slow

CRDS = Path(__file__).resolve().parent / "crds"


@functools.cache
def checker() -> Path:
    """tests/crds/ with its locked node_modules (npm ci: every package by its integrity hash)."""
    work = Path(tempfile.mkdtemp(prefix="pvedx-crds-")) / "crds"
    shutil.copytree(CRDS, work)
    subprocess.run([require_tool("npm"), "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=work,
                   check=True, capture_output=True, text=True, timeout=300)
    return work


def check(objects: list[dict]) -> subprocess.CompletedProcess:
    """Run the checker on the Prometheus Operator objects of a rendering."""
    return subprocess.run([require_tool("node"), "validate.mjs"], cwd=checker(), capture_output=True, text=True,
                          timeout=120, input=json.dumps(objects))


def _operator_objects(*args: str) -> list[dict]:
    return [o for o in render(*args) if o["apiVersion"].startswith("monitoring.coreos.com/")]


@pytest.mark.parametrize("args", [["--set", "serviceMonitor.enabled=true", "--set", "prometheusRule.enabled=true"],
                                  [*TOKEN, *WEB_CONFIG, "--set", "prometheusRule.enabled=true"]],
                         ids=["plain", "TLS and basic auth"])
def test_the_service_monitor_and_the_rule_are_valid_custom_resources(args):
    objects = _operator_objects(*args)
    assert sorted(o["kind"] for o in objects) == ["PrometheusRule", "ServiceMonitor"]
    done = check(objects)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(done.stdout.split("\n")[:-1]) == ["ok PrometheusRule", "ok ServiceMonitor"]


def test_the_checker_catches_a_wrong_scheme_and_a_rule_that_is_not_text():
    objects = {o["kind"]: o for o in _operator_objects("--set", "serviceMonitor.enabled=true",
                                                        "--set", "prometheusRule.enabled=true")}
    objects["ServiceMonitor"]["spec"]["endpoints"][0]["scheme"] = "gopher"
    objects["PrometheusRule"]["spec"]["groups"][0]["rules"][0]["expr"] = ["up"]
    done = check(list(objects.values()))
    assert done.returncode == 1
    assert "invalid ServiceMonitor: data/spec/endpoints/0/scheme must be equal to one of the allowed values" in done.stdout
    assert "invalid PrometheusRule: data/spec/groups/0/rules/0/expr" in done.stdout
