"""The whole role on a real systemd: a Debian rootfs booted with systemd-nspawn, reached over ssh.

One play deploys three exporters into the container: the single unit, and two instances of the
templated unit (alpha over HTTP, beta over HTTPS from a throw-away CA with basic auth), each naming
its own cluster (the same simulator under two names).

Check mode on a fresh host runs in a second container, beside the first real run in the main one.
Only the first real run copies the wheelhouse in (pve_datastore_exporter_wheelhouse_src, two round trips
per wheel and run); the other runs install from the copy it left there. That the copy task changes
nothing the second time, and nothing in check mode, is tests/test_ansible_role.py's claim (its converged
prefix copies a wheelhouse of its own in every run).

The rootfs (debootstrap, ~330 MB, ~1 min) is built once and cached in PVEDX_ROOTFS
(/var/cache/pvedx-test-rootfs); each run boots an ephemeral copy of it, so the cache stays
pristine. The container shares the host's network namespace: its sshd and the exporter listen
on free loopback ports, and it reaches the simulated Proxmox on the host's loopback.
"""

from __future__ import annotations

import base64
import concurrent.futures
import fcntl
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from tests.ansible_helpers import (
    ansible_env,
    assert_no_secrets,
    run_playbook,
    wheelhouse,
    write_vars,
)
from tests.needs import in_ci, require_tool
from tools.processes import free_port, terminate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
from pve_datastore_exporter import __version__, simulator  # noqa: E402

ROOTFS = Path(os.environ.get("PVEDX_ROOTFS", "/var/cache/pvedx-test-rootfs"))
SUITE = "bookworm"
# python3-apt: the role's package task (apt) runs without fetching anything when all is installed.
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "python3-packaging", "python3-apt",
            "openssh-server", "iproute2", "ca-certificates")
STAMP = ROOTFS / ".pvedx-rootfs.json"
API_TOKEN = "pvedx-nspawn-api-token-0b9e51"
PASSWORDS = {"prometheus": "pvedx-nspawn-scrape-pw-5d0c", "ansible": "pvedx-nspawn-write-pw-e61a"}
TEST_CA = "/etc/ssl/pvedx-test-ca.pem"  # the throw-away CA of beta's certificate, inside the container
SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]


