"""The OCI image of the root Dockerfile, built by podman and run for real: read-only, as an arbitrary
non-root user, a secret from a file, against the simulated cluster; inspected, health-checked, stopped."""

from __future__ import annotations

import json
import re
import time

import pytest

from pve_datastore_exporter import __version__
from pve_datastore_exporter.simulator import Simulator
from tools.processes import free_port

from .containers import exporter_image, podman, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def image():
    return exporter_image()


@pytest.fixture(scope="module")
def inspected(image):
    return json.loads(podman("image", "inspect", image).stdout)[0]


@pytest.fixture
def sim(tmp_path):
    s = Simulator(nodes=3, datastores=6, random_seed=5, state_dir=str(tmp_path / "sim"), auth_delay=0.05,
                  token_value="4c1e2a9d-image-test-token-value-0001")
    s.start()
    yield s
    s.stop()


def test_the_image_runs_as_a_numeric_non_root_user_with_its_labels_port_volume_and_healthcheck(inspected):
    config = inspected["Config"]
    assert config["User"] == "10001:10001"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.licenses"] == "MIT"
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert "9863/tcp" in config["ExposedPorts"] and "/data" in config["Volumes"]
    assert inspected["Healthcheck"]["Test"] == ["CMD", "pve-datastore-exporter", "healthcheck"]  # --format docker
    assert config["Cmd"] == ["serve"]


def test_the_image_holds_no_compiler_pip_or_cache(image):
    listing = podman("run", "--rm", "--entrypoint", "sh", image, "-c",
                     "ls /opt/venv/bin; command -v gcc cc pip pip3 curl wget || true; "
                     "ls -d /root/.cache /opt/venv/lib/python3*/site-packages/setuptools 2>/dev/null || true").stdout
    assert "pve-datastore-exporter" in listing
    assert not re.search(r"\b(gcc|cc|pip3?|curl|wget|setuptools|\.cache)$", listing, re.M), listing


def test_serve_runs_without_docstrings_nor_column_tables_from_bytecode_compiled_at_build(image):
    # python -v names each module's code: from a .pyc, or from its source (compiled again at every start).
    probe = ("import sys; co = compile('x = 1', 'probe', 'exec'); "
             "print(sys.flags.optimize, {column for *_, column in co.co_positions()}); "
             "import pve_datastore_exporter.cli, pve_datastore_exporter.server, proxmoxer.backends.https, _strptime")
    done = podman("run", "--rm", "--read-only", "--user", "4242:4242", "--entrypoint", "python3", image, "-v",
                  "-c", probe)
    assert done.stdout.splitlines()[0] == "2 {None}"  # PYTHONOPTIMIZE=2, PYTHONNODEBUGRANGES=1
    loaded = re.findall(r"^# code object from '?([^'\n]+)'?$", done.stderr, re.M)
    assert len(loaded) > 300 and [path for path in loaded if not path.endswith(".opt-2.pyc")] == []


