"""The role applied to this machine inside a temporary prefix: no root, no systemd, real pip.

One prefix serves most scenarios: the single unit and three instances converge there in one play
(applied twice: the second run is the idempotence claim), later tests change one setting or one
instance at a time on it, and the last ones remove the instances, then the single unit. Every run
installs from one wheelhouse built once per session (tests.ansible_helpers.wheelhouse).
"""

from __future__ import annotations

import concurrent.futures
import grp
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest
import trustme

from pve_datastore_exporter import __version__
from tests.ansible_helpers import (
    ANSIBLE_VENV,
    SECRETS,
    _copy_source,
    assert_no_secrets,
    exporter_wheel,
    localhost_args,
    run_playbook,
    wheelhouse,
    write_vars,
)
from tests.needs import require_tool

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # the module fixture runs the role for four exporters, twice

PLAY = """\
- name: Apply the role into a prefix
  hosts: localhost
  gather_facts: false
  roles:
    - role: pvedx.datastore_exporter.pve_datastore_exporter
"""
UNIT_ONLY_PLAY = """\
- name: Render the systemd unit only, with the role's default user and paths
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Render the unit
      ansible.builtin.include_role:
        name: pvedx.datastore_exporter.pve_datastore_exporter
        tasks_from: service.yml
"""
INSTALL_ONLY_PLAY = """\
- name: Apply the role's install step alone
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Install the exporter
      ansible.builtin.include_role:
        name: pvedx.datastore_exporter.pve_datastore_exporter
        tasks_from: install.yml
"""
# Awkward for both .env parsers (systemd's and python-dotenv's): space, quotes, backslash, hash.
ODD_DATABASE_URL = 'sqlite:////var/lib/pvedx odd/"quoted" #not-a-comment\\db.sqlite'
UNIT = "etc/systemd/system/pve-datastore-exporter.service"
ENV_FILE = "etc/pve-datastore-exporter/exporter.env"
VENV = "opt/pve-datastore-exporter/venv"


def role_vars(prefix: Path, package: str, **extra) -> dict:
    """Variables for an unprivileged install into prefix, from the test wheelhouse."""
    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    return {
        "pve_datastore_exporter_prefix": str(prefix),
        "pve_datastore_exporter_manage_service": False,
        "pve_datastore_exporter_manage_user": False,
        "pve_datastore_exporter_install_os_packages": False,
        "pve_datastore_exporter_user": user,
        "pve_datastore_exporter_group": group,
        "pve_datastore_exporter_config_owner": user,
        # the wheelhouse was built by this interpreter, so its binary wheels fit it
        "pve_datastore_exporter_python": os.path.realpath(sys.executable),
        "pve_datastore_exporter_package": package,
        "pve_datastore_exporter_pip_find_links": str(wheelhouse()),
        "pve_datastore_exporter_pip_no_index": True,
        "pve_datastore_exporter_proxmox_host": "pve1.example.org",
        "pve_datastore_exporter_proxmox_user": "monitor@pve",
        "pve_datastore_exporter_proxmox_token_name": "exporter",
        "pve_datastore_exporter_proxmox_token_value": SECRETS["pve_datastore_exporter_proxmox_token_value"],
        "pve_datastore_exporter_proxmox_password": SECRETS["pve_datastore_exporter_proxmox_password"],
        "pve_datastore_exporter_api_token": SECRETS["pve_datastore_exporter_api_token"],
        **extra,
    }


def apply(base: Path, variables: dict, *flags: str, name: str = "vars", play: str = PLAY):
    """ansible-playbook of the role (or of `play`) on localhost with the given variables."""
    text, play = play, base / "play.yml"
    play.write_text(text)
    args = [*localhost_args(), "-e", write_vars(base / f"{name}.json", variables), *flags, str(play)]
    return run_playbook(base, args, timeout=600)


PASSWORDS = {"prometheus": "pvedx-scrape-pw-3f9a01", "ansible": "pvedx-write-pw-8c27de"}
ROLES_PLAY_NAME = "Apply the role once per instance"


def apply_instances(base: Path, shared: dict, instances: list[dict], *flags: str, name: str):
    """One play applying the role once per entry of `instances` (role parameters), `shared` as extra vars."""
    play = base / f"{name}.yml"
    play.write_text(json.dumps([{"name": ROLES_PLAY_NAME, "hosts": "localhost", "gather_facts": False,
                                 "roles": [{"role": "pvedx.datastore_exporter.pve_datastore_exporter", **entry}
                                           for entry in instances]}]))
    args = [*localhost_args(), "-e", write_vars(base / f"{name}.json", shared), *flags, str(play)]
    return run_playbook(base, args, timeout=600)


