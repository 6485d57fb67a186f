"""The Helm chart rendered by a real helm with its default values and each documented variation; every
object checked against Kubernetes' schemas (kubernetes-validate); what it refuses, and why."""

from __future__ import annotations

import base64
import json

import pytest
import yaml

from pve_datastore_exporter import __version__
from tools import chart_docs

from .helm import CHART, ROOT, by_kind, render, template

pytestmark = pytest.mark.slow

kubernetes_validate = pytest.importorskip("kubernetes_validate")
KUBERNETES = ("1.30.0", "1.37.0")  # the oldest the chart is tested against, and kubernetes-validate's newest
SECRET_VALUES = {"token": "tok-3f9a-s3cret-value", "api": "api-s3cret-bearer", "db": "pg-s3cret-password"}
TOKEN = ["--set", "proxmox.host=pve1.example.org", "--set", "proxmox.user=monitor@pve",
         "--set", "proxmox.tokenName=exporter", "--set", f"secrets.proxmoxTokenValue={SECRET_VALUES['token']}"]
POSTGRES = ["--set", "replicaCount=2", "--set", "database.type=postgresql",
            "--set", f"database.url=postgresql://pvedx:{SECRET_VALUES['db']}@pg.example.org/pvedx"]
WEB_CONFIG = ["--set-json", 'webConfig.config={"tls_server_config": {"cert_file": "/etc/pve-datastore-exporter/tls/tls.crt",'
              ' "key_file": "/etc/pve-datastore-exporter/tls/tls.key"}, "basic_auth_users": {"prometheus": "$2b$10$x"}}',
              "--set", "webConfig.tlsSecret=pvedx-tls", "--set", "serviceMonitor.enabled=true",
              "--set-json", 'serviceMonitor.basicAuth={"username": {"name": "scrape", "key": "user"},'
              ' "password": {"name": "scrape", "key": "password"}}',
              "--set-json", 'serviceMonitor.tlsConfig={"ca": {"secret": {"name": "pvedx-tls", "key": "ca.crt"}},'
              ' "serverName": "pvedx.monitoring.svc"}']
VARIATIONS = {
    "defaults": [],
    "token, CA, ServiceMonitor, PrometheusRule": [*TOKEN, "--set", "proxmox.caCert=-----BEGIN CERTIFICATE-----",
                                                  "--set", "serviceMonitor.enabled=true", "--set", "prometheusRule.enabled=true",
                                                  "--set", f"secrets.apiToken={SECRET_VALUES['api']}"],
    "two replicas on PostgreSQL": [*TOKEN, *POSTGRES],
    "web config with TLS and basic auth": [*TOKEN, *WEB_CONFIG],
    "existing Secret and claim, extra settings": [*TOKEN, "--set", "secrets.existingSecret=mine", "--set",
                                                  "persistence.existingClaim=claim", "--set", "secrets.existingSecretHasApiToken=true",
                                                  "--set", "extraEnv.EXPORTER_EXACT_AVAILABLE=true"],
    "no persistence, password login": ["--set", "persistence.enabled=false", "--set", "secrets.proxmoxPassword=pw-s3cret"],
}


@pytest.fixture(scope="module", params=list(VARIATIONS), ids=list(VARIATIONS))
def rendered(request):
    return request.param, render(*VARIATIONS[request.param])


def test_every_rendered_object_is_valid_for_kubernetes(rendered):
    _, objects = rendered
    for obj in objects:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # the Prometheus Operator's CRDs: tests/test_helm_crds.py
        for version in KUBERNETES:
            kubernetes_validate.validate(obj, version, strict=True)  # strict: an unknown field fails


