"""Driving the real Ansible tools (in .venv-ansible, Python >= 3.12) from the main test suite."""

from __future__ import annotations

import atexit
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.needs import in_ci, load_yaml, require_tool

ROOT = Path(__file__).resolve().parent.parent
COLLECTION = ROOT / "ansible"
ROLE = COLLECTION / "roles" / "pve_datastore_exporter"
MODULE = COLLECTION / "plugins" / "modules" / "datastore_defaults.py"
ANSIBLE_VENV = Path(os.environ.get("PVEDX_ANSIBLE_VENV", ROOT / ".venv-ansible"))
# ansible-test keeps its sanity virtualenvs under ~/.ansible/test: a HOME of its own keeps
# them across runs (the first run builds them from PyPI, later runs take ~15 s).
ANSIBLE_TEST_HOME = Path(os.environ.get("PVEDX_ANSIBLE_TEST_HOME", "/var/cache/pvedx-ansible-test"))
SECRETS = {
    "pve_datastore_exporter_proxmox_token_value": "pvedx-secret-token-6c1d0f0e",
    "pve_datastore_exporter_proxmox_password": "pvedx-secret-password-93ab71",
    "pve_datastore_exporter_api_token": "pvedx-secret-api-token-5be2c4",
}
_RECAP = re.compile(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", re.M)


def tool(name: str) -> str:
    """Path of an Ansible command in .venv-ansible; skip locally / fail in CI when missing."""
    return require_tool(str(ANSIBLE_VENV / "bin" / name))


def collections_dir(base: Path) -> Path:
    """A collections path where pvedx.datastore_exporter is the repo's ansible/ directory."""
    root = base / "collections"
    link = root / "ansible_collections" / "pvedx" / "datastore_exporter"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(COLLECTION)
    return root


def ansible_env(base: Path, **extra: str) -> dict[str, str]:
    """Environment for ansible-* commands: our collection, no colours, no ansible.cfg lookup."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        PATH=f"{ANSIBLE_VENV / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
        ANSIBLE_COLLECTIONS_PATH=str(collections_dir(base)),
        ANSIBLE_CONFIG=str(base / "no-ansible.cfg"),
        ANSIBLE_LOCAL_TEMP=str(base / "ansible-local"),
        ANSIBLE_HOME=str(base / "ansible-home"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_PIPELINING="True",
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_RETRY_FILES_ENABLED="False",
        ANSIBLE_DEPRECATION_WARNINGS="False",
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update(extra)
    return env


@dataclass
class PlayResult:
    """One ansible-playbook run: exit code, the whole output and the PLAY RECAP per host."""

    rc: int
    output: str
    recap: dict[str, dict[str, int]]

    def stats(self, host: str = "localhost") -> dict[str, int]:
        """The recap counters of one host."""
        return self.recap[host]

    def changed(self, host: str = "localhost") -> int:
        """How many tasks changed on the host."""
        return self.recap[host]["changed"]


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP lines -> {host: {"ok": n, "changed": n, ...}}."""
    tail = output.rsplit("PLAY RECAP", 1)[-1]
    return {host: {k: int(v) for k, v in (kv.split("=") for kv in counters.split())}
            for host, counters in _RECAP.findall(tail)}


def run_playbook(base: Path, args: list[str], *, timeout: float = 300, env: dict | None = None) -> PlayResult:
    """ansible-playbook ARGS with our collection; never raises on a failed play."""
    cmd = [tool("ansible-playbook"), *args]
    proc = subprocess.run(cmd, env=env or ansible_env(base), cwd=base, capture_output=True,
                          text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    return PlayResult(proc.returncode, output, parse_recap(output))


def localhost_args(interpreter: str | None = None) -> list[str]:
    """Inventory arguments for a play against this machine without ssh."""
    python = interpreter or str(ANSIBLE_VENV / "bin" / "python")
    return ["-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={python}"]


def write_vars(path: Path, variables: dict) -> str:
    """Extra vars as a JSON file; returns the `@file` argument for -e."""
    path.write_text(json.dumps(variables, indent=2))
    return f"@{path}"


@functools.cache
def _module_collections() -> Path:
    """A collections path (made once per session) for running a module's file directly."""
    return collections_dir(Path(tempfile.mkdtemp(prefix="pvedx-collections-")))


def run_module(args: dict, *, check: bool = False, diff: bool = False, timeout: float = 60) -> dict:
    """Run datastore_defaults.py's main() with injected args under the Ansible venv's Python."""
    python = tool("python")
    payload = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": payload}, handle)
    # The module imports the collection's module_utils as ansible_collections.pvedx.datastore_exporter.
    env = dict(os.environ, PYTHONPATH=str(_module_collections()))
    try:
        proc = subprocess.run([python, str(MODULE), handle.name], capture_output=True, text=True,
                              timeout=timeout, env=env)
    finally:
        os.unlink(handle.name)
    start = proc.stdout.find("{")
    result = json.loads(proc.stdout[start:]) if start >= 0 else {}
    result["_rc"] = proc.returncode
    result["_output"] = proc.stdout + proc.stderr
    return result


def _copy_source(dest: Path) -> Path:
    """Copy the package sources (not .venv, .git, build output) so pip builds outside the repo."""
    ignore = shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__", "instance")
    src = dest / "src"
    src.mkdir(parents=True)
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "exporter", src / "exporter", ignore=ignore)
    return src


@functools.cache
def wheelhouse() -> Path:
    """The exporter's wheel, its dependencies and its build backend, built once per test session: every
    install of the Ansible tests (each instance, each prefix, the nspawn container) takes it from here."""
    base = Path(tempfile.mkdtemp(prefix="pvedx-wheelhouse-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)  # ~16 MB a session otherwise left in /tmp
    src = _copy_source(base)
    out = base / "wheels"
    pip = [sys.executable, "-m", "pip", "--quiet", "--disable-pip-version-check"]
    # Nothing unpinned: the exporter's wheel built by .venv's own (locked) setuptools, everything else
    # downloaded by the hashes of requirements/wheelhouse.txt (`make lock`), never what PyPI serves today.
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)],
                   check=True, capture_output=True, text=True, timeout=300)
    subprocess.run([*pip, "download", "--no-deps", "--require-hashes", "--only-binary", ":all:", "-d", str(out),
                    "-r", str(ROOT / "requirements" / "wheelhouse.txt")], check=True, capture_output=True, text=True,
                   timeout=300)
    return out


