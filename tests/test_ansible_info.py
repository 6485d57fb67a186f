"""datastore_info and the default_datastore lookup against real exporters over the simulated cluster.

Every plugin call of a scenario runs in one ansible-playbook (a loop per plugin), so a handful of
runs covers everything; the expectations are computed from the exporter's own GET /api/datastores.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import ssl
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pve_datastore_exporter.simulator import Simulator, ensure_certificates
from tests.ansible_helpers import (
    COLLECTION,
    assert_no_secrets,
    localhost_args,
    require_collection,
    run_playbook,
    write_vars,
)
from tools.processes import ExporterProcess, free_port

GIB, TIB = 1024**3, 1024**4
PROXY_USER, PROXY_PASSWORD, WRONG_PASSWORD = "ansible", "pvedx-proxy-password-2b9e41", "pvedx-wrong-password-77c0d3"
CLUSTER = "pve-sim"
INJECTED = "local-lvm,import-from=local:iso/evil.qcow2,cache=unsafe"  # disk options riding on an ID
NO_TRACEBACK = "(traceback unavailable)"
PLAY = """\
- name: datastore_info and default_datastore, one call per item
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Read the exporter with datastore_info
      pvedx.datastore_exporter.datastore_info:
        url: "{{ item.url }}"
        content: "{{ item.content | default(omit) }}"
        node: "{{ item.node | default(omit) }}"
        min_available: "{{ item.min_available | default(omit) }}"
        url_username: "{{ item.url_username | default(omit) }}"
        url_password: "{{ passwords[item.password] if item.password is defined else omit }}"
        validate_certs: "{{ item.validate_certs | default(omit) }}"
        ca_path: "{{ item.ca_path | default(omit) }}"
        timeout: "{{ item.timeout | default(omit) }}"
        max_thin_metadata: "{{ item.max_thin_metadata | default(omit) }}"
        healthy_pool: "{{ item.healthy_pool | default(omit) }}"
      loop: "{{ module_calls }}"
      loop_control:
        label: "{{ item.name }}"
      register: module_results
      ignore_errors: true

    - name: Look up default datastores
      ansible.builtin.debug:
        msg: >-
          {{ query('pvedx.datastore_exporter.default_datastore', *item.terms,
                   **(item.options | combine({'url_password': passwords[item.password]} if item.password is defined else {}))) }}
      loop: "{{ lookup_calls }}"
      loop_control:
        label: "{{ item.name }}"
      register: lookup_results
      ignore_errors: true

    - name: Keep the results for the test
      ansible.builtin.copy:
        content: "{{ {'module': module_results.results, 'lookup': lookup_results.results} | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
      check_mode: false
      changed_when: false
"""


def run_calls(base: Path, module_calls: list, lookup_calls: list, *flags: str):
    """All calls in one ansible-playbook run (-v); (PlayResult, {call name: its task result})."""
    out = base / "results.json"
    variables = {"module_calls": module_calls, "lookup_calls": lookup_calls, "out": str(out),
                 "passwords": {"right": PROXY_PASSWORD, "wrong": WRONG_PASSWORD}}
    (base / "play.yml").write_text(PLAY)
    play = run_playbook(base, [*localhost_args(), "-v", "-e", write_vars(base / "vars.json", variables), *flags,
                               str(base / "play.yml")], timeout=300)
    assert play.rc == 0, play.output[-4000:]
    data = json.loads(out.read_text())
    results = {r["item"]["name"]: r for r in data["module"] + data["lookup"]}
    assert len(results) == len(module_calls) + len(lookup_calls)
    return play, results


def by_id(api: dict, datastore_id: str) -> dict:
    return next(d for d in api["datastores"] if d["id"] == datastore_id)


def on_node(datastore: dict, node: str) -> dict | None:
    return next((n for n in datastore["nodes"] if n["node"] == node), None)


def expected_ids(api: dict, content=None, node=None, min_bytes=None) -> list[str]:
    """What the filters must keep, worked out from the API's answer."""
    kept = []
    for d in api["datastores"]:
        figures = on_node(d, node) if node else d
        if content and content not in d["content"].split(","):
            continue
        if figures is None or (min_bytes is not None and figures["available"] < min_bytes):
            continue
        kept.append(d["id"])
    return kept


def ids(result: dict) -> list[str]:
    return [d["id"] for d in result["datastores"]]


