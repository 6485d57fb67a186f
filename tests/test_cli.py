"""The command line as an operator runs it: real processes, a real SQLite file, the simulator."""

import contextlib
import json
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import requests

from pve_datastore_exporter.cli import parser
from pve_datastore_exporter.simulator import Simulator
from tools.processes import BIN, free_port, terminate

from .factories import SEED_SCHEMA


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    s = Simulator(nodes=3, datastores=6, random_seed=3, state_dir=str(tmp_path_factory.mktemp("certs")),
                  auth_delay=0.05, drift=False)
    s.start()
    yield s
    s.stop()


def run(tmp_path, env, *args, timeout=60):
    (tmp_path / ".env").touch()
    full = {"PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite", **env}
    return subprocess.run([str(BIN), "--env-file", str(tmp_path / ".env"), *args], env=full, capture_output=True,
                          text=True, timeout=timeout, cwd=tmp_path)


def test_version():
    done = subprocess.run([str(BIN), "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("pve-datastore-exporter ")


def test_wrong_setting_stops_with_one_line_naming_it(tmp_path):
    done = run(tmp_path, {"PROXMOX_HOST": "pve1", "PROXMOX_PORT": "eighty"}, "serve")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "configuration error: PROXMOX_PORT: invalid value 'eighty'; expected a whole number from 1 to 65535"]


def test_check_config_masks_secrets_and_reads_env_file(tmp_path, sim):
    env = sim.env()
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()) + "EXPORTER_API_TOKEN=tok-s3cret\n")
    done = run(tmp_path, {}, "check-config")
    assert done.returncode == 0, done.stderr
    assert env["PROXMOX_TOKEN_VALUE"] not in done.stdout and "tok-s3cret" not in done.stdout
    assert "PROXMOX_TOKEN_VALUE" in done.stdout and "***" in done.stdout and env["PROXMOX_HOST"] in done.stdout


def test_refresh_list_and_set_default(tmp_path, sim):
    env = sim.env()
    done = run(tmp_path, env, "refresh")
    assert done.returncode == 0 and done.stdout.strip() == "refreshed 5 datastores", done.stderr
    done = run(tmp_path, env, "set-default", "--hdd", "ceph-vm")
    assert done.returncode == 0 and "default HDD: ceph-vm" in done.stdout
    done = run(tmp_path, env, "set-default", "--ssd", "no-such")
    assert done.returncode == 1 and "no-such" in done.stderr
    listing = run(tmp_path, env, "list").stdout.splitlines()
    assert listing[0].split()[:4] == ["Name", "Type", "Status", "Total"]
    rows = {line.split()[0]: line for line in listing[1:-1]}
    assert sorted(rows) == ["ceph-vm", "local", "local-lvm", "nas-backup", "tank"]
    assert rows["ceph-vm"].rstrip().endswith("hdd") and rows["local"].rstrip().endswith("ssd")
    assert listing[-1] == "default HDD: ceph-vm  default SSD: local  (source: db)"


def test_init_db_upgrades_a_seed_database_in_place(tmp_path):
    db = tmp_path / "db.sqlite"
    with sqlite3.connect(db) as conn:
        conn.executescript(SEED_SCHEMA)
        conn.execute("INSERT INTO datastores (id, name, type, size, is_default_hdd) VALUES ('HDD-Storage', 'HDD-Storage', 'lvm', 42, 1)")
    done = run(tmp_path, {}, "init-db")
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT id, size, is_default_hdd, enabled FROM datastores").fetchall() == [("HDD-Storage", 42, 1, 1)]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"datastores", "datastore_nodes", "refresh_state"} <= tables