def unavailable(reason: str):
    """A missing prerequisite: skip locally, fail in CI (where .ci/run provides it)."""
    if in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (so debootstrap goes where apt may go)."""
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            text = path.read_text()
        except OSError:
            continue
        match = re.search(r"(?:^URIs:|^deb)\s+(?:\[[^]]*\]\s+)?(https?://\S+/debian)/?\s*$", text, re.M)
        if match:
            return match.group(1)
    return "http://deb.debian.org/debian"


def ensure_rootfs() -> Path:
    """Build the cached rootfs once (under a lock; parallel runs wait for the first)."""
    wanted = {"suite": SUITE, "packages": list(PACKAGES)}
    ROOTFS.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{ROOTFS}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if STAMP.exists() and json.loads(STAMP.read_text()) == wanted:
            return ROOTFS
        debootstrap = require_tool("debootstrap")
        build = Path(f"{ROOTFS}.build")
        shutil.rmtree(build, ignore_errors=True)
        proc = subprocess.run([debootstrap, "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
                               str(build), debian_mirror()], capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            unavailable(f"debootstrap {SUITE} failed (rc={proc.returncode}): {proc.stdout[-1500:]}{proc.stderr[-1500:]}")
        (build / "root" / ".ssh").mkdir(mode=0o700, exist_ok=True)
        (build / "etc" / "hostname").write_text("pvedx-test\n")
        # No login prompt on the console we do not read; the container is reached over ssh only.
        (build / "etc" / "systemd" / "system" / "console-getty.service").symlink_to("/dev/null")
        shutil.rmtree(ROOTFS, ignore_errors=True)
        build.rename(ROOTFS)
        STAMP.write_text(json.dumps(wanted))
    return ROOTFS


class Container:
    """An ephemeral systemd-nspawn boot of the cached rootfs with sshd on a loopback port."""

    def __init__(self, work: Path, binds: dict[str, str]):
        self.work, self.port = work, free_port()
        self.key = work / "id_ed25519"
        subprocess.run([require_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)],
                       check=True, timeout=60)
        sshd = work / "sshd.conf"
        sshd.write_text(f"Port {self.port}\nListenAddress 127.0.0.1\nPermitRootLogin prohibit-password\n"
                        "PasswordAuthentication no\nUseDNS no\n")
        binds = {str(self.key) + ".pub": "/root/.ssh/authorized_keys",
                 str(sshd): "/etc/ssh/sshd_config.d/pvedx.conf", **binds}
        self.log_path = work / "nspawn.log"
        self.control, self.master = os.path.join(tempfile.mkdtemp(prefix="pvedx-ssh-"), "m"), None  # short: a socket name
        self.cmd = [require_tool("systemd-nspawn"), "--quiet", "--register=no", "--keep-unit", "--ephemeral",
                    f"--directory={ROOTFS}", f"--machine=pvedx-{os.getpid()}-{self.port}",
                    *[f"--bind-ro={src}:{dst}" for src, dst in binds.items()], "--console=pipe", "--boot"]
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=open(self.log_path, "w"),
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def ssh(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([require_tool("ssh"), *SSH_OPTS, "-i", str(self.key), "-p", str(self.port),
                               "-o", f"ControlPath={self.control}", "-o", "ControlMaster=no",
                               "root@127.0.0.1", command], capture_output=True, text=True, timeout=timeout)

    def multiplex(self, timeout: float = 10):
        """One ssh master for the test's own commands: each ssh() then skips the handshake (~0.15 s).
        Without it (no socket yet), ssh() connects on its own."""
        self.master = subprocess.Popen([require_tool("ssh"), *SSH_OPTS, "-i", str(self.key), "-p", str(self.port),
                                        "-o", f"ControlPath={self.control}", "-M", "-N", "root@127.0.0.1"],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.control) and self.master.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)

    def wait_for_ssh(self, timeout: float = 90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"systemd-nspawn exited rc={self.proc.returncode}: {' '.join(self.cmd)}\n{self.log()}")
            if self.ssh("true", timeout=15).returncode == 0:
                return
            time.sleep(1)
        pytest.fail(f"no ssh into the container within {timeout}s: {' '.join(self.cmd)}\n{self.log()}")

    def stop(self):
        """SIGTERM asks the container's systemd to halt; SIGKILL if it takes too long."""
        if self.master is not None:
            terminate(self.master, grace=5)
        terminate(self.proc, grace=45)

    def inventory(self) -> Path:
        path = self.work / "inventory.json"
        host = {"ansible_host": "127.0.0.1", "ansible_port": self.port, "ansible_user": "root",
                "ansible_ssh_private_key_file": str(self.key),
                "ansible_ssh_common_args": " ".join(SSH_OPTS[:-2]),
                "ansible_python_interpreter": "/usr/bin/python3"}
        path.write_text(json.dumps({"pve_datastore_exporter": {"hosts": {"nspawn": host}}}))
        return path


@pytest.fixture(scope="module")
def containers(tmp_path_factory):
    """Two containers booted side by side, {"main": ..., "fresh": ...}, reading one simulator."""
    if os.environ.get("PVEDX_NSPAWN") == "0" and not in_ci():
        pytest.skip("PVEDX_NSPAWN=0")
    for name in ("systemd-nspawn", "debootstrap", "ssh", "ssh-keygen"):
        require_tool(name)
    if os.geteuid() != 0:
        unavailable("booting a systemd-nspawn container needs root")
    ensure_rootfs()
    work = tmp_path_factory.mktemp("nspawn")
    sim = simulator.Simulator(nodes=3, datastores=6, random_seed=2, state_dir=work / "sim", drift=False)
    sim.start()
    ca = work / "sim-ca.pem"
    shutil.copyfile(sim.ca_file, ca)
    ca.chmod(0o644)
    test_ca = trustme.CA()
    test_ca.cert_pem.write_to_path(work / "test-ca.pem")
    (work / "test-ca.pem").chmod(0o644)
    boxes = {}
    try:
        for name in ("main", "fresh"):  # both boot at once: wait_for_ssh only waits
            (work / name).mkdir()
            boxes[name] = Container(work / name, {str(ca): "/etc/ssl/pvedx-sim-ca.pem", str(work / "test-ca.pem"): TEST_CA})
        for box in boxes.values():
            box.wait_for_ssh()
            box.multiplex()
            box.sim, box.test_ca, box.test_ca_file = sim, test_ca, str(work / "test-ca.pem")
        yield boxes
    finally:
        for box in boxes.values():
            box.stop()
        sim.stop()