def issue(ca, *names: str) -> tuple[str, str]:
    """(certificate chain, key) PEM text from the throw-away CA."""
    cert = ca.issue_cert(*names)
    return "".join(p.bytes().decode() for p in cert.cert_chain_pems), cert.private_key_pem.bytes().decode()


def instance_entries(ca, prefix: Path) -> tuple[list[dict], str, str]:
    """Role parameters of alpha (plain), beta (TLS from content, two basic-auth users) and gamma (TLS from
    files on the target, links as certbot's live/ files are); also beta's key and the given hash."""
    cert, key = issue(ca, "localhost", "127.0.0.1")
    (prefix / "etc/ssl/gamma/archive").mkdir(parents=True)
    for suffix, text in (("crt", cert), ("key", key)):
        (prefix / f"etc/ssl/gamma/archive/gamma1.{suffix}").write_text(text)
        (prefix / f"etc/ssl/gamma/gamma.{suffix}").symlink_to(f"archive/gamma1.{suffix}")
    hashed = bcrypt.hashpw(PASSWORDS["ansible"].encode(), bcrypt.gensalt(4)).decode()
    entries = [
        {"pve_datastore_exporter_instance": "alpha", "pve_datastore_exporter_listen_address": "127.0.0.1:19101",
         "pve_datastore_exporter_proxmox_cluster_name": "alpha"},
        {"pve_datastore_exporter_instance": "beta", "pve_datastore_exporter_listen_address": "127.0.0.1:19102",
         "pve_datastore_exporter_tls_cert": cert, "pve_datastore_exporter_tls_key": key,
         "pve_datastore_exporter_tls_min_version": "TLS13",
         "pve_datastore_exporter_basic_auth_users": [{"name": "prometheus", "password": PASSWORDS["prometheus"]},
                                                     {"name": "ansible", "password_hash": hashed}],
         "pve_datastore_exporter_write_users": "ansible",
         "pve_datastore_exporter_web_config_extra": {"http_server_config": {
             "headers": {"Strict-Transport-Security": "max-age=31536000"}}}},
        {"pve_datastore_exporter_instance": "gamma", "pve_datastore_exporter_listen_address": "127.0.0.1:19103",
         "pve_datastore_exporter_tls_cert_file": "/etc/ssl/gamma/gamma.crt",
         "pve_datastore_exporter_tls_key_file": "/etc/ssl/gamma/gamma.key"},
    ]
    return entries, key, hashed


def fresh_prefix_check(base: Path) -> tuple:
    """Check mode of the single unit (the converged fixture's settings) on a prefix nothing was installed in."""
    fresh = base / "fresh"
    variables = dict(role_vars(fresh, str(exporter_wheel())), **single_unit(base))
    return apply(base, variables, "--check", "--diff"), fresh


def source_directory_runs(base: Path) -> tuple:
    """The install step thrice from a copy of the repo's sources: as it is, again, and after a change."""
    src = _copy_source(base)
    variables = role_vars(base / "prefix", str(src))
    first, second = apply(base, variables, play=INSTALL_ONLY_PLAY), apply(base, variables, play=INSTALL_ONLY_PLAY)
    (src / "exporter" / "pve_datastore_exporter" / "_touched.py").write_text("# changed\n")
    return first, second, apply(base, variables, play=INSTALL_ONLY_PLAY), base / "prefix"


def beside_scenarios() -> dict:
    """The tests whose plays run beside the converged fixture's, and what runs them."""
    return {"test_check_mode_on_a_fresh_prefix_creates_nothing": fresh_prefix_check,
            "test_source_directory_package_is_idempotent": source_directory_runs,
            "test_preflight_refuses_bad_tls_auth_and_instance_settings": refused_runs}


@pytest.fixture(scope="module", autouse=True)
def beside(request, tmp_path_factory):
    """The plays of the tests of beside_scenarios() (prefixes of their own, nothing shared with the converged one), begun
    in a second thread before the converged fixture's plays and run beside them: an ansible-playbook keeps
    about one core busy, and the machine has two. {test name: Future of its scenario's results}; only the
    selected tests' scenarios run. A test's assertions stay in the test."""
    selected = {item.originalname for item in request.session.items if item.module is request.module}
    wheelhouse()  # built here, once: both threads take it
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        yield {name: pool.submit(scenario, tmp_path_factory.mktemp(name.removeprefix("test_")[:30]))
               for name, scenario in beside_scenarios().items() if name in selected}