def test_demo_answers_within_60_seconds(tmp_path):
    port = free_port()
    proc = subprocess.Popen([str(BIN), "demo", "--listen", f"127.0.0.1:{port}", "--state-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, body = time.monotonic() + 60, None
        # A GET while the first refresh runs answers at once, empty: wait for the refresh's data.
        while time.monotonic() < deadline and not (body and body["datastores"]):
            try:
                body = requests.get(f"http://127.0.0.1:{port}/api/datastores", timeout=2).json()
            except requests.RequestException:
                pass
            time.sleep(0.2)
        assert body and len(body["datastores"]) == 5 and body["source"] == "db"
        assert 'pve_datastore_up 1.0' in requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        # The per-node reads follow within seconds: a degraded pool, a thin pool near its metadata limit, a worn SSD.
        while time.monotonic() < deadline and not (body.get("disk_risks") and body.get("node_reads")
                                                  and len({r["read"] for r in body["node_reads"]}) == 3):
            body = requests.get(f"http://127.0.0.1:{port}/api/datastores", timeout=2).json()
            time.sleep(0.2)
        risks = {d["id"]: d["risks"] for d in body["datastores"]}
        assert any("metadata on pve1 is 93.0 % full" in r for r in risks["local-lvm"]), risks
        assert any("tank on pve2 is DEGRADED" in r for r in risks["tank"]), risks
        assert any("/dev/sda on pve3" in r and "6.0 % of its life left" in r for r in body["disk_risks"])
        assert body["datastores"][0]["provisioned"] is not None  # the demo's token sees guests' volumes
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    assert f"http://127.0.0.1:{port}/metrics" in out


def test_a_named_env_file_that_does_not_exist_is_an_error(tmp_path):
    done = subprocess.run([str(BIN), "--env-file", str(tmp_path / "missing.env"), "check-config"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and done.stderr.strip() == f"configuration error: --env-file: {tmp_path}/missing.env does not exist"


def test_database_password_is_a_secret(tmp_path):
    url = "postgresql://exporter:pg-s3cret-pw@127.0.0.1:1/pvedx"
    done = run(tmp_path, {"DATABASE_URL": url, "PROXMOX_HOST": "pve1", "PROXMOX_USER": "m@pve",
                          "PROXMOX_PASSWORD": "x-pass"}, "check-config")
    assert "pg-s3cret-pw" not in done.stdout + done.stderr
    assert "postgresql://exporter:***@127.0.0.1:1/pvedx" in done.stdout


def test_log_lines_and_tracebacks_are_scrubbed_of_secrets():
    import io
    import logging

    from pve_datastore_exporter.logs import SecretFilter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(SecretFilter(("tok-s3cret",)))
    logger = logging.getLogger("scrub-probe")
    logger.addHandler(handler)
    try:
        raise RuntimeError("connect failed with token tok-s3cret")
    except RuntimeError:
        logger.exception("refresh crashed for %s", "tok-s3cret")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "tok-s3cret" not in text and text.count("***") >= 2 and "RuntimeError" in text


def test_a_listen_address_in_use_is_one_line(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run(tmp_path, {"PROXMOX_HOST": "127.0.0.1:1", "PROXMOX_USER": "m@pve", "PROXMOX_PASSWORD": "x",
                              "EXPORTER_LISTEN_ADDRESS": f"127.0.0.1:{port}"}, "serve", timeout=30)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"configuration error: EXPORTER_LISTEN_ADDRESS: cannot listen on 127.0.0.1:{port}")


def test_serving_imports_no_simulator_module(tmp_path, sim):
    # The layout's promise: a production `serve` loads the product alone (the simulator is a neighbour).
    port = free_port()
    env = {**sim.env(), "PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
           "EXPORTER_LISTEN_ADDRESS": f"127.0.0.1:{port}"}
    python = BIN.parent / "python"
    proc = subprocess.Popen([str(python), "-X", "importtime", "-m", "pve_datastore_exporter", "--env-file",
                             "/dev/null", "serve"], env=env, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        deadline, body = time.monotonic() + 60, None
        while time.monotonic() < deadline and not (body and body["datastores"]):
            try:  # after the first refresh the page, the API and the reader are all loaded
                body = requests.get(f"http://127.0.0.1:{port}/api/datastores", timeout=5).json()
            except requests.RequestException:
                pass
            time.sleep(0.2)
        assert body and len(body["datastores"]) == 5
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
        mapped = Path(f"/proc/{proc.pid}/maps").read_text()
    finally:
        proc.terminate()
        _, imports = proc.communicate(timeout=15)
    loaded = [line.rsplit("|", 1)[-1].strip() for line in imports.splitlines() if "|" in line]
    assert "pve_datastore_exporter.http.app" in loaded and "pve_datastore_exporter.proxmox" in loaded
    assert [m for m in loaded if "simulator" in m or m.startswith("tools")] == []
    # Doors this configuration does not use stay shut (SQLite, no web config; requests' charset
    # detection, which Proxmox's UTF-8 JSON never needs): their native code is
    # never mapped (-X importtime would list peewee's failed attempt at psycopg2 too).
    assert [lib for lib in ("_psycopg", "libpq", "_yaml", "_bcrypt", "charset_normalizer") if lib in mapped] == []
    assert "/_sqlite3." in mapped  # the control: the check sees a library that is loaded



def test_simulate_serves_until_terminated_and_prints_the_settings(tmp_path):
    port = free_port()
    proc = subprocess.Popen([str(BIN), "simulate", "--listen", f"127.0.0.1:{port}", "--state-dir", str(tmp_path),
                             "--random-seed", "7", "--no-drift"], stdout=subprocess.PIPE, text=True)
    try:
        settings = {}
        while "PROXMOX_CA_BUNDLE" not in settings:  # printed once the simulator listens
            line = proc.stdout.readline()
            assert line, "simulate ended before printing its settings"
            if "=" in line and not line.startswith("#"):
                settings.update([line.strip().split("=", 1)])
        assert settings["PROXMOX_HOST"] == f"127.0.0.1:{port}"
        stats = requests.get(f"https://127.0.0.1:{port}/_sim/stats", verify=settings["PROXMOX_CA_BUNDLE"], timeout=5)
        assert stats.json()["requests"] == 0
    finally:
        proc.terminate()
        proc.communicate(timeout=15)
    assert proc.returncode == 0


# Global options where people type them: before or after the sub-command, each order alike.

COMMANDS = ("serve", "demo", "refresh", "list", "set-default", "init-db", "check-config", "simulate")


def write_env(path, settings: dict) -> str:
    path.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    return str(path)


def bare(tmp_path, *argv: str) -> subprocess.CompletedProcess:
    """The command with an empty environment, in a folder without .env unless the test writes one."""
    return subprocess.run([str(BIN), *argv], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)


def either_order(env_file: str, command: str, *rest: str) -> list[list[str]]:
    """The same command line with --env-file before and after the sub-command."""
    return [["--env-file", env_file, command, *rest], [command, "--env-file", env_file, *rest]]


@contextlib.contextmanager
def serving(tmp_path, port: int, *argv: str):
    """`pve-datastore-exporter *argv` as a real process, once it answers /healthz; stopped after, exit 0."""
    log = tmp_path / f"serve-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(BIN), *argv], env={"PATH": "/usr/bin:/bin"}, stdout=out,
                                stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            deadline, url = time.monotonic() + 30, f"http://127.0.0.1:{port}"
            while not _answers(url + "/healthz"):
                assert proc.poll() is None, f"serve exited {proc.returncode}: {log.read_text()}"
                assert time.monotonic() < deadline, f"serve did not answer /healthz: {log.read_text()}"
                time.sleep(0.1)
            yield url
        finally:
            code = terminate(proc)
    assert code == 0, log.read_text()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).ok
    except requests.RequestException:
        return False


@pytest.mark.parametrize("command", COMMANDS)
def test_global_options_parse_before_or_after_every_command_and_keep_their_defaults(command):
    # A sub-parser writes its defaults over what the main parser parsed: the value given first must survive.
    for argv in either_order("x.env", command):
        assert parser().parse_args(argv).env_file == "x.env", argv
    assert parser().parse_args([command]).env_file is None
    assert parser().parse_args([]).env_file is None and parser().parse_args(["--env-file", "y.env"]).env_file == "y.env"
    assert parser().parse_args(["--env-file", "a.env", command, "--env-file", "b.env"]).env_file == "b.env"


def test_help_describes_the_program_to_its_users(capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert "Proxmox VE" in out and "/metrics" in out and "wiring" not in out


@pytest.mark.parametrize("command", COMMANDS)
def test_a_commands_help_lists_the_global_options_once(command, capsys):
    with pytest.raises(SystemExit) as done:
        parser().parse_args([command, "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and "==SUPPRESS==" not in out
    options = [line.split()[0] for line in out.split("options:", 1)[1].splitlines() if line.startswith("  -")]
    assert options.count("--env-file") == 1 and options.count("--version") == 1, out


@pytest.mark.parametrize("where", ["before", "after"])
def test_serve_reads_the_env_file_given_before_or_after_it(tmp_path, sim, where):
    port = free_port()
    env_file = write_env(tmp_path / "x.env", {**sim.env(), "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
                                              "EXPORTER_LISTEN_ADDRESS": f"127.0.0.1:{port}"})
    argv = either_order(env_file, "serve")[where == "after"]
    with serving(tmp_path, port, *argv) as url:  # no ./.env and an empty environment: only x.env can say where
        assert requests.get(url + "/healthz", timeout=5).json()["success"] is True


def test_list_and_check_config_read_the_env_file_given_before_or_after_them(tmp_path, sim):
    env_file = write_env(tmp_path / "x.env", {**sim.env(), "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite"})
    shown = {}
    for command in ("check-config", "list"):
        for argv in either_order(env_file, command):
            done = bare(tmp_path, *argv)
            assert done.returncode == 0, (argv, done.stderr)
            shown.setdefault(command, done.stdout)
            assert done.stdout == shown[command], argv
    assert sim.env()["PROXMOX_HOST"] in shown["check-config"] and f"{tmp_path}/db.sqlite" in shown["check-config"]
    assert shown["list"].splitlines()[0].startswith("Name") and "ceph-vm" in shown["list"]


def test_an_omitted_env_file_is_the_dot_env_of_the_working_directory(tmp_path, sim):
    write_env(tmp_path / ".env", {**sim.env(), "EXPORTER_LOG_LEVEL": "WARNING"})
    done = bare(tmp_path, "check-config")
    assert done.returncode == 0, done.stderr
    settings = {line.split()[0]: line.split()[1] for line in done.stdout.splitlines()}
    assert settings["PROXMOX_HOST"] == sim.env()["PROXMOX_HOST"] and settings["EXPORTER_LOG_LEVEL"] == "WARNING"


def test_version_after_a_command_is_the_same_line(tmp_path):
    before = bare(tmp_path, "--version")
    assert before.returncode == 0 and before.stdout.startswith("pve-datastore-exporter ")
    for command in ("serve", "list", "simulate"):
        after = bare(tmp_path, command, "--version")
        assert (after.returncode, after.stdout) == (0, before.stdout), command


def test_list_json_is_the_apis_answer_for_the_same_database(tmp_path, sim):
    port = free_port()
    env_file = write_env(tmp_path / "x.env", {**sim.env(), "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
                                              "EXPORTER_LISTEN_ADDRESS": f"127.0.0.1:{port}",
                                              "EXPORTER_REFRESH_INTERVAL": "0"})
    assert bare(tmp_path, "refresh", "--env-file", env_file).returncode == 0
    assert bare(tmp_path, "set-default", "--env-file", env_file, "--hdd", "ceph-vm").returncode == 0
    done = bare(tmp_path, "list", "--env-file", env_file, "--json")
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout  # no colours: the bytes are JSON and nothing else
    listed = json.loads(done.stdout)
    with serving(tmp_path, port, "serve", "--env-file", env_file) as url:
        answer = requests.get(url + "/api/datastores", timeout=10).json()
    for body in (listed, answer):  # the data's age grows between the two reads
        assert body["last_refresh"].pop("age_seconds") >= 0
    assert listed == answer
    assert len(listed["datastores"]) == 5 and listed["default_hdd"] == "ceph-vm" and listed["success"] is True


LIST_JSON_WITHOUT_FLASK = """
import sys
from pve_datastore_exporter.cli import main
code = main(sys.argv[1:])
loaded = ["flask" in sys.modules, "werkzeug" in sys.modules]
import pve_datastore_exporter.http.app  # the control: the same check sees Flask once the app is imported
print(code, *loaded, "flask" in sys.modules, file=sys.stderr)
"""


def test_list_json_runs_without_flask(tmp_path, sim):
    env_file = write_env(tmp_path / "x.env", {**sim.env(), "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite"})
    assert bare(tmp_path, "refresh", "--env-file", env_file).returncode == 0
    done = subprocess.run([str(BIN.parent / "python"), "-c", LIST_JSON_WITHOUT_FLASK, "list", "--env-file", env_file,
                           "--json"], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1] == "0 False False True"
    assert len(json.loads(done.stdout)["datastores"]) == 5


@pytest.mark.parametrize("url,password", [("postgresql://exporter:Db@Secret99@127.0.0.1:1/pve", "Secret99"),
                                          ("postgresql://exporter@127.0.0.1:1/pve?password=QueryS3cretPw",
                                           "QueryS3cretPw"),
                                          ("postgresql://exporter:Sl/ashPw9@127.0.0.1:1/pve", "ashPw9")])
def test_check_config_never_prints_a_database_password(tmp_path, url, password):
    done = run(tmp_path, {"DATABASE_URL": url, "PROXMOX_HOST": "pve1", "PROXMOX_USER": "m@pve",
                          "PROXMOX_PASSWORD": "x-pass"}, "check-config")
    assert "DATABASE_URL" in done.stdout + done.stderr  # it said something about the URL
    assert password not in done.stdout + done.stderr


WITHOUT = """
import sys
sys.modules[sys.argv[1]] = None  # as if it were not installed: importing it raises ImportError
from pve_datastore_exporter.cli import main
sys.exit(main(sys.argv[2:]))
"""
# A bcrypt hash of "pw" (cost 4): the web config only parses it.
USERS = "basic_auth_users:\n  alice: $2b$04$wcy8NPC6nwbJNGJNChc/oeRb4M/JXPvRKAzJR/PIfH0JZG8PTWSgO\n"


@pytest.mark.parametrize("missing,web_config,expected", [
    ("babel", None, "configuration error: Babel is not installed"),
    ("yaml", "", "configuration error: web config {path}: PyYAML cannot be loaded"),
    ("bcrypt", USERS, "configuration error: basic_auth_users in the web config needs bcrypt, which cannot be loaded"),
])
def test_a_door_imported_at_first_use_that_cannot_load_stops_the_start_in_one_line(tmp_path, missing, web_config,
                                                                                      expected):
    # Babel, PyYAML and bcrypt are imported only when needed; their absence must still show at start,
    # never as a 500 at the first Korean request or the first login.
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite", "PROXMOX_HOST": "127.0.0.1:1",
           "PROXMOX_USER": "m@pve", "PROXMOX_PASSWORD": "x", "EXPORTER_LISTEN_ADDRESS": f"127.0.0.1:{port}"}
    path = tmp_path / "web.yml"
    if web_config is not None:
        path.write_text(web_config)
        env["EXPORTER_WEB_CONFIG_FILE"] = str(path)
    done = subprocess.run([str(BIN.parent / "python"), "-c", WITHOUT, missing, "--env-file", "/dev/null", "serve"],
                          env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(expected.format(path=path)), done.stderr
    assert "Traceback" not in done.stderr


BABEL_WHEN_NEEDED = """
import sys
from pve_datastore_exporter import i18n
print(i18n.translate("en", "Refresh"), "babel" in sys.modules)
print(i18n.translate("ko", "Refresh"), "babel" in sys.modules)
"""


def test_babel_is_loaded_by_the_first_korean_answer_not_by_english_ones():
    done = subprocess.run([str(BIN.parent / "python"), "-c", BABEL_WHEN_NEEDED], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.splitlines() == ["Refresh False", "새로고침 True"], done.stderr