def http_text(url: str, timeout: float = 5, ca: str | None = None, user: str | None = None) -> str:
    """GET url: over HTTPS against `ca`, with basic auth as `user` (PASSWORDS) when given."""
    request = urllib.request.Request(url)
    if user:
        pair = f"{user}:{PASSWORDS[user]}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
    context = ssl.create_default_context(cafile=ca) if ca else None
    with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:
        return resp.read().decode()


def http_status(url: str, ca: str) -> int:
    """The status of a GET without credentials."""
    try:
        with urllib.request.urlopen(url, timeout=5, context=ssl.create_default_context(cafile=ca)) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def served_serial(port: int, ca: str) -> int:
    """The serial number of the certificate the listener on port serves now."""
    context = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def issue(ca: trustme.CA) -> tuple[str, str, int]:
    """(certificate, key, serial) for 127.0.0.1 and localhost from the throw-away CA."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    pem = "".join(p.bytes().decode() for p in cert.cert_chain_pems)
    return pem, cert.private_key_pem.bytes().decode(), x509.load_pem_x509_certificate(pem.encode()).serial_number


def wait_for(fetch, predicate, timeout: float = 60):
    """Poll fetch() until predicate(result) holds; the last result for the assertion message."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            last = fetch()
            if predicate(last):
                return last
        except OSError as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"timed out; last answer: {last!r}"[:2000])


COPIED_WHEELHOUSE = "/opt/pve-datastore-exporter/wheelhouse"  # where wheelhouse_src goes (the role's default)
CERT_TASK = "pvedx.datastore_exporter.pve_datastore_exporter : Write the TLS certificate, key and client CA given as content"


def changed_tasks(output: str) -> list[str]:
    """The names of the tasks that reported a change in an ansible-playbook output, in order."""
    blocks = re.split(r"^TASK \[(.+?)\] \**$", output, flags=re.M)
    return [name for name, text in zip(blocks[1::2], blocks[2::2], strict=True) if re.search(r"^changed: \[", text, re.M)]


def exposure(container: Container, unit: str) -> float:
    """`systemd-analyze security` of a unit in the container, which must pass `verify` as well."""
    security = container.ssh(f"systemd-analyze security --no-pager {unit}")
    score = float(re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout).group(1))
    print(f"online systemd-analyze security exposure of {unit} in the container: {score}")
    verify = container.ssh(f"systemd-analyze verify {unit}")
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stdout + verify.stderr
    return score


