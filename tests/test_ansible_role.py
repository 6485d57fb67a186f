"""The role applied to this machine inside a temporary prefix: no root, no systemd, real pip."""

from __future__ import annotations

import grp
import os
import pwd
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ansible_helpers import (
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

pytestmark = pytest.mark.slow

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


def apply(base: Path, variables: dict, *flags: str, name: str = "vars"):
    """ansible-playbook of the role on localhost with the given variables."""
    play = base / "play.yml"
    play.write_text(PLAY)
    args = [*localhost_args(), "-e", write_vars(base / f"{name}.json", variables), *flags, str(play)]
    return run_playbook(base, args, timeout=600)


@pytest.fixture(scope="module")
def converged(tmp_path_factory):
    """A prefix after two runs of the role: (base, prefix, first run, second run)."""
    base = tmp_path_factory.mktemp("role")
    prefix = base / "prefix"
    variables = role_vars(prefix, str(exporter_wheel()), pve_datastore_exporter_database_url=ODD_DATABASE_URL)
    first = apply(base, variables, "-v", "--diff")
    second = apply(base, variables, "-v", "--diff")
    return base, prefix, variables, first, second


def test_first_run_installs_second_run_changes_nothing(converged):
    _, prefix, _, first, second = converged
    assert first.rc == 0, first.output[-4000:]
    assert first.changed() >= 6
    assert second.rc == 0, second.output[-4000:]
    assert second.stats()["changed"] == 0 and second.stats()["failed"] == 0, second.output[-4000:]


def test_installed_layout_and_modes(converged):
    _, prefix, _, _, _ = converged
    env_file = prefix / ENV_FILE
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o640
    assert stat.S_IMODE(env_file.parent.stat().st_mode) == 0o750
    assert (env_file.stat().st_uid, env_file.stat().st_gid) == (os.getuid(), os.getgid())
    assert stat.S_IMODE((prefix / "var/lib/pve-datastore-exporter").stat().st_mode) == 0o750
    unit = (prefix / UNIT).read_text()
    assert "ExecStart=/opt/pve-datastore-exporter/venv/bin/pve-datastore-exporter serve" in unit
    assert "EnvironmentFile=/etc/pve-datastore-exporter/exporter.env" in unit
    assert "StateDirectory=pve-datastore-exporter" in unit
    proc = subprocess.run([str(prefix / VENV / "bin/pve-datastore-exporter"), "--version"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "0.1.0" in proc.stdout + proc.stderr


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
    _, prefix, _, _, _ = converged
    out = _check_config(prefix)
    settings = dict(re.findall(r"^([A-Z_]+)\s+(\S+)", out, re.M))
    assert settings["PROXMOX_HOST"] == "pve1.example.org"
    assert settings["PROXMOX_TOKEN_NAME"] == "exporter"
    assert settings["PROXMOX_TOKEN_VALUE"] == "***"
    assert (settings["PROXMOX_HDD_DATASTORE"], settings["PROXMOX_SSD_DATASTORE"]) == ("local-lvm", "local")
    assert ODD_DATABASE_URL in out
    assert_no_secrets(out)


def test_check_mode_on_a_fresh_prefix_creates_nothing(converged, tmp_path):
    _, _, variables, _, _ = converged
    fresh = tmp_path / "fresh"
    result = apply(tmp_path, dict(variables, pve_datastore_exporter_prefix=str(fresh)), "--check", "--diff")
    assert result.rc == 0, result.output[-4000:]
    assert result.changed() >= 6
    assert not fresh.exists()
    assert "+ExecStart=/opt/pve-datastore-exporter/venv/bin/pve-datastore-exporter serve" in result.output
    assert_no_secrets(result.output)


def test_check_mode_on_a_converged_prefix_reports_nothing(converged):
    base, _, variables, _, _ = converged
    result = apply(base, variables, "--check", "--diff", name="check")
    assert result.rc == 0, result.output[-4000:]
    assert result.changed() == 0


def test_a_changed_setting_is_reported_in_check_mode_and_applied(converged):
    base, prefix, variables, _, _ = converged
    changed = dict(variables, pve_datastore_exporter_refresh_interval=30)
    check = apply(base, changed, "--check", name="check30")
    assert check.changed() == 1, check.output[-4000:]
    assert "EXPORTER_REFRESH_INTERVAL=60" in (prefix / ENV_FILE).read_text()
    assert apply(base, changed, name="apply30").changed() == 1
    assert "EXPORTER_REFRESH_INTERVAL=30" in (prefix / ENV_FILE).read_text()
    assert apply(base, variables).changed() == 1  # back to the fixture's state


def test_secrets_never_reach_the_output(converged):
    _, prefix, _, first, second = converged
    assert_no_secrets(first.output + second.output)
    # ... but they are in the file the service reads
    text = (prefix / ENV_FILE).read_text()
    assert all(value in text for value in SECRETS.values())


def test_source_directory_package_is_idempotent(tmp_path):
    """A checkout (here a copy of the repo's sources) installs once, then only when it changes."""
    src = _copy_source(tmp_path)
    variables = role_vars(tmp_path / "prefix", str(src))
    first, second = apply(tmp_path, variables), apply(tmp_path, variables)
    assert first.rc == 0, first.output[-4000:]
    assert second.changed() == 0, second.output[-4000:]
    (src / "exporter" / "pve_datastore_exporter" / "_touched.py").write_text("# changed\n")
    third = apply(tmp_path, variables)
    assert third.changed() == 2, third.output[-4000:]  # reinstall + new fingerprint


def test_state_absent_removes_everything(tmp_path):
    prefix = tmp_path / "prefix"
    variables = role_vars(prefix, str(exporter_wheel()))
    assert apply(tmp_path, variables).rc == 0
    (prefix / "var/lib/pve-datastore-exporter/proxmox_manager.db").write_text("data")
    kept = apply(tmp_path, dict(variables, pve_datastore_exporter_state="absent",
                                pve_datastore_exporter_keep_data=True))
    assert kept.rc == 0, kept.output[-4000:]
    assert (prefix / "var/lib/pve-datastore-exporter/proxmox_manager.db").exists()
    gone = apply(tmp_path, dict(variables, pve_datastore_exporter_state="absent"))
    assert gone.rc == 0 and gone.changed() == 1, gone.output[-4000:]
    leftovers = [p for p in prefix.rglob("*") if p.is_file() or p.is_symlink()]
    assert leftovers == []
    assert not (prefix / "opt/pve-datastore-exporter").exists()
    assert not (prefix / "etc/pve-datastore-exporter").exists()
    again = apply(tmp_path, dict(variables, pve_datastore_exporter_state="absent"))
    assert again.changed() == 0


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
    _, prefix, _, _, _ = converged
    text = default_unit.read_text().replace(
        "ExecStart=/opt/pve-datastore-exporter", f"ExecStart={prefix}/opt/pve-datastore-exporter")
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
                 "MemoryDenyWriteExecute=yes"):
        assert line in text, line