def timeless(result: dict) -> dict:
    """A module result without what changes with time (the data's age) and Ansible's bookkeeping."""
    keep = ("changed", "failed", "msg", "datastores", "default_hdd", "default_ssd", "source", "cluster", "status")
    refresh = {k: v for k, v in (result.get("refresh") or {}).items() if k != "age_seconds"}
    return {**{k: result.get(k) for k in keep}, "refresh": refresh}


def start_exporter(base: Path, env: dict) -> ExporterProcess:
    exporter = ExporterProcess(base, env).start()
    exporter.api()  # the seed's first call: fetch from Proxmox (or fail to) before any plugin reads
    return exporter


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    s = Simulator(nodes=3, datastores=6, random_seed=1, state_dir=str(tmp_path_factory.mktemp("sim")), drift=False)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def exporter(sim, tmp_path_factory):
    """`serve` over the simulated cluster; EXPORTER_REFRESH_INTERVAL=0 keeps its data still."""
    e = start_exporter(tmp_path_factory.mktemp("exporter"), sim.env())
    # The first per-node pools read follows the first refresh within seconds (then every 300 s): wait for
    # it, so that every plugin call sees the same answer.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len([r for r in e.api().get("node_reads", ()) if r["read"] == "pools"]) < 3:
        time.sleep(0.2)
    yield e
    e.stop()


# -- one run with every call against the exporter, one more in check mode ---------------------------