@pytest.fixture(scope="module")
def converged(tmp_path_factory):
    """One prefix where one play installs the single unit (an awkward DATABASE_URL) and the instances
    alpha, beta and gamma beside it; the same play twice. The instances share the single unit's
    virtualenv: one install from the session's wheel.

    `variables` are the single unit's as extra vars (for plays of the single unit alone); `shared` and
    `entries` the instances' (extra vars, role parameters). Tests that change a setting for good update them.
    """
    base = tmp_path_factory.mktemp("role")
    prefix = base / "prefix"
    ca = trustme.CA()
    entries, key, hashed = instance_entries(ca, prefix)
    shared = role_vars(prefix, str(exporter_wheel()))
    # Extra vars outrank role parameters: the single unit's DATABASE_URL is a role parameter, so the
    # instances keep their own. The single unit copies a wheelhouse in (two wheels: the copy task's
    # round trips are per file), so every run of it here says what that task does a second time and in
    # check mode (tests/test_ansible_nspawn.py copies the whole wheelhouse in its first run only).
    single = single_unit(base)
    first = apply_instances(base, shared, [single, *entries], "-v", "--diff", name="converge1")
    second = apply_instances(base, shared, [single, *entries], "-v", "--diff", name="converge2")
    return {"base": base, "prefix": prefix, "variables": dict(shared, **single), "shared": shared,
            "entries": entries, "ca": ca, "hashed": hashed, "key": key, "first": first, "second": second}


def single_unit(base: Path) -> dict:
    """The single unit's role parameters: an awkward DATABASE_URL, and a small wheelhouse to copy in."""
    return {"pve_datastore_exporter_database_url": ODD_DATABASE_URL,
            "pve_datastore_exporter_wheelhouse_src": str(small_wheelhouse(base / "wheelhouse-src"))}


def small_wheelhouse(folder: Path) -> Path:
    """Two wheels of the session's wheelhouse (the exporter's and one dependency's) in a folder of their own."""
    folder.mkdir()
    for wheel in (exporter_wheel(), *wheelhouse().glob("python_dotenv-*.whl")):
        shutil.copy2(wheel, folder)
    return folder


COPY_TASK = "pvedx.datastore_exporter.pve_datastore_exporter : Copy the wheelhouse to the target"
INSTALL_TASK = "pvedx.datastore_exporter.pve_datastore_exporter : Install the exporter from the local package"


def changed_tasks_per_application(output: str) -> list[list[str]]:
    """The tasks that reported a change, per application of the role in a play (each begins with its preflight)."""
    blocks = re.split(r"^TASK \[(.+?)\] \**$", output, flags=re.M)
    runs: list[list[str]] = []
    for name, text in zip(blocks[1::2], blocks[2::2], strict=True):
        if name.endswith(" : Preflight checks"):
            runs.append([])
        if runs and re.search(r"^changed: \[", text, re.M):
            runs[-1].append(name)
    return runs


def instance_secrets(run: dict) -> tuple[str, ...]:
    return (*SECRETS.values(), *PASSWORDS.values(), run["key"].splitlines()[1])


def test_first_run_installs_second_run_changes_nothing(converged):
    first, second = converged["first"], converged["second"]
    assert first.rc == 0, first.output[-4000:]
    single = changed_tasks_per_application(first.output)[0]
    assert len(single) >= 6 and COPY_TASK in single, single
    assert second.rc == 0, second.output[-4000:]
    # beta's passwords are given in plain text: bcrypt salts anew on every run, the hash in use is kept
    assert second.stats()["changed"] == 0 and second.stats()["failed"] == 0, second.output[-4000:]