class Deployment:
    """The three exporters of one container (loopback ports of their own: the containers share the host's
    network), and one play applying the role to each of them."""

    def __init__(self, box: Container, base: Path):
        sim, self.box, self.base = box.sim, box, base
        base.mkdir(exist_ok=True)
        self.ports = ports = {name: free_port() for name in ("single", "alpha", "beta")}
        cert, key, self.serial = issue(box.test_ca)
        self.secrets = [sim.token_value, API_TOKEN, *PASSWORDS.values(), key.splitlines()[1]]
        self.shared = {
            "pve_datastore_exporter_package": f"pve-datastore-exporter=={__version__}",
            "pve_datastore_exporter_pip_no_index": True,
            "pve_datastore_exporter_proxmox_host": f"127.0.0.1:{sim.port}",
            "pve_datastore_exporter_proxmox_user": sim.user,
            "pve_datastore_exporter_proxmox_token_name": sim.token_name,
            "pve_datastore_exporter_proxmox_token_value": sim.token_value,
            "pve_datastore_exporter_proxmox_ca_bundle": "/etc/ssl/pvedx-sim-ca.pem",
        }
        # The instances share what the single unit installs first in the play (the OS packages, the wheelhouse,
        # the virtualenv): copying a wheelhouse of ~30 wheels costs two round trips per wheel and application.
        installed_by_single = {"pve_datastore_exporter_install_os_packages": False,
                               "pve_datastore_exporter_pip_find_links": COPIED_WHEELHOUSE}
        self.exporters = {
            "single": {"pve_datastore_exporter_listen_address": f"127.0.0.1:{ports['single']}",
                       "pve_datastore_exporter_api_token": API_TOKEN,
                       "pve_datastore_exporter_default_hdd_datastore": "ceph-vm",
                       "pve_datastore_exporter_default_ssd_datastore": "tank"},
            "alpha": {**installed_by_single, "pve_datastore_exporter_instance": "alpha",
                      "pve_datastore_exporter_listen_address": f"127.0.0.1:{ports['alpha']}",
                      "pve_datastore_exporter_proxmox_cluster_name": "alpha",
                      "pve_datastore_exporter_default_hdd_datastore": "tank"},
            "beta": {**installed_by_single, "pve_datastore_exporter_instance": "beta",
                     "pve_datastore_exporter_listen_address": f"127.0.0.1:{ports['beta']}",
                     "pve_datastore_exporter_proxmox_cluster_name": "beta",
                     "pve_datastore_exporter_tls_cert": cert, "pve_datastore_exporter_tls_key": key,
                     "pve_datastore_exporter_basic_auth_users": [{"name": n, "password": p} for n, p in PASSWORDS.items()],
                     "pve_datastore_exporter_write_users": "ansible",
                     "pve_datastore_exporter_api_ca_path": TEST_CA,
                     "pve_datastore_exporter_default_ssd_datastore": "ceph-vm"},
        }
        control = tempfile.mkdtemp(prefix="pvedx-cp-")  # short: ssh's ControlPath must fit a socket name
        self.env = ansible_env(base, ANSIBLE_SSH_CONTROL_PATH_DIR=control, ANSIBLE_PIPELINING="True")
        # What the role installs, listed in the container (empty output: nothing is).
        self.installed = ("ls -d /opt/pve-datastore-exporter /etc/pve-datastore-exporter /var/lib/pve-datastore-exporter "
                          "/var/cache/pve-datastore-exporter "
                          "/etc/systemd/system/pve-datastore-exporter.service /etc/systemd/system/pve-datastore-exporter@.service "
                          "2>/dev/null; getent passwd pve-datastore-exporter; getent group pve-datastore-exporter; "
                          "systemctl list-units --all --no-legend 'pve-datastore-exporter*'; "
                          + "; ".join(f"ss -Hltn 'sport = :{port}'" for port in ports.values()))

    def deploy(self, *flags, copy_wheelhouse=False, **overrides):
        """One play applying the role to each exporter (its own settings as role parameters); the single unit
        copies the wheelhouse in with copy_wheelhouse, else it installs from the copy a first run left."""
        source = ({"pve_datastore_exporter_wheelhouse_src": str(wheelhouse())} if copy_wheelhouse
                  else {"pve_datastore_exporter_pip_find_links": COPIED_WHEELHOUSE})
        play = self.base / f"play-{time.monotonic_ns()}.json"
        play.write_text(json.dumps([{
            "name": "Deploy three exporters", "hosts": "pve_datastore_exporter", "gather_facts": False,
            "roles": [{"role": "pvedx.datastore_exporter.pve_datastore_exporter", **settings,
                       **(source if name == "single" else {})}
                      for name, settings in self.exporters.items()]}]))
        extra = write_vars(self.base / f"vars-{time.monotonic_ns()}.json", {**self.shared, **overrides})
        started = time.monotonic()
        result = run_playbook(self.base, ["-i", str(self.box.inventory()), "-e", extra, *flags, str(play)],
                              env=self.env, timeout=600)
        print(f"{self.base.name}: ansible-playbook {' '.join(flags)} {overrides or ''}: {time.monotonic() - started:.0f} s")
        assert_no_secrets(result.output, tuple(self.secrets))
        return result


