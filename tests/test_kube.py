"""The chart's rendered Deployment and Service run for real with `podman kube play` against the simulated
cluster: on SQLite (one pod, its claim) and as two replicas on PostgreSQL (exactly one leads)."""

from __future__ import annotations

import base64
import json
import re
import time

import pytest
import yaml

from pve_datastore_exporter.simulator import Simulator
from tools import image_bases
from tools.certs import PrivateCA
from tools.processes import free_port

from .containers import engine_env, exporter_image, podman, wait_for
from .helm import render
from .needs import require_tool

pytestmark = pytest.mark.slow

NETWORK = "pvedx-kube"  # a pod network of its own (podman's bridge, with DNS), kept between runs
TOKEN = "7d0c53f2-kube-test-token-value-0002"
PG_PASSWORD = "kube-pg-s3cret"


@pytest.fixture(scope="module")
def gateway():
    """The pod network's gateway: the address of this machine that the pods reach."""
    engine_env()
    require_tool("catatonit")  # the pause process of podman's pods
    if podman("network", "exists", NETWORK, check=False).returncode:
        podman("network", "create", NETWORK)
    (subnet,) = json.loads(podman("network", "inspect", NETWORK).stdout)[0]["subnets"]
    return subnet["gateway"]


@pytest.fixture(scope="module")
def sim(gateway, tmp_path_factory):
    """The simulated cluster on this machine, its certificate valid for the gateway's address too."""
    state = tmp_path_factory.mktemp("kube-sim")
    ca = PrivateCA()
    ca.write_ca(state / "ca.pem")
    ca.issue(state / "server.pem", state / "server.key", more_addresses=(gateway,))
    s = Simulator(nodes=3, datastores=6, random_seed=9, state_dir=str(state), host="0.0.0.0", auth_delay=0.05,
                  token_value=TOKEN)
    s.start()
    yield s
    s.stop()


def values(sim, gateway, *more: str) -> list[str]:
    """The chart's values for the image built here and the simulated cluster."""
    repository, tag = exporter_image().rsplit(":", 1)
    return ["--set", f"image.repository={repository}", "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never",
            "--set", f"proxmox.host={gateway}:{sim.port}", "--set", f"proxmox.user={sim.user}",
            "--set", f"proxmox.tokenName={sim.token_name}", "--set", f"secrets.proxmoxTokenValue={TOKEN}",
            "--set-file", f"proxmox.caCert={sim.state_dir / 'ca.pem'}", "--set", "refreshInterval=15", *more]


def playable(objects: list[dict]) -> tuple[str, dict[str, str]]:
    """The rendering as podman 4.3's kube play takes it, and its Secrets apart as {name: YAML}.

    podman 4.3 writes a played Secret's `data` into the mounted files still base64-encoded (Kubernetes
    and later podman decode it; `stringData` fares the same). So each Secret goes to podman's secret
    store directly, the same Secret with its `data` decoded, which podman's secret volumes copy byte for
    byte; nothing else of the rendering is changed."""
    secrets = {}
    for obj in objects:
        if obj["kind"] == "Secret":
            plain = {key: base64.b64decode(value).decode() for key, value in obj["data"].items()}
            secrets[obj["metadata"]["name"]] = yaml.safe_dump({**obj, "data": plain})
    return yaml.safe_dump_all([o for o in objects if o["kind"] != "Secret"]), secrets


def _unpublished(obj: dict) -> dict:
    """A Deployment whose containers declare no port (the probes name its number instead)."""
    if obj["kind"] == "Deployment":
        for container in obj["spec"]["template"]["spec"]["containers"]:
            ports = {p["name"]: p["containerPort"] for p in container.pop("ports", [])}
            for probe in ("livenessProbe", "readinessProbe"):
                get = container.get(probe, {}).get("httpGet")
                if get:
                    get["port"] = ports.get(get["port"], get["port"])
    return obj