def test_installed_layout_and_modes(converged):
    prefix = converged["prefix"]
    env_file = prefix / ENV_FILE
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o640
    assert stat.S_IMODE(env_file.parent.stat().st_mode) == 0o750
    assert (env_file.stat().st_uid, env_file.stat().st_gid) == (os.getuid(), os.getgid())
    assert stat.S_IMODE((prefix / "var/lib/pve-datastore-exporter").stat().st_mode) == 0o750
    unit = (prefix / UNIT).read_text()
    assert "ExecStart=/opt/pve-datastore-exporter/venv/bin/pve-datastore-exporter serve" in unit
    assert "EnvironmentFile=/etc/pve-datastore-exporter/exporter.env" in unit
    assert "StateDirectory=pve-datastore-exporter" in unit
    copied = prefix / "opt/pve-datastore-exporter/wheelhouse"
    source = Path(converged["variables"]["pve_datastore_exporter_wheelhouse_src"])
    assert sorted(p.name for p in copied.iterdir()) == sorted(p.name for p in source.iterdir()) != []
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in copied.iterdir())
    proc = subprocess.run([str(prefix / VENV / "bin/pve-datastore-exporter"), "--version"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and __version__ in proc.stdout + proc.stderr


def _check_config(prefix: Path) -> str:
    """The exporter's own reading of the .env the role wrote (no PROXMOX_/EXPORTER_ env leaking in)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PROXMOX_", "EXPORTER_", "DATABASE_URL"))}
    proc = subprocess.run([str(prefix / VENV / "bin/pve-datastore-exporter"), "--env-file",
                           str(prefix / ENV_FILE), "check-config"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_env_file_reads_back_in_the_exporter(converged):
    """The exporter's config reader gets every value the role was given, secrets masked;
    quotes, spaces, # and backslashes (the fixture's DATABASE_URL) come back unchanged."""
    out = _check_config(converged["prefix"])
    settings = dict(re.findall(r"^([A-Z_]+)\s+(\S+)", out, re.M))
    assert settings["PROXMOX_HOST"] == "pve1.example.org"
    assert settings["PROXMOX_TOKEN_NAME"] == "exporter"
    assert settings["PROXMOX_TOKEN_VALUE"] == "***"
    assert (settings["PROXMOX_HDD_DATASTORE"], settings["PROXMOX_SSD_DATASTORE"]) == ("local-lvm", "local")
    assert ODD_DATABASE_URL in out
    assert_no_secrets(out)


def test_secrets_never_reach_the_output(converged):
    assert_no_secrets(converged["first"].output + converged["second"].output)
    # ... but they are in the file the service reads
    text = (converged["prefix"] / ENV_FILE).read_text()
    assert all(value in text for value in SECRETS.values())


def test_check_mode_on_a_fresh_prefix_creates_nothing(beside):
    result, fresh = beside["test_check_mode_on_a_fresh_prefix_creates_nothing"].result()
    assert result.rc == 0, result.output[-4000:]
    assert result.changed() >= 6
    assert not fresh.exists()
    assert "+ExecStart=/opt/pve-datastore-exporter/venv/bin/pve-datastore-exporter serve" in result.output
    assert_no_secrets(result.output)


def test_a_changed_setting_is_reported_in_check_mode_and_applied(converged):
    base, prefix, variables = converged["base"], converged["prefix"], converged["variables"]
    changed = dict(variables, pve_datastore_exporter_refresh_interval=30)
    check = apply(base, changed, "--check", name="check30")
    assert check.changed() == 1, check.output[-4000:]
    assert "EXPORTER_REFRESH_INTERVAL=60" in (prefix / ENV_FILE).read_text()
    assert apply(base, changed, name="apply30").changed() == 1
    assert "EXPORTER_REFRESH_INTERVAL=30" in (prefix / ENV_FILE).read_text()
    converged["variables"] = changed  # the prefix's state from now on (no run to change it back)


def test_check_mode_on_a_converged_prefix_reports_nothing(converged):
    """Check mode against the prefix as the last real run left it (the changed setting, when that ran first)."""
    result = apply(converged["base"], converged["variables"], "--check", "--diff", name="check")
    assert result.rc == 0, result.output[-4000:]
    assert result.changed() == 0


def test_source_directory_package_is_idempotent(beside):
    """A checkout (here a copy of the repo's sources) installs once, then only when it changes.

    The role's install step alone (tasks_from: install.yml): the rest of the role reads nothing of the
    package but its path, and runs with these settings in the converged prefix, twice, changing nothing.
    """
    first, second, third, prefix = beside["test_source_directory_package_is_idempotent"].result()
    assert first.rc == 0, first.output[-4000:]
    assert second.changed() == 0, second.output[-4000:]
    assert third.changed() == 2, third.output[-4000:]  # reinstall + new fingerprint (a file was added)
    assert (prefix / VENV / "bin/pve-datastore-exporter").exists()


@pytest.fixture(scope="module")
def default_unit(tmp_path_factory):
    """The unit as the role renders it with its defaults (system user, /opt, /etc)."""
    base = tmp_path_factory.mktemp("unit")
    play = base / "unit.yml"
    play.write_text(UNIT_ONLY_PLAY)
    user = pwd.getpwuid(os.getuid()).pw_name
    variables = {"pve_datastore_exporter_prefix": str(base / "prefix"),
                 "pve_datastore_exporter_manage_service": False,
                 "pve_datastore_exporter_config_owner": user}
    result = run_playbook(base, [*localhost_args(), "-e", write_vars(base / "v.json", variables), str(play)])
    assert result.rc == 0, result.output[-4000:]
    return base / "prefix" / UNIT


def exposure(unit: Path) -> float:
    """`systemd-analyze security --offline=true` overall exposure of a unit file."""
    analyze = require_tool("systemd-analyze")
    proc = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(unit)],
                          capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout + proc.stderr)
    assert match, proc.stdout + proc.stderr
    return float(match.group(1))


