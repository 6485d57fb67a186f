"""deploy/compose/ brought up for real with podman-compose: Prometheus (Debian's package, the project's
rules) scrapes the exporter; in compose.replicas.yaml two replicas over PostgreSQL, exactly one leading.
The simulated cluster joins each stack as one more service (an override file of the test's own)."""

from __future__ import annotations

import json
import os
import time

import pytest
import requests
import yaml

from tools import image_bases
from tools.certs import PrivateCA
from tools.processes import free_port

from .containers import ROOT, engine_env, exporter_image, podman
from .needs import require_tool

pytestmark = pytest.mark.slow

COMPOSE = ROOT / "deploy" / "compose"
TOKEN = "5be1f0aa-compose-test-token-value-03"


def simulator_override(tmp_path, services: list[str]) -> str:
    """An override file: the simulated cluster as the service `simulator` (its certificate names it), and
    its CA handed to `services` in their secrets."""
    state = tmp_path / "sim"
    state.mkdir()
    ca = PrivateCA()
    ca.write_ca(state / "ca.pem")
    ca.issue(state / "server.pem", state / "server.key", more_addresses=("simulator",))
    os.chmod(state, 0o777)  # the simulator's user writes its lock file there
    override = {
        "services": {
            "simulator": {"image": exporter_image(), "command": ["simulate", "--listen", "0.0.0.0:8006",
                                                                 "--state-dir", "/sim", "--token-value", TOKEN],
                          "volumes": [f"{state}:/sim"]},
            **{name: {"environment": {"PROXMOX_CA_BUNDLE": "/run/secrets/simulator_ca"},
                      "secrets": ["proxmox_token", "simulator_ca", *(["database_url"] if "-" in name else [])],
                      "depends_on": ["simulator"]} for name in services},
        },
        "secrets": {"simulator_ca": {"file": str(state / "ca.pem")}},
    }
    path = tmp_path / "simulator.yaml"
    path.write_text(yaml.safe_dump(override))
    return str(path)


class Stack:
    """podman-compose up -d of some services of a compose file (+ the test's override), down after."""

    def __init__(self, tmp_path, files: list[str], services: list[str], env: dict[str, str]):
        self.tmp_path, self.files, self.services = tmp_path, files, services
        self.env = {**engine_env(), "EXPORTER_IMAGE": exporter_image(), "PROXMOX_HOST": "simulator:8006",
                    "PROXMOX_USER": "monitor@pve", "PROXMOX_TOKEN_NAME": "exporter",
                    "PROMETHEUS_IMAGE": image_bases.ensure("prometheus", env=engine_env()),
                    "EXPORTER_REFRESH_INTERVAL": "15", **env}

    def compose(self, *args: str, check: bool = True):
        import subprocess

        command = [require_tool("podman-compose"), *(a for f in self.files for a in ("-f", f)), *args]
        done = subprocess.run(command, cwd=COMPOSE, env=self.env, capture_output=True, text=True, timeout=300)
        if check and done.returncode:
            raise AssertionError(f"{' '.join(args)}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}")
        return done

    def __enter__(self):
        self.compose("down", "--volumes", check=False)
        self.compose("up", "-d", *self.services)
        return self

    def __exit__(self, *exc):
        if exc[0]:
            print(self.compose("logs", check=False).stdout[-6000:])
        listed = json.loads(podman("ps", "--all", "--format", "json").stdout or "[]")
        containers = [c["Id"] for c in listed  # podman-compose labels its containers with the directory
                      if (c.get("Labels") or {}).get("com.docker.compose.project.working_dir") == str(COMPOSE)]
        mounts = json.loads(podman("inspect", *containers, check=False).stdout or "[]") if containers else []
        # The image's VOLUME /data gives the services without a named volume there an anonymous one,
        # which `down --volumes` leaves behind.
        anonymous = {m["Name"] for c in mounts for m in c.get("Mounts", []) if m.get("Type") == "volume"
                     and len(m.get("Name", "")) == 64}
        self.compose("down", "--volumes", check=False)
        for volume in anonymous:
            podman("volume", "rm", "--force", volume, check=False)


