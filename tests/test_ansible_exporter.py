"""datastore_defaults and the set_defaults playbook against a real exporter and the simulated cluster."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.ansible_helpers import ROOT, assert_no_secrets, localhost_args, run_playbook, write_vars
from tests.needs import require_tool
from tools.processes import free_port

pytestmark = pytest.mark.slow
from pve_datastore_exporter import simulator  # noqa: E402

TOKEN = "pvedx-exporter-api-token-7f3a90"
PLAY = """\
- name: Set the exporter's defaults with the module
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Set the default datastores
      pvedx.datastore_exporter.datastore_defaults:
        url: "{{ url }}"
        api_token: "{{ token | default(omit) }}"
        hdd_datastore: "{{ hdd | default(omit) }}"
        ssd_datastore: "{{ ssd | default(omit) }}"
      register: result
      ignore_errors: true

    - name: Keep the result for the test
      ansible.builtin.copy:
        content: "{{ result | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
      check_mode: false
      changed_when: false
"""


def http_json(url: str, timeout: float = 5):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def wait_until(predicate, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, ValueError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def exporter(tmp_path_factory):
    """pve-datastore-exporter serve (a subprocess) against the simulated cluster: its base URL."""
    exe = require_tool(str(ROOT / ".venv" / "bin" / "pve-datastore-exporter"))
    base = tmp_path_factory.mktemp("exporter")
    sim = simulator.Simulator(nodes=3, datastores=6, random_seed=1, state_dir=base / "sim", drift=False)
    sim.start()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROXMOX_", "EXPORTER_"))}
    env.update(sim.env(), DATABASE_URL=f"sqlite:///{base}/exporter.db",
               EXPORTER_LISTEN_ADDRESS=f"127.0.0.1:{port}", EXPORTER_API_TOKEN=TOKEN,
               EXPORTER_REFRESH_INTERVAL="300")
    log = open(base / "exporter.log", "w")
    proc = subprocess.Popen([exe, "serve"], env=env, cwd=base, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_json(url + "/healthz")["status"] == "ok", what="exporter /healthz")
        wait_until(lambda: http_json(url + "/api/datastores")["datastores"], what="first refresh")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        sim.stop()


def defaults(url):
    body = http_json(url + "/api/datastores/default")
    return body["hdd_datastore"], body["ssd_datastore"]


def run_module_play(tmp_path: Path, url: str, *flags: str, **variables):
    """The module through ansible-playbook on localhost; returns (PlayResult, module result)."""
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    out = tmp_path / f"result-{time.monotonic_ns()}.json"
    extra = write_vars(tmp_path / f"vars-{out.stem}.json", dict(url=url, out=str(out), **variables))
    result = run_playbook(tmp_path, [*localhost_args(), "-e", extra, *flags, str(play)], timeout=120)
    assert result.rc == 0, result.output[-4000:]
    return result, json.loads(out.read_text())


def test_check_apply_and_idempotence(exporter, tmp_path):
    before = defaults(exporter)
    assert before == ("local-lvm", "local")

    play, module = run_module_play(tmp_path, exporter, "--check", "--diff",
                                   token=TOKEN, hdd="ceph-vm", ssd="tank")
    assert play.changed() == 1 and module["changed"] is True
    assert module["diff"]["after"] == {"hdd_datastore": "ceph-vm", "ssd_datastore": "tank"}
    assert '-    "hdd_datastore": "local-lvm",' in play.output and '+    "hdd_datastore": "ceph-vm",' in play.output
    assert defaults(exporter) == before, "check mode must not change the exporter"

    play, module = run_module_play(tmp_path, exporter, "--diff", token=TOKEN, hdd="ceph-vm", ssd="tank")
    assert play.changed() == 1 and module["changed"] is True, play.output[-3000:]
    assert module["previous"] == {"hdd_datastore": "local-lvm", "ssd_datastore": "local"}
    assert defaults(exporter) == ("ceph-vm", "tank")
    assert http_json(exporter + "/api/datastores/default")["source"] == "db"

    play, module = run_module_play(tmp_path, exporter, token=TOKEN, hdd="ceph-vm", ssd="tank")
    assert play.changed() == 0 and module["changed"] is False
    play, module = run_module_play(tmp_path, exporter, "--check", token=TOKEN, hdd="ceph-vm")
    assert play.changed() == 0
    assert_no_secrets(play.output, (TOKEN,))


def test_unknown_datastore_fails_with_the_exporters_message(exporter, tmp_path):
    before = defaults(exporter)
    play, module = run_module_play(tmp_path, exporter, token=TOKEN, hdd="no-such-store")
    assert module["failed"] is True and play.stats()["ignored"] == 1
    assert module["error"] == "unknown_datastore"
    assert "no-such-store" in module["msg"] and module["msg"].startswith("unknown datastore: ")
    assert defaults(exporter) == before
    assert_no_secrets(play.output, (TOKEN,))


def test_wrong_token_is_rejected_and_changes_nothing(exporter, tmp_path):
    before = defaults(exporter)
    wanted = "local" if before[0] != "local" else "local-lvm"
    for token in ("not-the-token", None):
        variables = {"hdd": wanted, **({"token": token} if token else {})}
        play, module = run_module_play(tmp_path, exporter, **variables)
        assert module["failed"] is True and module["status"] == 401, module
        assert "rejected the API token" in module["msg"]
    assert defaults(exporter) == before


def test_unreachable_exporter(tmp_path):
    play, module = run_module_play(tmp_path, f"http://127.0.0.1:{free_port()}", hdd="local")
    assert module["failed"] is True and module["msg"].startswith("cannot reach the exporter")


def test_set_defaults_playbook(exporter, tmp_path):
    """The collection's set_defaults playbook (the role's defaults step) is idempotent too."""
    variables = {"pve_datastore_exporter_hosts": "localhost",
                 "pve_datastore_exporter_api_url": exporter,
                 "pve_datastore_exporter_api_token": TOKEN,
                 "pve_datastore_exporter_default_hdd_datastore": "local",
                 "pve_datastore_exporter_default_ssd_datastore": "ceph-vm"}
    args = [*localhost_args(), "-e", write_vars(tmp_path / "v.json", variables),
            "pvedx.datastore_exporter.set_defaults"]
    check = run_playbook(tmp_path, [*args, "--check"])
    assert check.rc == 0 and check.changed() == 1, check.output[-4000:]
    first, second = run_playbook(tmp_path, args), run_playbook(tmp_path, args)
    assert first.rc == 0 and first.changed() == 1, first.output[-4000:]
    assert second.rc == 0 and second.changed() == 0, second.output[-4000:]
    assert defaults(exporter) == ("local", "ceph-vm")
    assert_no_secrets(check.output + first.output + second.output, (TOKEN,))