def test_the_pod_is_hardened_and_probed_on_healthz(rendered):
    name, objects = rendered
    pod = by_kind(objects)["Deployment"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"]["memory"] and container["resources"]["limits"]["memory"]
    for probe in ("livenessProbe", "readinessProbe"):
        if name == "web config with TLS and basic auth":  # basic auth guards /healthz: the image's probe
            assert container[probe]["exec"]["command"] == ["pve-datastore-exporter", "healthcheck"]
        else:
            assert container[probe]["httpGet"]["path"] == "/healthz"


def test_secrets_are_in_secrets_only_and_reach_the_exporter_as_files(rendered):
    _, objects = rendered
    for obj in objects:
        text = yaml.safe_dump(obj)
        if obj["kind"] != "Secret":
            assert not [v for v in (*SECRET_VALUES.values(), "pw-s3cret") if v in text], obj["kind"]
    (container,) = by_kind(objects)["Deployment"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert not {"PROXMOX_TOKEN_VALUE", "PROXMOX_PASSWORD", "EXPORTER_API_TOKEN"} & set(env)
    files = {k: v for k, v in env.items() if k.endswith("_FILE")}
    assert files and all(v.startswith("/run/secrets/pve-datastore-exporter/") for v in files.values())


def test_sqlite_gets_a_claim_and_postgresql_replicas_a_disruption_budget():
    sqlite = by_kind(render(*TOKEN))
    assert sqlite["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert sqlite["Deployment"]["spec"]["strategy"] == {"type": "Recreate"} and "PodDisruptionBudget" not in sqlite
    postgres = by_kind(render(*TOKEN, *POSTGRES))
    assert postgres["Deployment"]["spec"]["replicas"] == 2 and "PersistentVolumeClaim" not in postgres
    assert postgres["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    url = base64.b64decode(postgres["Secret"]["data"]["database-url"]).decode()
    assert url == f"postgresql://pvedx:{SECRET_VALUES['db']}@pg.example.org/pvedx"


def test_several_replicas_on_sqlite_are_refused_with_the_reason():
    done = template("--set", "replicaCount=3", check=False)
    assert done.returncode != 0
    assert "replicaCount > 1 needs database.type: postgresql" in done.stderr
    assert "a SQLite file serves one process" in done.stderr


@pytest.mark.parametrize(("args", "said"), [
    (["--set", "replicaCount=two"], "/replicaCount': got string, want integer"),
    (["--set", "colour=red"], "additional properties 'colour' not allowed"),
    (["--set", "persistence.sizes=1Gi"], "additional properties 'sizes' not allowed"),
    (["--set", "proxmox.verifySsl=maybe"], "/proxmox/verifySsl': got string, want boolean"),
    (["--set", "database.type=mysql"], "/database/type'"),
    (["--set", "extraEnv.PROXMOX_PASSWORD=x"], "invalid propertyName 'PROXMOX_PASSWORD'"),  # a secret as a value
])
def test_the_values_schema_rejects_a_wrong_type_or_an_unknown_key(args, said):
    done = template(*args, check=False)
    assert done.returncode != 0 and said in done.stderr, done.stderr


def test_the_web_config_is_a_secret_and_the_scrape_matches_it():
    objects = by_kind(render(*TOKEN, *WEB_CONFIG))
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert "--web.config.file=/etc/pve-datastore-exporter/web/web.yml" in container["args"]
    web_secrets = [o for o in render(*TOKEN, *WEB_CONFIG) if o["kind"] == "Secret" and o["metadata"]["name"].endswith("-web-config")]
    assert "tls_server_config" in yaml.safe_load(base64.b64decode(web_secrets[0]["data"]["web.yml"]))
    endpoint = objects["ServiceMonitor"]["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "https" and endpoint["basicAuth"]["password"] == {"name": "scrape", "key": "password"}
    assert endpoint["tlsConfig"]["serverName"] == "pvedx.monitoring.svc"


def test_the_prometheus_rule_carries_the_projects_alerts_exactly():
    """files/alerts.yml is a copy (Helm reads nothing outside the chart): it must stay prometheus/alerts.yml."""
    source = (ROOT / "prometheus" / "alerts.yml").read_text()
    assert (CHART / "files" / "alerts.yml").read_text() == source, \
        "cp prometheus/alerts.yml deploy/helm/pve-datastore-exporter/files/alerts.yml"
    rule = by_kind(render("--set", "prometheusRule.enabled=true"))["PrometheusRule"]
    assert rule["spec"]["groups"] == yaml.safe_load(source)["groups"]
    monitor = by_kind(render("--set", "serviceMonitor.enabled=true"))["ServiceMonitor"]
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"  # job="pve-datastore-exporter": the rules' selector


def test_the_chart_carries_the_package_version_and_notes():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == chart["version"] == __version__
    notes = template("--show-only", "templates/NOTES.txt", check=False)
    assert notes.returncode != 0  # NOTES.txt is not a manifest; helm shows it on install only
    text = (CHART / "templates" / "NOTES.txt").read_text()
    assert "port-forward" in text and "proxmox.host is not set" in text


def test_the_readme_table_is_the_one_generated_from_values_yaml():
    readme = (CHART / "README.md").read_text()
    assert readme == chart_docs.with_table(readme), "run make docs"
    documented = {row["key"] for row in chart_docs.rows()}
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert {key.split(".")[0] for key in documented} == set(schema["properties"]) - {"global"}
