"""The Ansible collection under its own linters, and its docs kept in step with the code."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
from packaging.requirements import Requirement

from pve_datastore_exporter.config import SETTINGS
from tests.ansible_helpers import (
    ANSIBLE_TEST_HOME,
    ANSIBLE_VENV,
    BEGIN_TABLE,
    COLLECTION,
    END_TABLE,
    ROLE,
    ROOT,
    ansible_env,
    env_key_variable,
    load_yaml,
    require_collection,
    role_options,
    tool,
    variables_table,
)

PLAYBOOKS = ("deploy", "set_defaults", "create_vm_on_default", "ha")
# The example playbook creates its VM with community.proxmox (from the `ansible` package in requirements-test.txt).
PLAYBOOK_COLLECTIONS = {"create_vm_on_default": "community.proxmox"}
PLUGINS = (("module", "datastore_defaults"), ("module", "datastore_info"), ("lookup", "default_datastore"),
           ("filter", "bcrypt_hash"))
# The reading plugins, whose every option ansible/README.md names in a section of its own.
READING_PLUGINS = PLUGINS[1:3]
# ansible-test fetches this script from the internet before it creates a sanity virtualenv and
# runs it only to put pip into that empty venv; it first looks in its cache, so a local
# stand-in there lets every sanity test run offline (the test requirements still come from PyPI).
PIP_BOOTSTRAP = '''"""Offline stand-in for ansible-test's get-pip bootstrap: ensurepip, then pip from the index."""
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"])
subprocess.check_call([sys.executable, "-m", "pip", "install", *args])
'''


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_playbook_syntax(tmp_path, playbook):
    """Every playbook parses, called by its collection name as users call it."""
    if playbook in PLAYBOOK_COLLECTIONS:
        require_collection(PLAYBOOK_COLLECTIONS[playbook])
    proc = subprocess.run([tool("ansible-playbook"), "--syntax-check", "-i", "localhost,",
                           f"pvedx.datastore_exporter.{playbook}"],
                          env=ansible_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _core_only_venv(base) -> str:
    """A virtualenv with ansible-core and ansible-lint alone (the lock without the `ansible` package and
    the collections it bundles): what a user of the published collection lints it with.

    Made from .venv-ansible, which `make venv` installed from that lock by hash: its packages and
    scripts without the files of the `ansible` distribution. (A pip install of the same lock took ~17 s
    of the test, most of it byte-compiling ansible-core again.)
    """
    venv = base / "core-only"
    subprocess.run([tool("python"), "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True,
                   timeout=120)
    code = ("import importlib.metadata as m, json, sysconfig; d = m.distribution('ansible'); print(json.dumps("
            "{'purelib': sysconfig.get_paths()['purelib'], 'files': [str(d.locate_file(f)) for f in d.files]}))")
    source = json.loads(subprocess.run([tool("python"), "-c", code], capture_output=True, text=True, check=True,
                                       timeout=60).stdout)
    purelib = source["purelib"]
    left_out = {os.path.normpath(f) for f in source["files"]}
    tops = {os.path.relpath(f, purelib).split(os.sep)[0] for f in left_out if f.startswith(purelib + os.sep)}
    assert tops and not tops & {"ansible", "ansible_test", "ansiblelint"}, tops  # ansible-core's and the linter's stay
    target = subprocess.run([str(venv / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    shutil.copytree(purelib, target, symlinks=True, dirs_exist_ok=True,
                    ignore=lambda folder, names: [n for n in names if folder == purelib and n in tops])
    bin_dir = ANSIBLE_VENV / "bin"
    for script in bin_dir.iterdir():  # the entry points, pointed at the new venv's interpreter
        if script.is_symlink() or not script.is_file() or os.path.normpath(script) in left_out:
            continue
        first, _, rest = script.read_bytes().partition(b"\n")
        interpreter = first[2:].decode(errors="replace").strip()
        if first.startswith(b"#!") and os.path.dirname(interpreter) in (str(bin_dir), str(bin_dir.resolve())):
            (venv / "bin" / script.name).write_bytes(f"#!{venv}/bin/python\n".encode() + rest)
            (venv / "bin" / script.name).chmod(0o755)
    return str(venv / "bin")


@pytest.mark.slow
def test_ansible_lint_production_profile_on_the_collection_as_its_own_repository(tmp_path):
    """The collection, linted as its own repository with ansible-core and ansible-lint only
    (--profile production --strict, nothing skipped): the collections its requirements.yml declares are
    all it gets. Galaxy is not reachable here, so each is installed from the copy the `ansible` package
    ships, once its version is checked against the range requirements.yml gives."""
    env = ansible_env(tmp_path)
    repo = tmp_path / "repo"  # the collection's directory as a repository of its own (galaxy.yml at the top)
    shutil.copytree(COLLECTION, repo, ignore=shutil.ignore_patterns("output", "__pycache__", ".ansible"))
    subprocess.run(["git", "init", "--quiet", str(repo)], check=True, timeout=60)  # ansible-lint's project root
    env["PATH"] = f"{_core_only_venv(tmp_path)}:{env['PATH']}"
    for env_key in ("ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_CONFIG", "ANSIBLE_HOME"):
        env.pop(env_key)  # ansible-lint's own choices: the project's .ansible/ first, then ~/.ansible
    env["HOME"] = str(tmp_path / "home")
    required = load_yaml(repo / "requirements.yml")["collections"]
    assert [r["name"] for r in required] == list(PLAYBOOK_COLLECTIONS.values())
    for requirement in required:
        source = require_collection(requirement["name"])
        version = json.loads((source / "MANIFEST.json").read_text())["collection_info"]["version"]
        assert Requirement(f"x{requirement['version']}").specifier.contains(version), (requirement, version)
        subprocess.run(["ansible-galaxy", "collection", "install", "--offline", "-p", str(repo / ".ansible/collections"),
                        str(source)], env=env, cwd=repo, check=True, capture_output=True, text=True, timeout=120)
    proc = subprocess.run(["ansible-lint", "--profile", "production", "--strict", "--nocolor"],
                          env=env, cwd=repo, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Profile 'production' was required, and it passed" in out, out
    assert not list(COLLECTION.rglob(".ansible-lint*")), "no lint configuration may skip rules"


def _pip_version_of_ansible_test() -> str:
    """The pip version ansible-test bootstraps into its sanity venvs (its cache file is named after it)."""
    code = ("from ansible_test._internal.python_requirements import get_venv_packages as g;"
            "print(g(type('P', (), {'version': '3.12'})())['pip'])")
    proc = subprocess.run([tool("python"), "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return proc.stdout.strip()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ansible_test_sanity(tmp_path):
    """Every sanity test ansible-test has for a collection passes (offline pip bootstrap)."""
    ansible_test = tool("ansible-test")
    cache = ANSIBLE_TEST_HOME / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    version = _pip_version_of_ansible_test().replace(".", "_")
    (cache / f"get_pip_{version}.py").write_text(PIP_BOOTSTRAP)
    dest = tmp_path / "ansible_collections" / "pvedx" / "datastore_exporter"
    shutil.copytree(COLLECTION, dest, ignore=shutil.ignore_patterns("output", "__pycache__", ".*"))
    env = ansible_env(tmp_path, HOME=str(ANSIBLE_TEST_HOME))
    proc = subprocess.run([ansible_test, "sanity", "--venv", "--python", "3.12", "--color", "no"],
                          env=env, cwd=dest, capture_output=True, text=True, timeout=840)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    ran = set(re.findall(r'Running sanity test "([\w.-]+)"', out))
    assert {"validate-modules", "pylint", "pep8", "yamllint", "ansible-doc", "import", "compile",
            "runtime-metadata"} <= ran, sorted(ran)


def test_argument_specs_match_defaults():
    """meta/argument_specs.yml documents exactly the variables of defaults/main.yml, same defaults."""
    defaults = load_yaml(ROLE / "defaults" / "main.yml")
    options = role_options()
    assert list(options) == list(defaults), set(options) ^ set(defaults)
    for name, spec in options.items():
        assert spec.get("type") in {"str", "int", "bool", "list", "dict", "path", "float"}, name
        assert spec.get("description"), name
        assert spec.get("default") == defaults[name], name
        if spec.get("choices"):
            assert defaults[name] in spec["choices"], name


# Secrets of the role's own beside the settings' ones, and why.
ROLE_SECRETS = {
    "pve_datastore_exporter_database_url": "a PostgreSQL URL holds the database's password",
    "pve_datastore_exporter_tls_key": "the TLS private key",
    "pve_datastore_exporter_basic_auth_users": "the basic-auth passwords",
    "pve_datastore_exporter_api_password": "the password the defaults step logs in with",
}
# Templates that hold secrets: a task writing one must be no_log.
SECRET_TEMPLATES = ("exporter.env.j2", "web-config.yml.j2")


def _without_no_log_module_options(task: dict) -> dict:
    """The task without the options its module hides itself (uri's url_password; datastore_defaults' whole
    call: its api_token and url_password are no_log in its argument spec)."""
    if "pvedx.datastore_exporter.datastore_defaults" in task:
        return {}
    args = task.get("ansible.builtin.uri")
    if isinstance(args, dict):
        return {**task, "ansible.builtin.uri": {k: v for k, v in args.items() if k != "url_password"}}
    return task


def test_secret_variables_are_no_log():
    """The settings' secrets and the role's own are marked no_log in the spec, and every task touching them
    (or writing a template that holds them) has no_log, unless only a module's own no_log option gets them."""
    secrets = {env_key_variable(s.env) for s in SETTINGS if s.secret} | set(ROLE_SECRETS)
    options = role_options()
    assert {n for n, s in options.items() if s.get("no_log")} == secrets
    assert all(spec.get("no_log") for name, spec in options["pve_datastore_exporter_basic_auth_users"]["options"].items()
               if name != "name")
    for path in (ROLE / "tasks").glob("*.yml"):
        for task in load_yaml(path) or []:
            text = repr(_without_no_log_module_options(task))
            touches = any(s in text for s in secrets) or any(name in text for name in SECRET_TEMPLATES)
            if touches:
                assert task.get("no_log") is True, f"{path.name}: {task['name']}"


# Where the role deliberately ships another default than the exporter, and why.
ROLE_OWN_DEFAULTS = {"DATABASE_URL": "the SQLite file lives in the unit's StateDirectory under /var/lib"}
SPEC_TYPES = {bool: {"bool"}, int: {"int"}, str: {"str", "path"}}


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.env)
def test_every_setting_is_a_role_variable_with_the_exporters_default(setting):
    """config.SETTINGS -> a role variable in defaults/main.yml and the spec: type, default, C(KEY), choices."""
    name, default = env_key_variable(setting.env), setting.parse(setting.default)
    defaults, spec = load_yaml(ROLE / "defaults" / "main.yml"), role_options().get(name)
    assert name in defaults and spec, f"{setting.env}: the role has no variable {name}"
    assert spec["type"] in SPEC_TYPES[type(default)], name
    assert f"C({setting.env})" in str(spec["description"]), name
    if setting.env in ROLE_OWN_DEFAULTS:
        assert defaults[name] != default, f"{name} now equals the exporter's default: drop it from ROLE_OWN_DEFAULTS"
    else:
        assert defaults[name] == default, name
    for choice in spec.get("choices", ()):
        assert setting.parse(str(choice)) == choice, f"{name}: the exporter refuses the choice {choice!r}"


# Settings the .env takes from a value the role derives, and why.
DERIVED_SETTINGS = {"EXPORTER_WEB_CONFIG_FILE": "__pve_datastore_exporter_web_config_file"}  # or the role's own file


def test_env_template_lists_every_setting():
    """Every setting of config.SETTINGS is a line of the .env template, from its role variable, in order."""
    template = (ROLE / "templates" / "exporter.env.j2").read_text()
    assert re.findall(r"\{\{ line\('([A-Z0-9_]+)', (\w+)\) \}\}", template) == \
        [(s.env, DERIVED_SETTINGS.get(s.env, env_key_variable(s.env))) for s in SETTINGS]


def test_readme_variables_table_is_generated_from_the_spec():
    """ansible/README.md's table is the one generated from the spec (UPDATE_GOLDEN=1 rewrites it)."""
    readme = COLLECTION / "README.md"
    text = readme.read_text()
    table = variables_table(role_options())
    start, end = text.index(BEGIN_TABLE) + len(BEGIN_TABLE), text.index(END_TABLE)
    if os.environ.get("UPDATE_GOLDEN"):
        readme.write_text(text[:start] + "\n" + table + "\n" + text[end:])
        return
    assert text[start:end].strip() == table


def test_readme_documents_least_privilege_token_and_plain_uri():
    """The README tells how to make the Proxmox token and how to set defaults without the collection."""
    text = (COLLECTION / "README.md").read_text()
    for needle in ("pveum role add", "Datastore.Audit,Sys.Audit", "PVEAuditor", "pveum user token add",
                   "--privsep 1", "pveum acl modify", "--tokens", "ansible.builtin.uri",
                   "/api/datastores/default", "hdd_datastore_id", "systemd-analyze security"):
        assert needle in text, needle


def test_collection_metadata():
    """galaxy.yml names the collection the playbooks are called by; runtime.yml says which Ansible."""
    galaxy = load_yaml(COLLECTION / "galaxy.yml")
    assert (galaxy["namespace"], galaxy["name"]) == ("pvedx", "datastore_exporter")
    assert "requires_ansible" in load_yaml(COLLECTION / "meta" / "runtime.yml")
    for name in ("README.md", "CHANGELOG.md", "LICENSE", "inventory.example.yml",
                 *(f"playbooks/{playbook}.yml" for playbook in PLAYBOOKS),
                 "inventory.ha.example.yml", "plugins/modules/datastore_defaults.py", "plugins/modules/datastore_info.py",
                 "plugins/lookup/default_datastore.py", "plugins/module_utils/exporter_api.py",
                 "plugins/filter/bcrypt_hash.py"):
        assert (COLLECTION / name).is_file(), name


INVENTORIES = {"inventory.example.yml": ["monitoring1.example.org"],
               "inventory.ha.example.yml": ["monitoring1.example.org", "monitoring2.example.org"]}


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_example_inventory_uses_only_documented_variables(inventory):
    """Every pve_datastore_exporter_* variable in the example inventories exists in the spec."""
    text = (COLLECTION / inventory).read_text()
    used = set(re.findall(r"^\s*#?\s*(pve_datastore_exporter_\w+):", text, re.M))
    assert used and used <= set(role_options()), used - set(role_options())


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_example_inventory_parses(tmp_path, inventory):
    """ansible-inventory reads each example inventory and puts its hosts in the playbooks' group."""
    proc = subprocess.run([tool("ansible-inventory"), "-i", str(COLLECTION / inventory), "--list"],
                          env=ansible_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["pve_datastore_exporter"]["hosts"] == INVENTORIES[inventory]


# A Python warning as the interpreter prints it on stderr (warnings.formatwarning): "<file>:<line>:
# <Category>: <message>", then the source line, indented. Only the *DeprecationWarning categories are
# dropped: a dependency's notice about its own future (cryptography 51's CryptographyDeprecationWarning
# for DSA, printed when ansible-core imports its ssh agent code; it subclasses UserWarning, so
# PYTHONWARNINGS=ignore::DeprecationWarning would not hide it, and naming its class in PYTHONWARNINGS
# would import cryptography into every Python the tool starts). Filtering the text keeps the check on
# what the tool itself says: Ansible's "[WARNING]: ...", "[DEPRECATION WARNING]: ..." and "[ERROR]: ..."
# lines, tracebacks and any other Python warning still fail it.
PYTHON_DEPRECATION = re.compile(r"^\S[^\n]*?:\d+: \w*DeprecationWarning: .*\n(?:[ \t]+.*(?:\n|$))*", re.M)


def tool_stderr(text: str) -> str:
    """An ansible-* tool's stderr without the Python deprecation warnings its imports printed."""
    return PYTHON_DEPRECATION.sub("", text).strip()


# ansible-doc's stderr under cryptography 51 for a plugin it cannot find (trimmed paths).
CAPTURED_STDERR = """\
/venv/lib/python3.12/site-packages/ansible/_internal/_ssh/_ssh_agent.py:18: CryptographyDeprecationWarning: \
DSA is deprecated and support will be removed in a future release. Use a more modern signature algorithm.
  from cryptography.hazmat.primitives.asymmetric.dsa import (
[WARNING]: Error loading plugin 'nonexist.ent.thing': No module named 'ansible_collections.nonexist'
[WARNING]: nonexist.ent.thing was not found
/venv/lib/python3.12/site-packages/some/module.py:7: UserWarning: something else
  warnings.warn("something else")
"""


def test_tool_stderr_drops_only_python_deprecation_warnings():
    """The filter takes the dependency's deprecation notice away and keeps Ansible's warnings and the rest."""
    assert tool_stderr(CAPTURED_STDERR).splitlines() == [
        "[WARNING]: Error loading plugin 'nonexist.ent.thing': No module named 'ansible_collections.nonexist'",
        "[WARNING]: nonexist.ent.thing was not found",
        "/venv/lib/python3.12/site-packages/some/module.py:7: UserWarning: something else",
        '  warnings.warn("something else")']
    assert tool_stderr(CAPTURED_STDERR.split("[WARNING]")[0]) == ""


def _plugin_doc(tmp_path, kind: str, name: str) -> dict:
    """ansible-doc --json of one of the collection's plugins; it must print no warning."""
    proc = subprocess.run([tool("ansible-doc"), "-t", kind, "--json", f"pvedx.datastore_exporter.{name}"],
                          env=ansible_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and not tool_stderr(proc.stderr), proc.stdout[-2000:] + proc.stderr
    return json.loads(proc.stdout)[f"pvedx.datastore_exporter.{name}"]


@pytest.mark.parametrize("kind,name", PLUGINS, ids=[name for _, name in PLUGINS])
def test_ansible_doc_is_clean(tmp_path, kind, name):
    """ansible-doc renders each plugin without a warning; its docs, examples and return values are there."""
    doc = _plugin_doc(tmp_path, kind, name)
    assert doc["doc"]["short_description"] and doc["doc"]["options"]
    examples = tmp_path / "examples.yml"
    examples.write_text(doc["examples"])
    assert load_yaml(examples), "EXAMPLES must be YAML with at least one task"
    assert doc["return"]
    proc = subprocess.run([tool("ansible-doc"), "-t", kind, f"pvedx.datastore_exporter.{name}"],
                          env=ansible_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and not tool_stderr(proc.stderr), proc.stderr
    assert "EXAMPLES:" in proc.stdout and "RETURN VALUES:" in proc.stdout


@pytest.mark.parametrize("kind,name", READING_PLUGINS, ids=[name for _, name in READING_PLUGINS])
def test_readme_documents_every_option_of_the_reading_plugins(tmp_path, kind, name):
    """ansible/README.md has a section per reading plugin naming every option ansible-doc lists."""
    text = (COLLECTION / "README.md").read_text()
    match = re.search(rf"^### .*`pvedx\.datastore_exporter\.{name}`.*?(?=^##)", text, re.M | re.S)
    assert match, f"no ### section for {name} in ansible/README.md"
    options = set(_plugin_doc(tmp_path, kind, name)["doc"]["options"]) - {"_terms"}
    assert {option for option in options if f"`{option}`" not in match.group(0)} == set()


def test_the_lock_keeps_the_ranges_of_requirements_test():
    """requirements/ansible.txt, which .venv-ansible installs from, pins a version inside every range of
    ansible/requirements-test.txt: a range changed without `make lock` fails here."""
    pins = dict(re.findall(r"^([A-Za-z0-9][\w.-]*)==(\S+)", (ROOT / "requirements" / "ansible.txt").read_text(), re.M))
    pins = {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in pins.items()}
    lines = (COLLECTION / "requirements-test.txt").read_text().splitlines()
    ranges = [Requirement(line.split("#")[0]) for line in lines if line.split("#")[0].strip()]
    assert ranges
    for wanted in ranges:
        pinned = pins.get(re.sub(r"[-_.]+", "-", wanted.name).lower())
        assert pinned and wanted.specifier.contains(pinned), f"{wanted}: the lock has {pinned}; run `make lock`"


def test_sanity_ignores_only_the_license_header():
    """The sanity ignore file waives nothing but the GPLv3 header check (the collection is MIT)."""
    lines = [line for line in (COLLECTION / "tests" / "sanity" / "ignore-2.20.txt").read_text().splitlines() if line.strip()]
    assert lines and all(line.split()[1] == "validate-modules:missing-gplv3-license" for line in lines), lines