def test_read_only_as_any_user_with_a_secret_file_it_serves_reports_health_and_stops_on_sigterm(image, sim, tmp_path):
    """The README's way to run it, and the checks an operator makes: figures printed for the notes."""
    token = tmp_path / "token"
    token.write_text(sim.token_value + "\n")  # a secret file ends with a newline; it is stripped
    port, name = free_port(), f"pvedx-image-{free_port()}"
    env = sim.env()
    started = time.monotonic()
    podman("run", "--detach", "--name", name, "--read-only", "--tmpfs", "/tmp", "--user", "4242:4242",
           "--network", "host", "--volume", f"{token}:/run/secrets/proxmox_token:ro",
           "--volume", f"{env['PROXMOX_CA_BUNDLE']}:/run/secrets/proxmox_ca.pem:ro",
           "--env", f"PROXMOX_HOST={env['PROXMOX_HOST']}", "--env", f"PROXMOX_USER={env['PROXMOX_USER']}",
           "--env", f"PROXMOX_TOKEN_NAME={env['PROXMOX_TOKEN_NAME']}",
           "--env", "PROXMOX_TOKEN_VALUE_FILE=/run/secrets/proxmox_token",
           "--env", "PROXMOX_CA_BUNDLE=/run/secrets/proxmox_ca.pem",
           "--env", f"EXPORTER_LISTEN_ADDRESS=127.0.0.1:{port}", image)
    try:
        metrics = wait_for(f"http://127.0.0.1:{port}/metrics", started + 30,
                           check=lambda r: r.ok and "pve_datastore_size_bytes{" in r.text)
        first_metrics = time.monotonic() - started
        assert re.search(r'^pve_datastore_up(\{.*\})? 1\.0$', metrics.text, re.M), metrics.text[-600:]
        health = podman("healthcheck", "run", name, check=False)
        assert health.returncode == 0, health.stdout + health.stderr
        in_container = podman("exec", name, "sh", "-c",
                              "grep VmRSS /proc/1/status; cat /proc/[0-9]*/stat; ls /data/instance").stdout
        rss_kib = int(re.search(r"VmRSS:\s+(\d+) kB", in_container)[1])
        assert "proxmox_manager.db" in in_container  # the default SQLite file went to the /data volume
        states = re.findall(r"^\d+ \(.*?\) (\w) ", in_container, re.M)
        assert states and "Z" not in states, f"a zombie in the container: {in_container}"
        shown = podman("inspect", name).stdout + podman("logs", name).stdout + podman("logs", name).stderr
        assert sim.token_value not in shown
        stopping = time.monotonic()
        podman("kill", "--signal", "TERM", name)
        exit_code = int(podman("wait", name, timeout=30).stdout.strip())
        stopped_in = time.monotonic() - stopping
    finally:
        logs = podman("logs", name, check=False)
        podman("rm", "--force", "--volumes", name, check=False)
    assert exit_code == 0 and stopped_in < 10, (exit_code, stopped_in, logs.stderr[-2000:])
    assert "stopping" in logs.stderr
    print(f"\nimage figures: first /metrics {first_metrics:.1f} s after `podman run`; RSS {rss_kib / 1024:.0f} MiB;"
          f" SIGTERM to exit {stopped_in:.1f} s")
    # Designed bounds with slack for a shared 2-core machine: ~2 s of imports and one refresh of a
    # 3-node cluster; the exporter's own RSS on this cluster is ~45 MiB (tools/bench/results.md).
    assert first_metrics < 20 and rss_kib < 150 * 1024


def test_demo_with_no_other_argument_shows_the_page_on_the_published_port(image):
    port, name = free_port(), f"pvedx-demo-{free_port()}"
    podman("run", "--detach", "--name", name, "--read-only", "--tmpfs", "/tmp", "--publish",
           f"127.0.0.1:{port}:9863", image, "demo")
    try:
        page = wait_for(f"http://127.0.0.1:{port}/", time.monotonic() + 30,
                        check=lambda r: r.ok and "local-lvm" in r.text)
        assert "<html" in page.text
    finally:
        podman("rm", "--force", "--volumes", name, check=False)


def test_the_database_url_may_come_from_a_file_the_image_sets_none(inspected):
    """An image default for DATABASE_URL would make every DATABASE_URL_FILE a start-up error."""
    assert not [e for e in inspected["Config"]["Env"] if e.startswith("DATABASE_URL")]
    assert inspected["Config"]["WorkingDir"] == "/data"


def test_a_secret_set_twice_stops_the_start_naming_both_and_never_the_value(image):
    run = podman("run", "--rm", "--read-only", "--env", "EXPORTER_API_TOKEN=do-not-show-me",
                 "--env", "EXPORTER_API_TOKEN_FILE=/etc/hostname", image, check=False)
    assert run.returncode == 2
    assert "EXPORTER_API_TOKEN and EXPORTER_API_TOKEN_FILE are both set" in run.stderr
    assert "do-not-show-me" not in run.stdout + run.stderr