def test_unit_hardening_exposure_at_most_2(default_unit):
    """The measured exposure is <= 2.0 and --threshold=20 (tenths) agrees."""
    analyze = require_tool("systemd-analyze")
    score = exposure(default_unit)
    print(f"systemd-analyze security --offline=true exposure: {score}")
    assert score <= 2.0
    proc = subprocess.run([analyze, "security", "--offline=true", "--threshold=20", "--no-pager",
                           str(default_unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout


def test_unit_passes_systemd_analyze_verify(default_unit, converged, tmp_path):
    """systemd-analyze verify accepts the unit (ExecStart rebased onto the test install)."""
    analyze = require_tool("systemd-analyze")
    text = default_unit.read_text().replace(
        "ExecStart=/opt/pve-datastore-exporter", f"ExecStart={converged['prefix']}/opt/pve-datastore-exporter")
    unit = tmp_path / "pve-datastore-exporter.service"
    unit.write_text(text)
    proc = subprocess.run([analyze, "verify", "--no-pager", str(unit)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stdout + proc.stderr


def test_hardening_directives_present(default_unit):
    text = default_unit.read_text()
    for line in ("User=pve-datastore-exporter", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "ProtectHome=yes", "PrivateTmp=yes", "PrivateDevices=yes", "CapabilityBoundingSet=\n",
                 "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "SystemCallFilter=@system-service",
                 "MemoryDenyWriteExecute=yes", "MemoryMax=512M"):
        assert line in text, line


# -- several instances, TLS and basic auth (converged beside the single unit: they share its virtualenv) -------


def load_web_config(path: Path) -> str:
    """The exporter's own reading of a web config (its summary line); fails on anything it refuses."""
    code = "import sys; from pve_datastore_exporter.http import webconfig; print(webconfig.load(sys.argv[1]).summary())"
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip()


def test_instances_install_once_and_converge(converged):
    first, second = converged["first"], converged["second"]
    assert first.rc == 0, first.output[-4000:]
    assert second.rc == 0 and second.changed() == 0, second.output[-4000:]
    # one install into the one virtualenv, by the single unit from the session's wheel; the instances find it done
    single, *instances = changed_tasks_per_application(first.output)
    assert len(instances) == 3 and INSTALL_TASK in single, single
    assert not any(INSTALL_TASK in names for names in instances), instances
    assert_no_secrets(first.output + second.output, instance_secrets(converged))


def test_instance_files_and_templated_unit(converged):
    prefix = converged["prefix"]
    config = prefix / "etc/pve-datastore-exporter"
    assert sorted(p.name for p in config.iterdir()) == [
        "alpha.env", "beta.crt", "beta.env", "beta.key", "beta.web.yml", "exporter.env", "gamma.env", "gamma.web.yml"]
    alpha = (config / "alpha.env").read_text()
    assert "DATABASE_URL=sqlite:////var/lib/pve-datastore-exporter/alpha/proxmox_manager.db" in alpha
    assert "EXPORTER_LISTEN_ADDRESS=127.0.0.1:19101" in alpha and "PROXMOX_CLUSTER_NAME=alpha" in alpha
    assert "# EXPORTER_WEB_CONFIG_FILE=" in alpha
    assert "EXPORTER_WEB_CONFIG_FILE=/etc/pve-datastore-exporter/beta.web.yml" in (config / "beta.env").read_text()
    assert "EXPORTER_WRITE_USERS=ansible" in (config / "beta.env").read_text()
    for name, mode in (("beta.web.yml", 0o640), ("beta.key", 0o640), ("beta.crt", 0o644), ("alpha.env", 0o640)):
        assert stat.S_IMODE((config / name).stat().st_mode) == mode, name
    for name in ("alpha", "beta", "gamma"):
        assert stat.S_IMODE((prefix / f"var/lib/pve-datastore-exporter/{name}").stat().st_mode) == 0o750
    unit = (prefix / "etc/systemd/system/pve-datastore-exporter@.service").read_text()
    for line in ("EnvironmentFile=/etc/pve-datastore-exporter/%i.env", "StateDirectory=pve-datastore-exporter/%i",
                 "WorkingDirectory=%S/pve-datastore-exporter/%i", "ProtectSystem=strict"):
        assert line in unit, line
    # the single unit is still there, untouched by the instances
    assert (prefix / UNIT).read_text().count("EnvironmentFile=/etc/pve-datastore-exporter/exporter.env") == 1


def test_web_config_reads_back_in_the_exporter(converged):
    """The exporter accepts the role's web configs; the passwords were hashed on the controller."""
    import yaml

    config = converged["prefix"] / "etc/pve-datastore-exporter"
    assert load_web_config(config / "beta.web.yml") == "TLS TLSv1_3..TLSv1_3, basic auth for 2 user(s)"
    beta = yaml.safe_load((config / "beta.web.yml").read_text())
    assert beta["tls_server_config"] == {"cert_file": "beta.crt", "key_file": "beta.key",
                                         "client_auth_type": "NoClientCert", "min_version": "TLS13"}
    assert beta["http_server_config"] == {"headers": {"Strict-Transport-Security": "max-age=31536000"}}
    users = beta["basic_auth_users"]
    assert bcrypt.checkpw(PASSWORDS["prometheus"].encode(), users["prometheus"].encode())
    assert users["ansible"] == converged["hashed"]  # a hash given is taken as it is
    gamma = yaml.safe_load((config / "gamma.web.yml").read_text())
    assert gamma == {"tls_server_config": {"cert_file": "/etc/ssl/gamma/gamma.crt", "key_file": "/etc/ssl/gamma/gamma.key",
                                           "client_auth_type": "NoClientCert", "min_version": "TLS12"}}
    assert (config / "beta.key").read_text() == converged["key"].strip() + "\n"


def beta_only(entries: list[dict], **changes) -> list[dict]:
    """beta's role parameters with `changes` (None removes a key), as the only entry of a play.

    A play that changes one instance applies the role to that instance alone: that the others report
    nothing on an unchanged run is the fixture's second run.
    """
    (beta,) = [e for e in entries if e["pve_datastore_exporter_instance"] == "beta"]
    beta = {k: v for k, v in {**beta, **changes}.items() if v is not None}
    return [beta]


def with_beta(entries: list[dict], beta: dict) -> list[dict]:
    return [beta if e["pve_datastore_exporter_instance"] == "beta" else e for e in entries]


def test_renewed_certificate_and_changed_password(converged):
    """A new certificate rewrites only its files (the exporter re-reads them: nothing restarts); a new
    password rewrites the web config (that the same password keeps its hash although bcrypt salts anew
    is the converged fixture's second run)."""
    base, prefix, shared, entries = converged["base"], converged["prefix"], converged["shared"], converged["entries"]
    config = prefix / "etc/pve-datastore-exporter"
    web_before = (config / "beta.web.yml").read_text()
    cert, key = issue(converged["ca"], "localhost", "127.0.0.1")
    renewed = beta_only(entries, pve_datastore_exporter_tls_cert=cert, pve_datastore_exporter_tls_key=key)
    check = apply_instances(base, shared, renewed, "--check", name="renew-check")
    assert check.rc == 0 and check.changed() == 1, check.output[-4000:]  # one loop task: the cert and the key
    run = apply_instances(base, shared, renewed, name="renew")
    assert run.rc == 0 and run.changed() == 1, run.output[-4000:]
    assert (config / "beta.crt").read_text() == cert.strip() + "\n"
    assert (config / "beta.web.yml").read_text() == web_before

    new_password = "pvedx-new-scrape-pw-77d1e0"
    changed_users = beta_only(renewed, pve_datastore_exporter_basic_auth_users=[
        {"name": "prometheus", "password": new_password}, {"name": "ansible", "password_hash": converged["hashed"]}])
    run = apply_instances(base, shared, changed_users, name="password")
    assert run.rc == 0 and run.changed() == 1, run.output[-4000:]
    assert new_password not in run.output
    import yaml

    users = yaml.safe_load((config / "beta.web.yml").read_text())["basic_auth_users"]
    assert bcrypt.checkpw(new_password.encode(), users["prometheus"].encode())
    # The same password again keeps its hash: the converged fixture's second run (beta's passwords
    # given in plain text, nothing changed) says so.
    converged["entries"] = with_beta(entries, changed_users[0])


def test_instance_unit_hardening_exposure_at_most_2(converged, tmp_path):
    """The templated unit, as one of its instances, scores what the single unit scores."""
    template = converged["prefix"] / "etc/systemd/system/pve-datastore-exporter@.service"
    unit = tmp_path / "pve-datastore-exporter@alpha.service"
    unit.write_text(template.read_text())
    score = exposure(unit)
    print(f"systemd-analyze security --offline=true exposure of an instance: {score}")
    assert score <= 2.0


def test_turning_tls_and_basic_auth_off_removes_their_files(converged):
    base, prefix, shared, entries = converged["base"], converged["prefix"], converged["shared"], converged["entries"]
    config = prefix / "etc/pve-datastore-exporter"
    (beta,) = beta_only(entries)
    plain = [{k: v for k, v in beta.items() if not k.startswith(("pve_datastore_exporter_tls_", "pve_datastore_exporter_basic",
                                                                   "pve_datastore_exporter_web_config_extra"))}]
    run = apply_instances(base, shared, plain, name="plain")
    assert run.rc == 0 and run.changed() == 2, run.output[-4000:]  # the .env, and one loop removing three files
    assert not any((config / name).exists() for name in ("beta.web.yml", "beta.crt", "beta.key"))
    assert "# EXPORTER_WEB_CONFIG_FILE=" in (config / "beta.env").read_text()
    converged["entries"] = with_beta(entries, plain[0])


def remove_instances(run: dict) -> tuple:
    """alpha and beta in one play, then gamma, the last: (first play, what it left, last play)."""
    base, shared, entries, prefix = run["base"], run["shared"], run["entries"], run["prefix"]
    gone = apply_instances(base, shared, [dict(e, pve_datastore_exporter_state="absent") for e in entries[:2]],
                           name="absent12")
    left = {"config": sorted(p.name for p in (prefix / "etc/pve-datastore-exporter").iterdir()),
            "alpha state": (prefix / "var/lib/pve-datastore-exporter/alpha").exists(),
            "templated unit": (prefix / "etc/systemd/system/pve-datastore-exporter@.service").exists(),
            "virtualenv": (prefix / VENV).exists()}
    last = apply_instances(base, shared, [dict(entries[2], pve_datastore_exporter_state="absent")], name="absent3")
    run["entries"] = []
    # gamma's certificate files were the test's, not the role's: they go with gamma
    shutil.rmtree(prefix / "etc/ssl")
    return gone, left, last


def test_instances_go_one_by_one_and_the_last_takes_the_shared_files(converged):
    prefix = converged["prefix"]
    config, unit = prefix / "etc/pve-datastore-exporter", prefix / "etc/systemd/system/pve-datastore-exporter@.service"
    gone, left, last = remove_instances(converged)
    assert gone.rc == 0, gone.output[-4000:]
    assert left["config"] == ["exporter.env", "gamma.env", "gamma.web.yml"]
    assert not left["alpha state"]
    assert left["templated unit"] and left["virtualenv"]  # gamma still uses them
    assert last.rc == 0, last.output[-4000:]
    assert not unit.exists(), "the last instance takes the templated unit"
    # the single unit remains, with what it needs
    assert sorted(p.name for p in config.iterdir()) == ["exporter.env"] and (prefix / VENV).exists()
    assert (prefix / "var/lib/pve-datastore-exporter").is_dir()


def test_state_absent_removes_everything(converged):
    """The single unit, the last exporter of the prefix once the instances are gone, removed with and
    without its data."""
    if converged["entries"]:  # the test before did not run (-k): the instances go first
        remove_instances(converged)
    base, prefix, variables = converged["base"], converged["prefix"], converged["variables"]
    (prefix / "var/lib/pve-datastore-exporter/proxmox_manager.db").write_text("data")
    kept = apply(base, dict(variables, pve_datastore_exporter_state="absent", pve_datastore_exporter_keep_data=True),
                 name="absent-keep")
    assert kept.rc == 0, kept.output[-4000:]
    assert (prefix / "var/lib/pve-datastore-exporter/proxmox_manager.db").exists()
    gone = apply(base, dict(variables, pve_datastore_exporter_state="absent"), name="absent")
    assert gone.rc == 0 and gone.changed() == 1, gone.output[-4000:]
    leftovers = [p for p in prefix.rglob("*") if p.is_file() or p.is_symlink()]
    assert leftovers == []
    assert not (prefix / "opt/pve-datastore-exporter").exists()
    assert not (prefix / "etc/pve-datastore-exporter").exists()
    again = apply(base, dict(variables, pve_datastore_exporter_state="absent"), name="absent-again")
    assert again.changed() == 0


BAD_SETTINGS = [
    ({"pve_datastore_exporter_instance": "exporter"}, "not \"exporter\""),
    ({"pve_datastore_exporter_instance": "a/b"}, "names the instance of the templated unit"),
    ({"pve_datastore_exporter_tls_cert": "-----BEGIN CERTIFICATE-----\nx\n"}, "TLS needs both the certificate"),
    ({"pve_datastore_exporter_tls_cert": "not pem", "pve_datastore_exporter_tls_key_file": "/k.pem"},
     "the content given for cert_file is not PEM"),
    ({"pve_datastore_exporter_tls_cert_file": "/nope/x.crt", "pve_datastore_exporter_tls_key_file": "/nope/x.key"},
     "/nope/x.crt (cert_file) is not a file"),
    ({"pve_datastore_exporter_tls_cert_file": "x.crt", "pve_datastore_exporter_tls_key_file": "/x.key"},
     "cert_file must be an absolute path"),
    ({"pve_datastore_exporter_tls_client_auth_type": "RequireAndVerifyClientCert",
      "pve_datastore_exporter_tls_cert_file": "/c", "pve_datastore_exporter_tls_key_file": "/k"},
     "needs the client CA"),
    ({"pve_datastore_exporter_basic_auth_users": [{"name": "a", "password": "p", "password_hash": "h"}]},
     "basic-auth user a needs a password or a password_hash (one of them)"),
    ({"pve_datastore_exporter_basic_auth_users": [{"name": "a", "password_hash": "$1$md5"}]},
     "the password_hash of basic-auth user a is not a bcrypt hash"),
    ({"pve_datastore_exporter_basic_auth_users": [{"name": "a", "password": "p"}],
      "pve_datastore_exporter_write_users": "a,b"}, "names b, who is not in pve_datastore_exporter_basic_auth_users"),
    ({"pve_datastore_exporter_basic_auth_users": [{"name": "a", "password": "p"}],
      "pve_datastore_exporter_web_config_file": "/etc/own.yml"}, "web config of your own"),
    ({"pve_datastore_exporter_basic_auth_users": [{"name": "a", "password": "p"}],
      "pve_datastore_exporter_api_url": "http://127.0.0.1:9", "pve_datastore_exporter_default_hdd_datastore": "tank"},
     "the defaults step needs a user who may write"),
    ({"pve_datastore_exporter_basic_auth_users": [{"name": "a", "pasword": "p"}]}, "pasword"),
]


# A failed task ("fatal: [host]: FAILED! => {...}") or loop item ("failed: [host] (item=...) => {...}").
_FAILED = re.compile(r"^(?:fatal|failed): \[([^]]+)\](?:: FAILED!| \(item=.*?\)) => (\{.*\})$", re.M)


@pytest.fixture(scope="module")
def refused(beside):
    """{host: (PlayResult, the messages of that host's failures, its prefix)} of refused_runs()."""
    return beside["test_preflight_refuses_bad_tls_auth_and_instance_settings"].result()


def refused_runs(base: Path) -> dict:
    """One play over one inventory host per bad setting (all this machine, each with its own prefix):
    {host: (PlayResult, the messages of that host's failures, its prefix)}."""
    hosts = {f"bad{i}": dict(role_vars(base / f"prefix{i}", f"pve-datastore-exporter=={__version__}", **settings),
                             ansible_connection="local", ansible_python_interpreter=str(ANSIBLE_VENV / "bin/python"))
             for i, (settings, _) in enumerate(BAD_SETTINGS)}
    inventory = base / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": hosts}}))
    play = base / "play.yml"
    play.write_text(PLAY.replace("hosts: localhost", "hosts: all"))
    result = run_playbook(base, ["-i", str(inventory), "--forks", "4", str(play)], timeout=600)
    messages = {host: [] for host in hosts}
    for host, text in _FAILED.findall(result.output):
        messages[host].append(json.loads(text).get("msg", ""))
    return {host: (result, messages[host], base / f"prefix{i}") for i, host in enumerate(hosts)}


@pytest.mark.parametrize("index,message", [(i, m) for i, (_, m) in enumerate(BAD_SETTINGS)],
                         ids=[m[:40] for _, m in BAD_SETTINGS])
def test_preflight_refuses_bad_tls_auth_and_instance_settings(refused, index, message):
    """Preflight (or the argument spec) stops before anything is installed, naming what is wrong."""
    result, messages, prefix = refused[f"bad{index}"]
    assert result.rc != 0 and result.stats(f"bad{index}")["failed"] == 1, result.output[-3000:]
    assert any(message in text for text in messages), messages or result.output[-3000:]
    assert not (prefix / "opt").exists()