def query(port: int, promql: str) -> list[dict]:
    """An instant query of the stack's Prometheus."""
    answer = requests.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": promql}, timeout=5).json()
    return answer["data"]["result"]


def wait_query(port: int, promql: str, until: float, check) -> list[dict]:
    last = None
    while time.monotonic() < until:
        try:
            last = query(port, promql)
            if check(last):
                return last
        except (requests.RequestException, KeyError, ValueError) as exc:
            last = exc
        time.sleep(1)
    raise AssertionError(f"{promql}: {last!r}")


def test_prometheus_of_the_stack_scrapes_the_exporter_with_the_projects_rules(tmp_path):
    token = tmp_path / "proxmox_token"
    token.write_text(TOKEN + "\n")
    ports = {name: free_port() for name in ("EXPORTER_PORT", "PROMETHEUS_PORT", "GRAFANA_PORT")}
    env = {"PROXMOX_TOKEN_FILE": str(token), **{k: str(v) for k, v in ports.items()}}
    files = [str(COMPOSE / "compose.yaml"), simulator_override(tmp_path, ["exporter"])]
    # Grafana cannot run here (no image); its provisioning files are tests/test_dashboard.py's.
    with Stack(tmp_path, files, ["simulator", "exporter", "prometheus"], env):
        until = time.monotonic() + 120
        up = wait_query(ports["PROMETHEUS_PORT"], 'up{job="pve-datastore"}', until,
                        lambda r: r and r[0]["value"][1] == "1")
        assert len(up) == 1
        sizes = wait_query(ports["PROMETHEUS_PORT"], "pve_datastore_size_bytes", until, lambda r: len(r) > 0)
        assert {s["metric"]["pve_cluster"] for s in sizes} == {"pve-sim"}
        rules = requests.get(f"http://127.0.0.1:{ports['PROMETHEUS_PORT']}/api/v1/rules", timeout=5).json()
        groups = {g["name"] for g in rules["data"]["groups"]}
        assert groups == {g["name"] for g in yaml.safe_load((ROOT / "prometheus/alerts.yml").read_text())["groups"]}
        page = requests.get(f"http://127.0.0.1:{ports['EXPORTER_PORT']}/", timeout=5)
        assert page.ok and "local-lvm" in page.text


def test_the_replicas_stack_has_exactly_one_leader(tmp_path):
    secrets = {"proxmox_token": TOKEN, "database_url": "postgresql://pvedx:compose-s3cret@postgres/pvedx",
               "postgres_password": "compose-s3cret"}
    for name, value in secrets.items():
        (tmp_path / name).write_text(value + "\n")
    ports = {name: free_port() for name in ("EXPORTER_1_PORT", "EXPORTER_2_PORT", "PROMETHEUS_PORT")}
    env = {"PROXMOX_TOKEN_FILE": str(tmp_path / "proxmox_token"),
           "DATABASE_URL_SECRET_FILE": str(tmp_path / "database_url"),
           "POSTGRES_PASSWORD_SECRET_FILE": str(tmp_path / "postgres_password"),
           "POSTGRES_IMAGE": image_bases.ensure("postgresql", env=engine_env()), **{k: str(v) for k, v in ports.items()}}
    files = [str(COMPOSE / "compose.replicas.yaml"), simulator_override(tmp_path, ["exporter-1", "exporter-2"])]
    with Stack(tmp_path, files, ["postgres", "simulator", "exporter-1", "exporter-2", "prometheus"], env) as stack:
        until = time.monotonic() + 150
        wait_query(ports["PROMETHEUS_PORT"], 'up{job="pve-datastore"} == 1', until, lambda r: len(r) == 2)
        leaders = wait_query(ports["PROMETHEUS_PORT"], "pve_datastore_leader", until,
                             lambda r: len(r) == 2 and sorted(s["value"][1] for s in r) == ["0", "1"])
        assert len(leaders) == 2
        logs = stack.compose("logs", check=False)
        assert "compose-s3cret" not in logs.stdout + logs.stderr
        running = [name for c in json.loads(podman("ps", "--format", "json").stdout) for name in c["Names"]]
        inspected = podman("inspect", *[n for n in running if "exporter-" in n]).stdout
        assert "exporter-1" in inspected and "compose-s3cret" not in inspected  # secrets are files, not env