def check_mode_on_a_fresh_host(fresh: Deployment):
    """The play in check mode on a host the role never ran on: changes announced, nothing installed."""
    dry = fresh.deploy("--check", "--diff")
    assert dry.rc == 0 and dry.changed("nspawn") >= 8, dry.output[-5000:]
    assert dry.output.count("a real run would") == 3  # the defaults step explains why it compared nothing
    assert fresh.box.ssh(fresh.installed).stdout.strip() == "", "check mode must not install anything"


def test_role_on_a_real_systemd(containers, tmp_path):
    # Check mode on a fresh host has a container of its own, so it runs beside the first real run here
    # (an ansible-playbook keeps about one core busy; the machine has two).
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        dry = pool.submit(check_mode_on_a_fresh_host, Deployment(containers["fresh"], tmp_path / "fresh"))
        try:
            converge_renew_check_and_remove(Deployment(containers["main"], tmp_path / "main"))
        finally:
            dry.result()  # its assertion error, if any


def converge_renew_check_and_remove(main: Deployment):
    """The install and what it runs; a renewed certificate as the only change; check mode on the converged
    host; state=absent, twice."""
    container, ports, exporters, deploy, installed = main.box, main.ports, main.exporters, main.deploy, main.installed
    first = deploy("--diff", copy_wheelhouse=True)
    assert first.rc == 0, first.output[-5000:]
    assert first.changed("nspawn") >= 8
    copied = container.ssh(f"ls {COPIED_WHEELHOUSE}").stdout.split()
    assert copied == sorted(p.name for p in wheelhouse().iterdir()), copied
    for service in ("pve-datastore-exporter", "pve-datastore-exporter@alpha", "pve-datastore-exporter@beta"):
        assert container.ssh(f"systemctl is-active {service}").stdout.strip() == "active", service
        assert container.ssh(f"systemctl is-enabled {service}").stdout.strip() == "enabled", service

    # the single unit, as before the instances came
    url = f"http://127.0.0.1:{ports['single']}"
    metrics = wait_for(lambda: http_text(url + "/metrics"), lambda t: "pve_datastore_size_bytes{" in t)
    defaults_series = [dict(re.findall(r'(\w+)="([^"]*)"', labels))
                       for labels in re.findall(r"^pve_datastore_default\{([^}]*)\} 1", metrics, re.M)]
    assert any({"role": "hdd", "datastore": "ceph-vm", "source": "db"}.items() <= s.items() for s in defaults_series), \
        defaults_series
    default = json.loads(http_text(url + "/api/datastores/default"))
    assert (default["hdd_datastore"], default["ssd_datastore"], default["source"]) == ("ceph-vm", "tank", "db")
    env_file = container.ssh("stat -c '%U:%G %a' /etc/pve-datastore-exporter/exporter.env").stdout.split()
    assert env_file == ["root:pve-datastore-exporter", "640"]
    owner = container.ssh("ps -o user= -p $(systemctl show -p MainPID --value pve-datastore-exporter)")
    assert owner.stdout.split() == ["pve-datastore-exporter"], owner.stdout + owner.stderr
    assert container.ssh("test -f /var/lib/pve-datastore-exporter/proxmox_manager.db").returncode == 0
    # Python's flags in the process, and their bytecode written by it into the unit's cache directory.
    environ = container.ssh("tr '\\0' '\\n' < /proc/$(systemctl show -p MainPID --value pve-datastore-exporter)/environ")
    assert {"PYTHONOPTIMIZE=2", "PYTHONNODEBUGRANGES=1"} <= set(environ.stdout.split()), environ.stdout
    cached = container.ssh("find /var/cache/pve-datastore-exporter/pycache -name '*.opt-2.pyc' | wc -l; "
                           "stat -c %U /var/cache/pve-datastore-exporter")
    count, cache_owner = cached.stdout.split()
    assert int(count) > 300 and cache_owner == "pve-datastore-exporter", cached.stdout

    # alpha: its own port, cluster name, database and defaults
    alpha = f"http://127.0.0.1:{ports['alpha']}"
    metrics = wait_for(lambda: http_text(alpha + "/metrics"), lambda t: 'pve_cluster="alpha"' in t)
    assert 'pve_cluster="beta"' not in metrics
    assert json.loads(http_text(alpha + "/api/datastores/default"))["hdd_datastore"] == "tank"
    assert container.ssh("test -f /var/lib/pve-datastore-exporter/alpha/proxmox_manager.db").returncode == 0

    # beta: HTTPS from the throw-away CA, basic auth on every route, defaults set by the writer
    beta, ca = f"https://127.0.0.1:{ports['beta']}", container.test_ca_file
    metrics = wait_for(lambda: http_text(beta + "/metrics", ca=ca, user="prometheus"), lambda t: 'pve_cluster="beta"' in t)
    assert http_status(beta + "/metrics", ca) == 401 and http_status(beta + "/healthz", ca) == 401
    assert json.loads(http_text(beta + "/api/datastores/default", ca=ca, user="prometheus"))["ssd_datastore"] == "ceph-vm"
    files = container.ssh("cd /etc/pve-datastore-exporter && stat -c '%n %U:%G %a' beta.web.yml beta.key beta.crt")
    assert files.stdout.split("\n")[:3] == ["beta.web.yml root:pve-datastore-exporter 640",
                                            "beta.key root:pve-datastore-exporter 640",
                                            "beta.crt root:pve-datastore-exporter 644"], files.stdout + files.stderr
    assert served_serial(ports["beta"], ca) == main.serial

    for unit in ("pve-datastore-exporter.service", "pve-datastore-exporter@alpha.service",
                 "pve-datastore-exporter@beta.service"):
        assert exposure(container, unit) <= 2.0, unit

    # The second run carries one change, a renewed certificate for beta: the play reports that one task
    # changed, so every other task of the three exporters is idempotent on a real systemd; no exporter is
    # restarted (beta re-reads its files and serves the new certificate within seconds); check mode on
    # the converged host then reports nothing, the certificate task included.
    services = ("pve-datastore-exporter", "pve-datastore-exporter@alpha", "pve-datastore-exporter@beta")
    pids = {s: container.ssh(f"systemctl show -p MainPID --value {s}").stdout.strip() for s in services}
    cert, key, serial = issue(container.test_ca)
    exporters["beta"].update(pve_datastore_exporter_tls_cert=cert, pve_datastore_exporter_tls_key=key)
    main.secrets.append(key.splitlines()[1])
    second = deploy()
    assert second.rc == 0 and second.changed("nspawn") == 1, second.output[-5000:]
    assert changed_tasks(second.output) == [CERT_TASK], second.output[-5000:]
    wait_for(lambda: served_serial(ports["beta"], ca), lambda s: s == serial, timeout=20)
    assert {s: container.ssh(f"systemctl show -p MainPID --value {s}").stdout.strip() for s in services} == pids
    check = deploy("--check", "--diff")
    assert check.rc == 0 and check.changed("nspawn") == 0, check.output[-5000:]
    assert container.ssh("systemctl is-active pve-datastore-exporter").stdout.strip() == "active"

    gone = deploy(pve_datastore_exporter_state="absent")
    assert gone.rc == 0 and gone.changed("nspawn") >= 4, gone.output[-5000:]
    # systemd unloads a removed unit when nothing refers to it any more, not at once: polled.
    wait_for(lambda: container.ssh(
        installed + "; ls -d /var/lib/private/pve-datastore-exporter /etc/systemd/system/multi-user.target.wants/"
        "pve-datastore-exporter*.service 2>/dev/null").stdout.strip(), lambda leftovers: leftovers == "", timeout=20)
    again = deploy(pve_datastore_exporter_state="absent")
    assert again.rc == 0 and again.changed("nspawn") == 0, again.output[-5000:]