def main_calls(url: str, api: dict, dead: str) -> tuple[list, list]:
    """The calls of the main run, their thresholds taken from the API's figures; `dead` answers nothing."""
    middle = sorted(d["available"] for d in api["datastores"])[len(api["datastores"]) // 2]
    hdd, ssd = by_id(api, api["default_hdd"]), by_id(api, api["default_ssd"])
    hdd_pve1 = on_node(hdd, "pve1")["available"]
    module = [
        {"name": "all", "url": url},
        {"name": "images", "url": url + "/", "content": "images"},
        {"name": "gib", "url": url, "min_available": f"{middle // GIB}G"},
        {"name": "bytes_exact", "url": url, "min_available": middle},
        {"name": "bytes_above", "url": url, "min_available": middle + 1},
        {"name": "node", "url": url, "node": "pve1"},
        {"name": "node_images_roomy", "url": url, "node": "pve1", "content": "images", "min_available": hdd_pve1},
        {"name": "bad_size", "url": url, "min_available": "12 parsecs"},
        {"name": "unreachable", "url": dead, "timeout": 3},
        {"name": "wrong_path", "url": url + "/nope"},
        {"name": "thin_refused", "url": url, "max_thin_metadata": 0.001},
    ]
    lookup = [
        {"name": "hdd", "terms": ["hdd"], "options": {"url": url}},
        {"name": "ssd_and_hdd", "terms": ["ssd", "HDD"], "options": {"url": url, "max_age": 3600}},
        {"name": "ssd_exact_room", "terms": ["ssd"], "options": {"url": url, "min_available": ssd["available"]}},
        {"name": "ssd_too_small", "terms": ["ssd"], "options": {"url": url, "min_available": f"{ssd['available'] // GIB + 1}G"}},
        {"name": "hdd_pve1_fits", "terms": ["hdd"],
         "options": {"url": url, "node": "pve1", "content": "images", "min_available": hdd_pve1}},
        {"name": "hdd_pve1_too_small", "terms": ["hdd"], "options": {"url": url, "node": "pve1", "min_available": hdd_pve1 + 1}},
        {"name": "ssd_without_images", "terms": ["ssd"], "options": {"url": url, "content": "images"}},
        {"name": "not_on_node", "terms": ["hdd"], "options": {"url": url, "node": "pve9"}},
        {"name": "stale", "terms": ["hdd"], "options": {"url": url, "max_age": 0}},
        {"name": "bad_term", "terms": ["nvme"], "options": {"url": url}},
        {"name": "lookup_unreachable", "terms": ["ssd"], "options": {"url": dead, "timeout": 3}},
        {"name": "hdd_thin_metadata_over", "terms": ["hdd"], "options": {"url": url, "max_thin_metadata": 0.001}},
        {"name": "hdd_thin_metadata_fits", "terms": ["hdd"], "options": {"url": url, "node": "pve1", "max_thin_metadata": 0.99}},
        {"name": "hdd_overcommit_unknown", "terms": ["hdd"], "options": {"url": url, "max_overcommit": 2}},
    ]
    return module, lookup


CHECKED = ("all", "gib", "node_images_roomy", "unreachable")  # the calls run again in check mode


@pytest.fixture(scope="module")
def dead_url():
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def main_run(exporter, dead_url, tmp_path_factory):
    """(API before, PlayResult, results, API after) of the main run."""
    api = exporter.api()
    module, lookup = main_calls(exporter.url, api, dead_url)
    play, results = run_calls(tmp_path_factory.mktemp("main-run"), module, lookup)
    return api, play, results, exporter.api()


@pytest.fixture(scope="module")
def check_run(exporter, dead_url, tmp_path_factory):
    """Some of the main run's calls again, with --check: (PlayResult, results)."""
    module, lookup = main_calls(exporter.url, exporter.api(), dead_url)
    module = [call for call in module if call["name"] in CHECKED]
    return run_calls(tmp_path_factory.mktemp("check-run"), module, lookup[:1], "--check")


@pytest.mark.slow
def test_module_answer_equals_the_api(main_run):
    api, play, results, after = main_run
    result = results["all"]
    assert result["changed"] is False and not result.get("failed"), result
    assert result["datastores"] == api["datastores"] == after["datastores"]
    assert (result["default_hdd"], result["default_ssd"], result["source"]) == \
        (api["default_hdd"], api["default_ssd"], "db")
    assert ("cluster" in result, result.get("cluster")) == ("cluster" in api, api.get("cluster"))  # only when sent
    assert timeless(result)["refresh"] == {k: v for k, v in api["last_refresh"].items() if k != "age_seconds"}
    assert api["last_refresh"]["age_seconds"] <= result["last_refresh"] <= after["last_refresh"]["age_seconds"]
    assert play.changed() == 0


@pytest.mark.slow
def test_module_filters(main_run):
    api, _, results, _ = main_run
    everything = [d["id"] for d in api["datastores"]]
    middle = sorted(d["available"] for d in api["datastores"])[len(everything) // 2]
    hdd_pve1 = on_node(by_id(api, api["default_hdd"]), "pve1")["available"]
    expected = {
        "images": expected_ids(api, content="images"),
        "gib": expected_ids(api, min_bytes=middle // GIB * GIB),
        "bytes_exact": expected_ids(api, min_bytes=middle),
        "bytes_above": expected_ids(api, min_bytes=middle + 1),
        "node": expected_ids(api, node="pve1"),
        "node_images_roomy": expected_ids(api, content="images", node="pve1", min_bytes=hdd_pve1),
    }
    for name, kept in expected.items():
        assert ids(results[name]) == kept, name
        assert 0 < len(kept) < len(everything), f"{name} filters nothing on this cluster: a useless case"
        assert results[name]["datastores"] == [by_id(api, i) for i in kept]  # as the API sent them
    assert len(expected["bytes_exact"]) == len(expected["bytes_above"]) + 1  # ">=": exactly that much is enough


@pytest.mark.slow
def test_module_never_changes_and_check_mode_reports_the_same(main_run, check_run):
    _, play, results, _ = main_run
    check_play, check_results = check_run
    assert play.changed() == 0 and check_play.changed() == 0
    for name in CHECKED:
        assert not check_results[name].get("skipped"), f"{name}: the module must run in check mode"
        assert results[name]["changed"] is False
        assert timeless(check_results[name]) == timeless(results[name]), name
    assert all(r["changed"] is False for r in results.values() if "datastores" in r)


@pytest.mark.slow
def test_module_failures_are_clear(main_run, exporter):
    _, play, results, _ = main_run
    assert results["bad_size"]["failed"] and results["bad_size"]["msg"].startswith("min_available: '12 parsecs' is not a size")
    dead = results["unreachable"]
    assert dead["failed"] and dead["msg"].startswith(f"cannot reach the exporter (GET {dead['item']['url']}/api/datastores): ")
    wrong = results["wrong_path"]
    assert wrong["failed"] and (wrong["status"], wrong["error"]) == (404, "not_found")
    said = exporter.get("/nope/api/datastores").json()["message"]
    assert wrong["msg"] == f"the exporter answered HTTP 404 to GET {exporter.url}/nope/api/datastores: {said}"
    assert "Traceback" not in play.output
    for result in (results["bad_size"], dead, wrong):  # Ansible's filler when the failure had no exception
        assert result.get("exception", NO_TRACEBACK) == NO_TRACEBACK


@pytest.mark.slow
def test_lookup_returns_the_checked_defaults(main_run):
    api, _, results, _ = main_run
    hdd, ssd = api["default_hdd"], api["default_ssd"]
    assert results["hdd"]["msg"] == [hdd]
    assert results["ssd_and_hdd"]["msg"] == [ssd, hdd]
    assert results["ssd_exact_room"]["msg"] == [ssd]
    assert "images" in by_id(api, hdd)["content"].split(",")
    assert results["hdd_pve1_fits"]["msg"] == [hdd]


@pytest.mark.slow
def test_lookup_min_available_names_the_datastore_its_room_and_the_ask(main_run):
    api, _, results, _ = main_run
    ssd = by_id(api, api["default_ssd"])
    asked = f"{ssd['available'] // GIB + 1}G"
    msg = results["ssd_too_small"]["msg"]
    assert results["ssd_too_small"]["failed"]
    assert f"the default SSD datastore '{ssd['id']}' has " in msg and f"({ssd['available']} bytes) available" in msg
    assert f"({(ssd['available'] // GIB + 1) * GIB} bytes) asked for by min_available={asked}" in msg
    hdd_pve1 = on_node(by_id(api, api["default_hdd"]), "pve1")["available"]
    msg = results["hdd_pve1_too_small"]["msg"]
    assert f"'{api['default_hdd']}' has " in msg and f"({hdd_pve1} bytes) available on node pve1" in msg
    assert f"min_available={hdd_pve1 + 1}" in msg


@pytest.mark.slow
def test_lookup_refuses_a_default_that_does_not_fit(main_run):
    api, _, results, _ = main_run
    ssd = by_id(api, api["default_ssd"])
    assert "images" not in ssd["content"].split(",")  # the simulated default SSD holds no VM disks
    assert f"the default SSD datastore '{ssd['id']}' does not hold images (its content: {ssd['content']})" \
        in results["ssd_without_images"]["msg"]
    nodes = ", ".join(n["node"] for n in by_id(api, api["default_hdd"])["nodes"])
    assert f"the default HDD datastore '{api['default_hdd']}' is not on node pve9 (it is on {nodes})" \
        in results["not_on_node"]["msg"]
    assert "default_datastore takes hdd or ssd, got ['nvme']" in results["bad_term"]["msg"]
    for name in ("ssd_without_images", "not_on_node", "bad_term"):
        assert results[name]["failed"] is True, name


@pytest.mark.slow
def test_lookup_refuses_a_risky_default_with_a_sentence(main_run):
    api, _, results, _ = main_run
    hdd = by_id(api, api["default_hdd"])
    assert hdd["type"] == "lvmthin" and hdd["thin_metadata_fraction"] > 0.001  # the pools read ran
    msg = results["hdd_thin_metadata_over"]["msg"]
    assert results["hdd_thin_metadata_over"]["failed"] and (
        f"the default HDD datastore '{hdd['id']}' has its thin pool metadata {hdd['thin_metadata_fraction'] * 100:.1f} % "
        "full, over max_thin_metadata=0.001") in msg
    assert results["hdd_thin_metadata_fits"]["msg"] == [hdd["id"]]
    # The provisioned read is off: a limit that cannot be checked is a refusal, never a pass.
    assert f"'{hdd['id']}' has no provisioned figure" in results["hdd_overcommit_unknown"]["msg"]
    refused = {r["id"]: r["reasons"] for r in results["thin_refused"].get("refused", ())}
    assert not results["thin_refused"].get("failed"), results["thin_refused"]
    assert hdd["id"] in refused and hdd["id"] not in {d["id"] for d in results["thin_refused"]["datastores"]}
    assert "over max_thin_metadata=0.001" in refused[hdd["id"]][0]


@pytest.mark.slow
def test_lookup_max_age(main_run):
    api, _, results, _ = main_run
    msg = results["stale"]["msg"]
    assert results["stale"]["failed"] and "the exporter's data is " in msg
    assert f"(last successful refresh {api['last_refresh']['last_success']}), older than max_age=0.0 s" in msg
    assert results["ssd_and_hdd"]["msg"] == [api["default_ssd"], api["default_hdd"]]  # max_age=3600 passes


@pytest.mark.slow
def test_lookup_unreachable_exporter_is_a_clear_failure(main_run):
    _, play, results, _ = main_run
    result = results["lookup_unreachable"]
    url = result["item"]["options"]["url"]
    assert result["failed"] is True
    assert f"default_datastore' failed: cannot reach the exporter (GET {url}/api/datastores): " in result["msg"]
    assert "Connection refused" in result["msg"]
    assert "Traceback" not in play.output and result.get("exception", NO_TRACEBACK) == NO_TRACEBACK


# -- the .env fallback and an exporter that never read Proxmox ------------------------------------------


@pytest.fixture(scope="module")
def env_exporter(sim, tmp_path_factory):
    """An exporter whose database was replaced by garbage after a default was set: it answers from .env."""
    e = start_exporter(tmp_path_factory.mktemp("env-exporter"), sim.env())
    try:
        response = e.post("/api/datastores/default", json={"hdd_datastore_id": "ceph-vm"})  # loopback, no token
        assert response.status_code == 200, response.text
        for suffix in ("-wal", "-shm"):
            Path(f"{e.db}{suffix}").unlink(missing_ok=True)
        e.db.write_bytes(os.urandom(8192))
        yield e
    finally:
        e.stop()


@pytest.fixture(scope="module")
def cut_off_exporter(sim, tmp_path_factory):
    """An exporter whose Proxmox never answered: no data, no successful refresh."""
    env = {**sim.env(), "PROXMOX_HOST": f"127.0.0.1:{free_port()}", "PROXMOX_TIMEOUT": "2"}
    e = start_exporter(tmp_path_factory.mktemp("cut-off-exporter"), env)
    yield e
    e.stop()


@pytest.mark.slow
def test_env_fallback_fails_unless_allowed(env_exporter, cut_off_exporter, tmp_path):
    api = env_exporter.api()
    assert api["source"] == "env" and api["default_hdd"] != "ceph-vm"  # the DB's default is out of reach
    url, cut_off = env_exporter.url, cut_off_exporter.url
    # healthy_pool off: this exporter may not have read tank's zpool yet, and an unknown health is refused.
    module = [{"name": "env_info", "url": url, "healthy_pool": False}, {"name": "cut_off_info", "url": cut_off}]
    lookup = [
        {"name": "env_refused", "terms": ["hdd"], "options": {"url": url}},
        {"name": "env_allowed", "terms": ["hdd", "ssd"], "options": {"url": url, "allow_env_fallback": True}},
        {"name": "never_refreshed", "terms": ["hdd"],
         "options": {"url": cut_off, "allow_env_fallback": True, "max_age": 3600}},
    ]
    play, results = run_calls(tmp_path, module, lookup)
    info = results["env_info"]
    assert (info["source"], info["default_hdd"], info["default_ssd"]) == ("env", api["default_hdd"], api["default_ssd"])
    assert info["datastores"] == api["datastores"] and info["changed"] is False
    refused = results["env_refused"]
    assert refused["failed"] is True
    assert "the exporter answers from its .env fallback (source: env)" in refused["msg"]
    assert f"(HDD '{api['default_hdd']}', SSD '{api['default_ssd']}')" in refused["msg"]
    assert "pass allow_env_fallback=true to use them anyway" in refused["msg"]
    assert results["env_allowed"]["msg"] == [api["default_hdd"], api["default_ssd"]]
    cut = results["cut_off_info"]
    assert (cut["datastores"], cut["last_refresh"], cut["source"]) == ([], None, "env")
    assert cut["refresh"]["ok"] is False and cut["refresh"]["reason"] == "connection"
    never = results["never_refreshed"]
    assert never["failed"] is True
    assert "the exporter has never refreshed from Proxmox successfully, so max_age=3600.0 s cannot be met; " \
           "its last refresh failed: " in never["msg"]
    assert play.changed() == 0


# -- TLS and basic auth: a reverse proxy in front of the exporter, as nginx would be ---------------------


class Front:
    """HTTPS with basic auth, passing GETs to the exporter. Under /older it takes out the keys an older
    exporter did not send ("cluster", "role"), so the module is seen to invent none of them; under
    /hostile it answers a datastore ID that carries disk options, as a hostile exporter (or anything
    between, on plain http) could."""

    def __init__(self, backend: str, certs):
        self.backend, self.requests = backend, []
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs.cert, certs.key)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        # shutdown() waits for serve_forever's next poll: 0.5 s by default, paid once per test.
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def forward(self, path: str) -> tuple[int, bytes]:
        variant = path.split("/")[1] if path.split("/")[1] in ("older", "hostile") else ""
        path = path.removeprefix("/" + variant) if variant else path
        try:
            with urllib.request.urlopen(self.backend + path, timeout=10) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        if variant and status == 200 and path == "/api/datastores":
            body = json.loads(raw)
            if variant == "older":
                body = {key: value for key, value in body.items() if key not in ("cluster", "role")}
            else:
                body["default_ssd"] = body["datastores"][0]["id"] = INJECTED
            raw = json.dumps(body).encode()
        return status, raw

    def _handler(self):
        front = self
        wanted = "Basic " + base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                front.requests.append(self.path)
                headers = {"Content-Type": "application/json"}
                if self.headers.get("Authorization") != wanted:
                    status, headers["WWW-Authenticate"] = 401, 'Basic realm="exporter"'
                    raw = json.dumps({"success": False, "error": "unauthorized",
                                      "message": "Basic authentication required."}).encode()
                else:
                    status, raw = front.forward(self.path)
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(raw))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args):
                pass

        return Handler

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.slow
def test_tls_and_basic_auth_through_a_proxy(exporter, sim, tmp_path):
    certs = ensure_certificates(sim.state_dir)
    front = Front(exporter.url, certs)
    try:
        api = exporter.api()
        auth = {"url_username": PROXY_USER, "password": "right"}
        module = [
            {"name": "tls", "url": front.url, "ca_path": str(certs.ca), **auth},
            {"name": "tls_older", "url": front.url + "/older", "ca_path": str(certs.ca), **auth},
            {"name": "tls_hostile", "url": front.url + "/hostile", "ca_path": str(certs.ca), **auth},
            {"name": "tls_insecure", "url": front.url, "validate_certs": False, **auth},
            {"name": "tls_unverified", "url": front.url, **auth},
            {"name": "tls_wrong_password", "url": front.url, "ca_path": str(certs.ca), **auth, "password": "wrong"},
        ]
        lookup = [
            {"name": "l_tls", "terms": ["ssd"], "options": {"url": front.url, "ca_path": str(certs.ca),
                                                            "url_username": PROXY_USER}, "password": "right"},
            {"name": "l_tls_hostile", "terms": ["ssd"], "options": {"url": front.url + "/hostile", "ca_path": str(certs.ca),
                                                                    "url_username": PROXY_USER}, "password": "right"},
            {"name": "l_tls_no_credentials", "terms": ["ssd"], "options": {"url": front.url, "ca_path": str(certs.ca)}},
            {"name": "l_tls_wrong_password", "terms": ["ssd"],
             "options": {"url": front.url, "ca_path": str(certs.ca), "url_username": PROXY_USER}, "password": "wrong"},
            {"name": "l_tls_unverified", "terms": ["ssd"], "options": {"url": front.url, "url_username": PROXY_USER},
             "password": "right"},
        ]
        play, results = run_calls(tmp_path, module, lookup)
    finally:
        front.close()
    for name in ("tls", "tls_older", "tls_insecure"):
        assert results[name]["datastores"] == api["datastores"], results[name]
    assert (results["tls"]["cluster"], results["tls"]["role"]) == (api["cluster"], api["role"]) == (CLUSTER, "leader")
    assert "cluster" not in results["tls_older"] and "role" not in results["tls_older"]  # passed on, never made up
    for name in ("tls_hostile", "l_tls_hostile"):
        assert results[name]["failed"] is True and "is not a Proxmox datastore ID" in results[name]["msg"], name
        assert repr(INJECTED) in results[name]["msg"]
    for name in ("tls_unverified", "l_tls_unverified"):
        assert "cannot reach the exporter" in results[name]["msg"] and "CERTIFICATE_VERIFY_FAILED" in results[name]["msg"]
    for name in ("tls_wrong_password", "l_tls_no_credentials", "l_tls_wrong_password"):
        assert results[name]["failed"] is True
        assert f"the exporter refused the request (GET {front.url}/api/datastores, HTTP 401, unauthorized): " \
               "Basic authentication required.; check url_username and url_password" in results[name]["msg"], name
    assert results["l_tls"]["msg"] == [api["default_ssd"]]
    assert_no_secrets(play.output, (PROXY_PASSWORD, WRONG_PASSWORD))