def exporter_wheel() -> Path:
    """The pve-datastore-exporter wheel inside the wheelhouse."""
    (wheel,) = wheelhouse().glob("pve_datastore_exporter-*.whl")
    return wheel


def assert_no_secrets(text: str, secrets: tuple[str, ...] | None = None) -> None:
    """Fail when any secret value (the role test's by default) shows up in text (ansible output, logs)."""
    leaked = [s for s in (secrets or tuple(SECRETS.values())) if s and s in text]
    assert not leaked, f"secret values leaked into the output: {leaked}"


def role_options() -> dict:
    """The role's `main` argument spec options, in file order."""
    return load_yaml(ROLE / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]


def env_key_variable(key: str) -> str:
    """.env key -> role variable: PROXMOX_PORT -> pve_datastore_exporter_proxmox_port (EXPORTER_ dropped)."""
    return "pve_datastore_exporter_" + re.sub(r"^EXPORTER_", "", key).lower()


_MARKUP = re.compile(r"\b[CVOI]\(([^)]*)\)")
BEGIN_TABLE, END_TABLE = "<!-- BEGIN VARIABLES (generated from meta/argument_specs.yml) -->", "<!-- END VARIABLES -->"


def _cell(value) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == "" or value is None:
        return '`""`'
    if isinstance(value, (list, dict)):
        return "`" + json.dumps(value) + "`"
    return f"`{value}`"


def variables_table(options: dict) -> str:
    """The README's variables table, generated from the argument spec."""
    rows = ["| variable | type | default | description |", "| --- | --- | --- | --- |"]
    for name, spec in options.items():
        kind = spec["type"] + (f" of {spec['elements']}" if spec.get("elements") else "")
        text = " ".join(spec["description"]) if isinstance(spec["description"], list) else spec["description"]
        text = _MARKUP.sub(r"`\1`", text).replace("|", "\\|")
        if spec.get("choices"):
            text += " Choices: " + ", ".join(f"`{c}`" for c in spec["choices"]) + "."
        if spec.get("no_log"):
            text += " **Secret** (`no_log`)."
        rows.append(f"| `{name}` | {kind} | {_cell(spec.get('default'))} | {text} |")
    return "\n".join(rows)


def require_collection(name: str) -> Path:
    """Where a collection of the Ansible venv lives (community.proxmox comes with the `ansible` package);
    skip locally / fail in CI when ansible/requirements-test.txt is not installed there."""
    namespace, collection = name.split(".")
    pattern = f"lib/python3*/site-packages/ansible_collections/{namespace}/{collection}/MANIFEST.json"
    found = sorted(ANSIBLE_VENV.glob(pattern))
    if found:
        return found[0].parent
    message = f"{name} is not in {ANSIBLE_VENV} (`make venv` builds it from requirements/ansible.txt)"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