class Played:
    """A rendering played by podman kube play on the pod network, and taken down after."""

    def __init__(self, objects: list[dict], path, replicas: int = 1):
        # podman 4.3 publishes every containerPort on this machine (hostPort or not), once per pod: the
        # second pod of two cannot bind it. So the replicas are played without their Service and with
        # their port numbered instead of declared; they are reached by their addresses.
        self.objects = objects if replicas == 1 else [_unpublished(o) for o in objects if o["kind"] != "Service"]
        self.path = path
        played, self.secrets = playable(self.objects)
        path.write_text(played)
        self.deployment = next(o for o in objects if o["kind"] == "Deployment")
        self.port = next(o for o in objects if o["kind"] == "Service")["spec"]["ports"][0]["port"]

    def __enter__(self):
        self.__exit__(None, None, None)  # what a killed run may have left: pods, the claim's volume, secrets
        for name, secret in self.secrets.items():
            source = self.path.with_suffix(f".{name}.secret")
            source.write_text(secret)
            podman("secret", "rm", name, check=False)
            podman("secret", "create", name, str(source))
            source.unlink()
        try:
            podman("kube", "play", "--replace", "--network", NETWORK, str(self.path), timeout=180)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        logs = [podman("logs", c, check=False).stderr[-3000:] for c in self.containers()]
        podman("kube", "down", str(self.path), check=False)
        for obj in self.objects:  # kube play makes a named volume of each claim, ConfigMap and Secret
            if obj["kind"] in ("PersistentVolumeClaim", "ConfigMap", "Secret"):
                podman("volume", "rm", "--force", obj["metadata"]["name"], check=False)
        for name in self.secrets:
            podman("secret", "rm", name, check=False)
        if exc[0]:
            print("\n".join(logs))

    def containers(self) -> list[str]:
        name = self.deployment["metadata"]["name"]
        listed = podman("ps", "--all", "--format", "{{.Names}}", "--filter", f"name={name}-pod-", check=False).stdout
        return [c for c in listed.split() if not c.endswith("-infra")]

    def urls(self) -> list[str]:
        """Each pod's address on the pod network, at the Service's port (podman has no cluster IP)."""
        found = []
        for container in self.containers():
            networks = json.loads(podman("inspect", container).stdout)[0]["NetworkSettings"]["Networks"]
            found.append(f"http://{networks[NETWORK]['IPAddress']}:{self.port}")
        return found


def _serving(url: str, until: float) -> str:
    wait_for(f"{url}/healthz", until)
    return wait_for(f"{url}/metrics", until, check=lambda r: r.ok and "pve_datastore_size_bytes{" in r.text).text


def test_the_rendered_chart_on_sqlite_serves_from_its_claim(sim, gateway, tmp_path):
    port = free_port()  # the Service's port, which podman publishes on this machine
    objects = render(*values(sim, gateway, "--set", f"service.port={port}"))
    with Played(objects, tmp_path / "sqlite.yaml") as played:
        (url,) = played.urls()
        metrics = _serving(url, time.monotonic() + 60)
        assert re.search(r"^pve_datastore_up(\{.*\})? 1\.0$", metrics, re.M)
        through_service = wait_for(f"http://127.0.0.1:{port}/metrics", time.monotonic() + 10)
        assert "pve_datastore_size_bytes{" in through_service.text
        (container,) = played.containers()
        inside = podman("exec", container, "sh", "-c", "id -u; ls /data; cat /proc/1/environ | tr '\\0' '\\n'").stdout
        assert inside.split()[0] == "10001" and "pve-datastore-exporter.db" in inside
        assert TOKEN not in inside  # the token is a file, never in the environment
        assert podman("exec", container, "pve-datastore-exporter", "healthcheck", check=False).returncode == 0


@pytest.fixture(scope="module")
def postgres(gateway):
    """PostgreSQL from Debian's packages on the pod network (the official image cannot be pulled here)."""
    name = "pvedx-kube-postgres"
    podman("rm", "--force", name, check=False)
    podman("run", "--detach", "--name", name, "--network", NETWORK, "--env", f"POSTGRES_PASSWORD={PG_PASSWORD}",
           "--env", "POSTGRES_USER=pvedx", "--env", "POSTGRES_DB=pvedx", image_bases.ensure("postgresql", env=engine_env()))
    until = time.monotonic() + 60
    while podman("exec", name, "/usr/lib/postgresql/15/bin/pg_isready", "-h", "127.0.0.1", check=False).returncode:
        assert time.monotonic() < until, podman("logs", name, check=False).stderr
        time.sleep(0.3)
    address = json.loads(podman("inspect", name).stdout)[0]["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]
    yield f"postgresql://pvedx:{PG_PASSWORD}@{address}/pvedx"
    podman("rm", "--force", name, check=False)


def test_two_replicas_of_the_rendered_chart_share_postgresql_and_one_leads(sim, gateway, postgres, tmp_path):
    objects = render(*values(sim, gateway, "--set", "replicaCount=2", "--set", "database.type=postgresql",
                            "--set", f"database.url={postgres}"))
    assert {o["kind"] for o in objects} >= {"Deployment", "Service", "PodDisruptionBudget", "Secret"}
    with Played(objects, tmp_path / "postgres.yaml", replicas=2) as played:
        urls = played.urls()
        assert len(urls) == 2
        until = time.monotonic() + 90
        for url in urls:
            _serving(url, until)
        leaders = []
        for url in urls:  # the roles settle within a second or two of the second pod's start
            text = wait_for(f"{url}/metrics", until, check=lambda r: re.search(r"^pve_datastore_leader \d", r.text, re.M)).text
            leaders.append(re.search(r"^pve_datastore_leader (\S+)$", text, re.M)[1])
        assert sorted(leaders) == ["0.0", "1.0"], leaders
        for container in played.containers():
            assert PG_PASSWORD not in podman("logs", container).stderr