# -- the example playbook -------------------------------------------------------------------------


@pytest.mark.slow
def test_example_playbook_puts_the_disk_on_the_default(exporter, tmp_path):
    """create_vm_on_default up to the VM itself (--tags datastore): the lookup as the example calls it."""
    require_collection("community.proxmox")
    api = exporter.api()
    variables = {"pvedx_exporter_url": exporter.url, "pvedx_vm_name": "web1", "pvedx_vm_node": "pve1",
                 "pvedx_vm_disk_class": "hdd"}
    play = run_playbook(tmp_path, [*localhost_args(), "-e", write_vars(tmp_path / "vars.json", variables),
                                   "--tags", "datastore", "pvedx.datastore_exporter.create_vm_on_default"])
    assert play.rc == 0, play.output[-4000:]
    assert f"web1: a 32 GiB disk on {api['default_hdd']} (the default HDD datastore) on node pve1" in play.output
    assert "TASK [Create the VM]" not in play.output and play.stats()["ok"] == 3


# -- the shared code on its own (plain Python, no Ansible needed) -----------------------------------------


@pytest.fixture(scope="module")
def exporter_api():
    path = COLLECTION / "plugins" / "module_utils" / "exporter_api.py"
    spec = importlib.util.spec_from_file_location("pvedx_exporter_api", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("given,size", [
    (0, 0), (107374182400, 107374182400), ("100", 100), ("100B", 100), ("1K", 1024), ("100G", 100 * GIB),
    ("100GiB", 100 * GIB), ("100GB", 100 * GIB), ("100g", 100 * GIB), (" 1.5T ", 3 * TIB // 2), ("1.5 TiB", 3 * TIB // 2),
    ("512MiB", 512 * 1024**2), ("2P", 2 * 1024**5), (".5G", GIB // 2), ("123456789012345678901", 123456789012345678901),
])
def test_parse_size(exporter_api, given, size):
    assert exporter_api.parse_size(given) == size


@pytest.mark.parametrize("given", ["", "G", "-1G", "1.5.1T", "12 parsecs", "1e3", "100Gb ", "100GIB B", True, -1, None])
def test_parse_size_refuses(exporter_api, given):
    with pytest.raises(ValueError):
        exporter_api.parse_size(given)


def test_format_size(exporter_api):
    assert exporter_api.format_size(603632984064) == "562.2 GiB (603632984064 bytes)"
    assert exporter_api.format_size(512) == "512 B (512 bytes)"


@pytest.mark.parametrize("status,raw,wanted", [
    (-1, b"", "cannot reach the exporter (GET u): refused"),
    (404, b'{"success": false, "error": "not_found", "message": "No such route."}',
     "the exporter answered HTTP 404 to GET u: No such route."),
    (502, b"<html>\n bad gateway\n</html>", "the exporter answered HTTP 502 to GET u: <html> bad gateway </html>"),
    (200, b"[]", "the exporter answered HTTP 200 to GET u: []"),
    (200, b'{"success": true}', "GET u answered without a datastore list: is it a pve-datastore-exporter?"),
    (403, b'{"success": false, "error": "forbidden", "message": "No."}',
     "the exporter refused the request (GET u, HTTP 403, forbidden): No.; check url_username and url_password"),
])
def test_read_datastores_says_what_went_wrong(exporter_api, status, raw, wanted):
    with pytest.raises(exporter_api.ExporterError) as caught:
        exporter_api.read_datastores("GET u", status, raw, "refused")
    assert str(caught.value) == wanted and caught.value.status == status


def test_read_datastores_and_refresh_age(exporter_api):
    body = {"success": True, "datastores": [], "last_refresh": {"age_seconds": 4.25}}
    assert exporter_api.read_datastores("GET u", 200, json.dumps(body).encode()) == body
    assert exporter_api.refresh_age(body) == 4.25
    assert exporter_api.refresh_age({"last_refresh": {"age_seconds": None}}) is None
    assert exporter_api.request_headers("a", "b")["Authorization"] == "Basic YTpi"
    assert "Authorization" not in exporter_api.request_headers()


# The risk options (issue 19): each refusal is a sentence naming the datastore, the figure and the limit.
RISKY = {"id": "local-lvm", "type": "lvmthin", "thin_metadata_fraction": 0.93, "provisioned": 1500, "overcommit": 1.5,
         "nodes": [{"node": "pve1", "size": 1000, "thin_metadata_size": 1000, "thin_metadata_used": 930, "provisioned": 1500},
                   {"node": "pve2", "size": 1000, "thin_metadata_size": 1000, "thin_metadata_used": None, "provisioned": None}]}
TANK = {"id": "tank", "type": "zfspool", "nodes": [{"node": "pve2", "zpool": "tank", "zpool_health": "DEGRADED"},
                                                   {"node": "pve3", "zpool": "tank", "zpool_health": "ONLINE"}]}
# Shared, read once on pve1 (an exporter before 1.2.x left the other nodes' entries null).
CEPH = {"id": "ceph-vm", "type": "rbd", "shared": True, "provisioned": 15000, "overcommit": 3.0,
        "nodes": [{"node": "pve1", "size": 5000, "provisioned": 15000}, {"node": "pve2", "size": 5000, "provisioned": None}]}
# A dir without images or rootdir: the exporter gives its nodes no provisioned key (the datastore's stays null).
ISO = {"id": "local", "type": "dir", "content": "iso,vztmpl,backup", "provisioned": None, "overcommit": None,
       "nodes": [{"node": "pve1", "size": 1000}]}
TANK_UNREAD = {"id": "tank", "type": "zfspool", "zpool_health": None,
               "nodes": [{"node": "pve2", "zpool": None, "zpool_health": None}]}


@pytest.mark.parametrize("datastore,node,options,wanted", [
    (RISKY, None, {"max_thin_metadata": 0.8},
     ["the default HDD datastore 'local-lvm' has its thin pool metadata 93.0 % full, over max_thin_metadata=0.8"]),
    (RISKY, "pve1", {"max_thin_metadata": 0.95}, []),
    (RISKY, "pve2", {"max_thin_metadata": 0.95},
     ["the default HDD datastore 'local-lvm' has no thin pool metadata figure on node pve2 (the exporter reads it every "
      "EXPORTER_POOLS_INTERVAL), so max_thin_metadata=0.95 cannot be checked"]),
    (RISKY, "pve1", {"max_overcommit": 1.2},
     ["the default HDD datastore 'local-lvm' has 1.50 times its size promised to guests' disks on node pve1, "
      "over max_overcommit=1.2"]),
    (RISKY, None, {"max_overcommit": 2}, []),
    (TANK, "pve2", {}, ["the default HDD datastore 'tank' lives on ZFS pool tank, which is DEGRADED on node pve2; "
                        "pass healthy_pool=false to use it anyway"]),
    (TANK, "pve3", {}, []),
    (TANK, None, {"healthy_pool": False}, []),
    ({"id": "local", "type": "dir", "nodes": []}, None, {"max_thin_metadata": 0.1, "max_overcommit": 0.1}, []),
    (CEPH, "pve2", {"max_overcommit": 3}, []),
    (CEPH, "pve2", {"max_overcommit": 2},
     ["the default HDD datastore 'ceph-vm' has 3.00 times its size promised to guests' disks on node pve2, "
      "over max_overcommit=2"]),
    (ISO, "pve1", {"max_overcommit": 1}, []),
    (ISO, None, {"max_overcommit": 1}, []),
    (TANK_UNREAD, "pve2", {}, ["the default HDD datastore 'tank' has no ZFS pool health figure on node pve2 (the exporter "
                               "reads it every EXPORTER_POOLS_INTERVAL), so healthy_pool cannot be checked; pass "
                               "healthy_pool=false to use it anyway"]),
    (TANK_UNREAD, None, {}, ["the default HDD datastore 'tank' has no ZFS pool health figure (the exporter reads it every "
                             "EXPORTER_POOLS_INTERVAL), so healthy_pool cannot be checked; pass healthy_pool=false to use "
                             "it anyway"]),
    (TANK_UNREAD, None, {"healthy_pool": False}, []),
])
def test_risk_refusals(exporter_api, datastore, node, options, wanted):
    assert exporter_api.risk_refusals(datastore, "default HDD datastore", node, **options) == wanted


@pytest.mark.parametrize("options", [{"max_thin_metadata": 1.5}, {"max_thin_metadata": -0.1}, {"max_overcommit": 0}])
def test_risk_limits_are_checked(exporter_api, options):
    with pytest.raises(ValueError):
        exporter_api.check_limits(**options)


@pytest.mark.parametrize("given", ["local", "local-lvm", "ceph_vm.2", "Zeta9"])
def test_check_datastore_id_takes_proxmox_ids(exporter_api, given):
    assert exporter_api.check_datastore_id(given, "x") == given


@pytest.mark.parametrize("given", [INJECTED, "local lvm", "lv:32", "-x", "x-", "a", "local\n", "ſtore", "", None, 7])
def test_check_datastore_id_refuses_anything_else_with_a_sentence(exporter_api, given):
    with pytest.raises(exporter_api.ExporterError, match=r"^default_hdd in the answer: .* is not a Proxmox datastore ID"):
        exporter_api.check_datastore_id(given, "default_hdd in the answer")
