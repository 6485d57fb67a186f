"""The simulated Proxmox VE API, over real HTTPS on loopback, through proxmoxer and requests.

The payload captures tests/data/sim_cluster_resources.json and tests/data/sim_storage.json come
from test_captured_payloads: a fresh 3x6 simulator (random seed 1, no drift, a fixed clock) answers
deterministically; regenerate them with `UPDATE_GOLDEN=1 pytest tests/test_simulator.py`.
"""

import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from proxmoxer import AuthenticationError, ProxmoxAPI, ResourceException

from pve_datastore_exporter.simulator import Simulator, ensure_certificates, parse_listen
from pve_datastore_exporter.simulator.api import PveApi
from pve_datastore_exporter.simulator.cluster import Cluster
from pve_datastore_exporter.simulator.model import SHARED, SimError
from pve_datastore_exporter.simulator.routes import resolve

AUTH_DELAY = 0.05
DATA = Path(__file__).parent / "data"
FIXED_TIME = 1_760_000_000.0


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now=FIXED_TIME):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    """One certificate set for the whole module (made once, then reused)."""
    return tmp_path_factory.mktemp("sim-state")


@pytest.fixture(scope="module")
def _shared_sim(state_dir):
    with Simulator(nodes=3, datastores=6, random_seed=1, state_dir=state_dir, auth_delay=AUTH_DELAY) as sim:
        yield sim


@pytest.fixture
def sim(_shared_sim):
    """The default 3x6 simulator; tests using it must not change the model."""
    yield _shared_sim
    _shared_sim.clear_faults()
    _shared_sim.reset_stats()


@pytest.fixture
def make_sim(state_dir):
    """A factory for private simulators (model changes, fake clocks), stopped afterwards."""
    started = []

    def make(**kwargs):
        kwargs.setdefault("state_dir", state_dir)
        kwargs.setdefault("auth_delay", AUTH_DELAY)
        started.append(Simulator(**kwargs).start())
        return started[-1]

    yield make
    for one in started:
        one.stop()


def token_api(sim, **kwargs):
    """proxmoxer with the simulator's token, verifying against its CA."""
    kwargs.setdefault("verify_ssl", sim.ca_file)
    return ProxmoxAPI("127.0.0.1", port=sim.port, user=sim.user, token_name=sim.token_name,
                      token_value=sim.token_value, **kwargs)


def token_header(sim):
    return {"Authorization": f"PVEAPIToken={sim.user}!{sim.token_name}={sim.token_value}"}


def get(sim, path, headers=None, **kwargs):
    """Plain requests GET below /api2/json with the token unless headers are given."""
    return requests.get(f"{sim.url}/api2/json{path}", headers=token_header(sim) if headers is None else headers,
                        verify=sim.ca_file, timeout=kwargs.pop("timeout", 5), **kwargs)


def by_key(rows, *keys):
    return {tuple(row[k] for k in keys) if len(keys) > 1 else row[keys[0]]: row for row in rows}


# -- TLS, envelope, headers -----------------------------------------------------------------


def test_certificate_is_made_once_and_reused(state_dir, sim):
    before = {p.name: p.stat().st_mtime_ns for p in ensure_certificates(state_dir)}
    after = {p.name: p.stat().st_mtime_ns for p in ensure_certificates(state_dir)}
    assert before == after and set(before) == {"ca.pem", "server.pem", "server.key"}
    assert sim.ca_file == str(state_dir / "ca.pem")
    with pytest.raises(requests.exceptions.SSLError):  # not trusted by the system store
        requests.get(f"{sim.url}/api2/json/version", timeout=5)


def test_certificate_is_remade_when_broken(tmp_path):
    paths = ensure_certificates(tmp_path)
    paths.cert.write_text("garbage")
    paths = ensure_certificates(tmp_path)
    context = ssl.create_default_context(cafile=str(paths.ca))
    context.load_cert_chain(paths.cert, paths.key)  # key matches the new certificate
    assert not (tmp_path / "ca.key").exists()


def test_env_points_at_the_simulator(sim):
    assert sim.env() == {"PROXMOX_HOST": f"127.0.0.1:{sim.port}", "PROXMOX_USER": "monitor@pve",
                         "PROXMOX_TOKEN_NAME": "exporter", "PROXMOX_TOKEN_VALUE": sim.token_value,
                         "PROXMOX_CA_BUNDLE": sim.ca_file}
    assert sim.url == f"https://127.0.0.1:{sim.port}"
    assert Simulator(random_seed=1).token_value == sim.token_value != Simulator(random_seed=2).token_value


def test_envelope_and_headers(sim):
    response = get(sim, "/version")
    assert (response.status_code, response.reason) == (200, "OK")
    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert response.headers["Server"] == "pve-api-daemon/3.0"
    assert response.headers["Cache-Control"] == "max-age=0"
    assert response.headers["Pragma"] == "no-cache"
    assert response.content.startswith(b'{"data":{') and b", " not in response.content
    assert response.json()["data"]["release"] == "9.1"


def test_gzip_only_when_asked_and_over_1k(sim):
    big = get(sim, "/cluster/resources", stream=True)
    assert big.headers["Content-Encoding"] == "gzip"
    plain = get(sim, "/cluster/resources", headers={**token_header(sim), "Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers and len(plain.content) > 1024
    assert "Content-Encoding" not in get(sim, "/version").headers


def test_keep_alive_on_success_close_on_error(sim):
    context = ssl.create_default_context(cafile=sim.ca_file)
    conn = http.client.HTTPSConnection("127.0.0.1", sim.port, context=context, timeout=5)
    for _ in range(2):  # the same connection serves both
        conn.request("GET", "/api2/json/version", headers=token_header(sim))
        response = conn.getresponse()
        response.read()
        assert response.status == 200 and not response.will_close
    conn.request("GET", "/api2/json/nope", headers=token_header(sim))
    response = conn.getresponse()
    response.read()
    assert (response.status, response.reason) == (501, "Method 'GET /nope' not implemented")
    assert response.getheader("Connection") == "close" and response.will_close
    conn.close()


# -- the endpoints, as proxmoxer sees them --------------------------------------------------


def test_proxmoxer_token_with_ca_file_and_without_verification(sim):
    for api in (token_api(sim), token_api(sim, verify_ssl=False)):
        assert api.version.get()["version"] == "9.1.4"
        assert {n["node"] for n in api.nodes.get()} == {"pve1", "pve2", "pve3"}


def test_cluster_resources_storage_rules(sim):
    rows = token_api(sim).cluster.resources.get(type="storage")
    rows_by = by_key(rows, "storage", "node")
    nodes = {"pve1", "pve2", "pve3"}
    assert {n for s, n in rows_by if s == "ceph-vm"} == nodes  # shared: repeated on every node
    assert len({(rows_by["ceph-vm", n]["disk"], rows_by["ceph-vm", n]["maxdisk"]) for n in nodes}) == 1
    assert {n for s, n in rows_by if s == "tank"} == {"pve2", "pve3"}  # restricted
    assert "old-iso" not in {s for s, _ in rows_by}  # disabled: omitted
    assert len(rows) == 3 + 3 + 3 + 3 + 2
    local = rows_by["local", "pve1"]
    assert local["id"] == "storage/pve1/local" and local["type"] == "storage"
    assert local["plugintype"] == "dir" and local["shared"] == 0 and local["status"] == "available"
    assert sorted(local["content"].split(",")) == ["backup", "iso", "vztmpl"]
    assert 0 < local["disk"] < local["maxdisk"]


def test_cluster_resources_kinds(sim):
    api = token_api(sim)
    everything = api.cluster.resources.get()
    assert {row["type"] for row in everything} == {"storage", "node", "sdn"}
    assert {row["id"] for row in api.cluster.resources.get(type="node")} == {"node/pve1", "node/pve2", "node/pve3"}
    assert api.cluster.resources.get(type="vm") == []
    with pytest.raises(ResourceException) as err:
        api.cluster.resources.get(type="disk")
    assert err.value.status_code == 400
    assert "does not have a value in the enumeration 'vm, storage, node, sdn'" in err.value.errors["type"]


def test_storage_config(sim):
    rows = by_key(token_api(sim).storage.get(), "storage")
    assert set(rows) == {"local", "local-lvm", "ceph-vm", "nas-backup", "tank", "old-iso"}
    assert rows["old-iso"]["disable"] == 1 and "disable" not in rows["local"]
    assert sorted(rows["tank"]["nodes"].split(",")) == ["pve2", "pve3"] and "nodes" not in rows["local"]
    assert len({row["digest"] for row in rows.values()}) == 1 and len(rows["local"]["digest"]) == 40
    assert rows["ceph-vm"]["shared"] == 1 and rows["nas-backup"]["shared"] == 1
    assert all("shared" not in rows[s] for s in ("local", "local-lvm", "tank"))
    assert rows["local"]["path"] == "/var/lib/vz" and rows["nas-backup"]["path"] == "/mnt/pve/nas-backup"
    assert rows["local-lvm"]["vgname"] == "pve" and rows["tank"]["pool"] == "tank"
    assert [r["storage"] for r in token_api(sim).storage.get(type="nfs")] == ["nas-backup"]


def test_node_storage_follows_section_2(sim):
    rows = by_key(token_api(sim).nodes("pve1").storage.get(), "storage")
    for sid in ("tank", "old-iso"):  # restricted elsewhere / disabled: listed with zeros
        assert {k: rows[sid][k] for k in ("enabled", "active", "total", "used", "avail")} == dict.fromkeys(
            ("enabled", "active", "total", "used", "avail"), 0)
        assert "used_fraction" not in rows[sid]
    for sid in ("local", "nas-backup"):  # statfs types keep a reserve
        row = rows[sid]
        assert row["enabled"] == row["active"] == 1 and row["used"] + row["avail"] < row["total"]
        assert row["used_fraction"] == pytest.approx(row["used"] / row["total"])
    lvm = rows["local-lvm"]
    assert lvm["used"] + lvm["avail"] == lvm["total"] and lvm["shared"] == 0


def test_node_storage_filters(sim):
    storage = token_api(sim).nodes("pve1").storage
    enabled = {r["storage"] for r in storage.get(enabled=1)}
    assert enabled == {"local", "local-lvm", "ceph-vm", "nas-backup", "tank"}  # tank: restricted, still listed
    assert {r["storage"] for r in storage.get(content="images")} == {"local-lvm", "ceph-vm"}
    assert {r["storage"] for r in storage.get(target="pve2")} == {"ceph-vm", "nas-backup"}
    assert [r["storage"] for r in storage.get(storage="local")] == ["local"]
    with pytest.raises(ResourceException) as err:
        storage.get(storage="nope")
    assert (err.value.status_code, err.value.content) == (400, "Parameter verification failed.")
    assert err.value.errors == {"storage": "No such storage."}


@pytest.mark.parametrize("value", [True, "true", "yes", ""])
def test_boolean_params_accept_only_1_and_0(sim, value):
    with pytest.raises(ResourceException) as err:
        token_api(sim).nodes("pve1").storage.get(enabled=value)
    assert err.value.status_code == 400 and err.value.content == "Parameter verification failed."
    assert err.value.errors["enabled"] == f"type check ('boolean') failed - got '{value}'"


def test_unknown_parameter_is_refused(sim):
    response = get(sim, "/nodes/pve1/storage?colour=red")
    assert response.status_code == 400
    assert response.json() == {"data": None, "message": "Parameter verification failed.\n", "errors": {
        "colour": "property is not defined in schema and the schema does not allow additional properties"}}


def test_storage_status_endpoint(sim):
    api = token_api(sim)
    status = api.nodes("pve1").storage("local-lvm").status.get()
    assert set(status) == {"type", "content", "shared", "enabled", "active", "total", "used", "avail"}
    assert api.nodes("localhost").storage("tank").status.get()["enabled"] == 0
    with pytest.raises(ResourceException) as err:
        api.nodes("pve1").storage("nope").status.get()
    assert err.value.status_code == 400 and err.value.errors == {"storage": "No such storage."}


def test_unknown_path_and_unknown_node(sim):
    api = token_api(sim)
    with pytest.raises(ResourceException) as err:
        api("x").get()
    assert (err.value.status_code, err.value.content) == (501, "Method 'GET /x' not implemented")
    with pytest.raises(ResourceException) as err:
        api.nodes("pve9").storage.get()
    assert err.value.status_code == 500 and err.value.content.startswith("hostname lookup 'pve9' failed")


def test_cluster_status_and_nodes(sim):
    api = token_api(sim)
    status = api.cluster.status.get()
    assert status[0] == {"type": "cluster", "id": "cluster", "name": "pve-sim", "nodes": 3, "version": 5,
                         "quorate": 1}
    members = by_key(status[1:], "name")
    assert members["pve1"]["local"] == 1 and members["pve2"]["local"] == 0
    assert all(m["online"] == 1 and m["type"] == "node" for m in members.values())
    node = by_key(api.nodes.get(), "node")["pve1"]
    assert node["status"] == "online" and node["maxmem"] > node["mem"] > 0


def test_cluster_status_names_the_cluster_or_a_standalone_host(make_sim):
    named = make_sim(nodes=2, datastores=1, cluster_name="prod")
    assert token_api(named).cluster.status.get()[0]["name"] == "prod"
    alone = token_api(make_sim(nodes=1, datastores=1)).cluster.status.get()
    assert [(e["type"], e["name"], e["local"], e["nodeid"]) for e in alone] == [("node", "pve1", 1, 0)]


def test_a_token_without_sys_audit_gets_a_403_from_cluster_status_only(sim):
    # docs/proxmox-api.md#cluster-status: Sys.Audit on / is needed; the storage lists need none of it.
    sim.set_faults(path="^/api2/json/cluster/status$", status=403, reason="Permission check failed (/, Sys.Audit)")
    api = token_api(sim)
    with pytest.raises(ResourceException) as err:
        api.cluster.status.get()
    assert (err.value.status_code, err.value.content) == (403, "Permission check failed (/, Sys.Audit)")
    assert api.cluster.resources.get(type="storage") and api.nodes("pve1").storage.get()


@pytest.mark.parametrize("kind,reserve", [("dir", True), ("nfs", True), ("cifs", True), ("cephfs", True),
                                          ("btrfs", True), ("lvmthin", False), ("zfspool", False), ("rbd", False)])
def test_node_storage_avail_keeps_roots_blocks_on_file_systems_only(kind, reserve):
    cluster = Cluster(nodes=2, datastores=0, random_seed=3, drift=False)
    cluster.add("st", type=kind, size=1000 * 4096, used=300 * 4096)
    rows = {(r["storage"]): r for r in PveApi(cluster).answer(resolve("GET", "/nodes/pve2/storage"), {})}
    row = rows["st"]
    assert (row["total"], row["used"]) == (1000 * 4096, 300 * 4096)
    expected = 700 * 4096 - (int(1000 * 4096 * 0.05) if reserve else 0)
    assert row["avail"] == expected and row["enabled"] == row["active"] == 1
    cluster.set_active("st", False, node="pve2")  # e.g. its server is down: zeros, never an empty disk
    row = PveApi(cluster).answer(resolve("GET", "/nodes/pve2/storage"), {"storage": "st"})[0]
    assert (row["enabled"], row["active"], row["total"], row["used"], row["avail"]) == (1, 0, 0, 0, 0)
    assert "used_fraction" not in row


def test_what_prometheus_pve_exporter_calls(make_sim):
    """The calls of its cluster collectors (node=0) and node collectors (node=1), 3.10.2."""
    api = token_api(make_sim(vms=5))
    status = api.cluster.status.get()
    assert status[0]["type"] == "cluster" and {e["type"] for e in status} == {"cluster", "node"}
    vms = api.cluster.resources.get(type="vm")
    assert {v["type"] for v in vms} == {"qemu", "lxc"} and all(v["id"] == f"{v['type']}/{v['vmid']}" for v in vms)
    assert all(s["status"] in ("available", "unknown") for s in api.cluster.resources.get(type="storage"))
    assert {r["type"] for r in api.cluster.resources.get()} == {"qemu", "lxc", "node", "storage", "sdn"}
    assert set(api.version.get()) == {"release", "repoid", "version"}
    assert len(api.cluster("backup-info/not-backed-up").get()) == 5
    assert api.cluster.config.qdevice.get() == {}
    local = next(e["name"] for e in status if e["type"] == "node" and e["local"])
    guests = api.nodes(local).qemu.get()
    assert guests and api.nodes(local).qemu(guests[0]["vmid"]).config.get()["onboot"] == 1
    assert api.nodes(local).replication.get() == []
    assert api.nodes(local).subscription.get()["status"] == "notfound"


# -- authentication -------------------------------------------------------------------------


def test_token_header_variants(sim):
    value = f"{sim.user}!{sim.token_name}={sim.token_value}"
    for header in (f"PVEAPIToken={value}", f"PVEAPIToken {value}", f"PVEAPIToken={value.replace('@', '%40')}",
                   f"PVEAPIToken={value};ignored"):
        assert get(sim, "/version", headers={"Authorization": header}).status_code == 200, header


@pytest.mark.parametrize(("headers", "reason"), [
    ({}, "No ticket"),
    ({"Authorization": "PVEAPIToken=monitor@pve!exporter=00000000-0000-0000-0000-000000000000"},
     "Authentication failed!"),
    ({"Authorization": "PVEAPIToken=root@pam!exporter=x"}, "Authentication failed!"),
    ({"Cookie": "PVEAuthCookie=PVE:monitor@pve:00000000::bad"}, "Authentication failed!"),
])
def test_401_has_empty_body_after_the_delay(sim, headers, reason):
    started = time.monotonic()
    response = get(sim, "/version", headers=headers)
    assert time.monotonic() - started >= AUTH_DELAY
    assert (response.status_code, response.reason, response.content) == (401, reason, b"")
    assert response.headers["Connection"] == "close"


def test_bad_token_through_proxmoxer(sim):
    api = ProxmoxAPI("127.0.0.1", port=sim.port, user=sim.user, token_name="exporter",
                     token_value="wrong", verify_ssl=sim.ca_file)
    with pytest.raises(ResourceException) as err:
        api.version.get()
    assert (err.value.status_code, err.value.content, err.value.errors) == (401, "Authentication failed!",
                                                                           {"errors": b""})


def test_cookie_wins_over_token(sim):
    headers = {**token_header(sim), "Cookie": "PVEAuthCookie=PVE:monitor@pve:00000000::bad"}
    assert get(sim, "/version", headers=headers).status_code == 401


def test_ticket_login_and_renewal(sim):
    api = ProxmoxAPI("127.0.0.1", port=sim.port, user=sim.user, password=sim.password, verify_ssl=sim.ca_file)
    ticket, csrf = api.get_tokens()
    assert ticket.startswith("PVE:monitor@pve:") and ":" in csrf
    assert len(api.cluster.resources.get(type="storage")) == 14
    assert get(sim, "/version", headers={"Authorization": f"PVEAuthCookie={ticket}"}).status_code == 200
    renewed = requests.post(f"{sim.url}/api2/json/access/ticket", verify=sim.ca_file, timeout=5,
                            data={"username": sim.user, "password": ticket})
    assert renewed.status_code == 200 and renewed.json()["data"]["clustername"] == "pve-sim"


def test_wrong_password(sim):
    started = time.monotonic()
    with pytest.raises(AuthenticationError):
        ProxmoxAPI("127.0.0.1", port=sim.port, user=sim.user, password="nope", verify_ssl=sim.ca_file)
    assert time.monotonic() - started >= AUTH_DELAY
    response = requests.post(f"{sim.url}/api2/json/access/ticket", verify=sim.ca_file, timeout=5,
                             data={"username": "monitor@pve", "password": "x"})
    assert (response.status_code, response.reason) == (401, "authentication failure")
    assert response.json() == {"data": None, "message": "authentication failure\n"}


# -- the model: offline nodes, usage, drift, operations -------------------------------------


def test_offline_node(make_sim):
    sim = make_sim()
    sim.cluster.set_node_online("pve2", False)
    api = token_api(sim)
    with pytest.raises(ResourceException) as err:
        api.nodes("pve2").storage.get()
    assert (err.value.status_code, err.value.content) == (595, "No route to host")
    assert err.value.errors == {"errors": b""}  # an empty body
    for row in api.cluster.resources.get(type="storage"):
        if row["node"] == "pve2":
            assert row["status"] == "unknown" and "disk" not in row and "maxdisk" not in row
        else:
            assert row["status"] == "available" and row["maxdisk"] > 0
    assert by_key(api.nodes.get(), "node")["pve2"]["status"] == "offline"
    assert by_key(api.cluster.status.get()[1:], "name")["pve2"]["online"] == 0
    assert len(api.nodes("pve1").storage.get()) == 6  # other nodes still answer


def test_offline_fault_with_delay_and_clear(make_sim):
    sim = make_sim()
    sim.set_faults(offline_nodes=["pve3"], offline_delay_ms=100)
    started = time.monotonic()
    response = get(sim, "/nodes/pve3/storage")
    assert (response.status_code, response.reason, response.content) == (595, "No route to host", b"")
    assert time.monotonic() - started >= 0.1
    sim.clear_faults()
    assert get(sim, "/nodes/pve3/storage").status_code == 200


def test_set_usage_local_and_shared(make_sim):
    sim = make_sim(drift=False)
    sim.cluster.set_usage("local", used=1234 * 4096, node="pve2")
    sim.cluster.set_usage("ceph-vm", fraction=0.5)
    rows = by_key(token_api(sim).cluster.resources.get(type="storage"), "storage", "node")
    assert rows["local", "pve2"]["disk"] == 1234 * 4096 and rows["local", "pve1"]["disk"] != 1234 * 4096
    half = rows["ceph-vm", "pve1"]["maxdisk"] // 2
    assert {rows["ceph-vm", n]["disk"] for n in ("pve1", "pve2", "pve3")} == {half}
    with pytest.raises(SimError):
        sim.cluster.set_usage("nope", used=1)


def test_drift_changes_usage_over_time_never_above_size(make_sim):
    clock = FakeClock()
    sim = make_sim(clock=clock, drift_rate=0.5)
    api = token_api(sim)
    before = by_key(api.cluster.resources.get(type="storage"), "id")
    clock.now += 600
    after = by_key(api.cluster.resources.get(type="storage"), "id")
    assert all(after[i]["disk"] != before[i]["disk"] for i in before)
    assert all(after[i]["maxdisk"] == before[i]["maxdisk"] for i in before)
    for hours in (1, 7, 50, 1000):
        clock.now = FIXED_TIME + hours * 3600
        assert all(0 <= r["disk"] <= r["maxdisk"] for r in api.cluster.resources.get(type="storage"))


def test_no_drift_keeps_usage(make_sim):
    clock = FakeClock()
    sim = make_sim(drift=False, clock=clock)
    first = get(sim, "/cluster/resources?type=storage").json()["data"]
    clock.now += 6 * 3600  # with drift, hours change every figure
    second = get(sim, "/cluster/resources?type=storage").json()["data"]
    assert {r["id"]: r["disk"] for r in first} == {r["id"]: r["disk"] for r in second}


def test_model_operations(make_sim):
    sim = make_sim()
    cluster, api = sim.cluster, token_api(sim)
    cluster.vanish("nas-backup")
    cluster.disable("local-lvm")
    cluster.add("fresh-nfs", type="nfs", content=["backup"], size=10 * 2**40, used=2**40)
    cluster.set_active("ceph-vm", False, node="pve1")
    config = by_key(api.storage.get(), "storage")
    assert "nas-backup" not in config and config["local-lvm"]["disable"] == 1
    assert config["fresh-nfs"]["shared"] == 1 and config["fresh-nfs"]["path"] == "/mnt/pve/fresh-nfs"
    rows = by_key(api.cluster.resources.get(type="storage"), "storage", "node")
    assert not {s for s, _ in rows} & {"nas-backup", "local-lvm"}
    assert rows["fresh-nfs", "pve3"]["maxdisk"] == 10 * 2**40
    assert rows["ceph-vm", "pve1"]["status"] == "unknown" and "disk" not in rows["ceph-vm", "pve1"]
    ceph = by_key(api.nodes("pve1").storage.get(), "storage")["ceph-vm"]
    assert (ceph["enabled"], ceph["active"], ceph["total"]) == (1, 0, 0)
    cluster.enable("local-lvm")
    assert ("local-lvm", "pve1") in by_key(api.cluster.resources.get(type="storage"), "storage", "node")


def test_string_bools_quirk(make_sim):
    api = token_api(make_sim(quirks=True))
    row = by_key(api.nodes("pve1").storage.get(), "storage")["local"]
    assert (row["enabled"], row["active"], row["shared"]) == ("1", "1", "0")
    assert {r["shared"] for r in api.cluster.resources.get(type="storage")} == {"0", "1"}


def test_lists_and_comma_lists_are_shuffled_per_request(sim):
    api = token_api(sim)
    orders = {tuple(r["storage"] for r in api.storage.get()) for _ in range(8)}
    contents = {by_key(api.storage.get(), "storage")["local"]["content"] for _ in range(12)}
    assert len(orders) > 1 and len(contents) > 1


def test_no_shuffle_keeps_the_order(make_sim):
    api = token_api(make_sim(shuffle=False))
    assert len({tuple(r["storage"] for r in api.storage.get()) for _ in range(5)}) == 1
    assert by_key(api.storage.get(), "storage")["local"]["content"] == "iso,vztmpl,backup"


# -- faults ---------------------------------------------------------------------------------


def test_status_fault_limited_to_a_path(sim):
    sim.set_faults(status=503, reason="Service Unavailable: simulated", path="/cluster/resources")
    api = token_api(sim)
    with pytest.raises(ResourceException) as err:
        api.cluster.resources.get(type="storage")
    assert (err.value.status_code, err.value.content) == (503, "Service Unavailable: simulated")
    assert api.version.get()["version"]
    sim.set_faults(status=500, reason=None, path=None)
    assert get(sim, "/version").reason == "Internal Server Error"


def test_auth_fail_fault(sim):
    sim.set_faults(auth_fail=True)
    started = time.monotonic()
    response = get(sim, "/version")
    assert (response.status_code, response.content) == (401, b"")
    assert time.monotonic() - started >= AUTH_DELAY


def test_hang_until_cleared_gives_read_timeout(sim):
    sim.set_faults(hang=True)
    with pytest.raises(requests.exceptions.ReadTimeout):
        get(sim, "/version", timeout=(5, 0.3))
    sim.clear_faults()
    assert get(sim, "/version").status_code == 200


def test_hang_for_some_seconds(sim):
    sim.set_faults(hang=True, hang_seconds=0.2)
    started = time.monotonic()
    assert get(sim, "/version").status_code == 200
    assert time.monotonic() - started >= 0.2


def test_stop_is_prompt_while_a_request_hangs(make_sim):
    sim = make_sim()
    session = requests.Session()
    assert session.get(f"{sim.url}/api2/json/version", headers=token_header(sim), verify=sim.ca_file).ok
    sim.set_faults(hang=True)
    outcome = []
    client = threading.Thread(target=lambda: outcome.append(_request_outcome(sim)))
    client.start()
    time.sleep(0.2)
    stopper = threading.Thread(target=sim.stop)
    stopper.start()
    stopper.join(10)
    assert not stopper.is_alive()  # the request hangs until cleared: stop() did not wait for it
    client.join(5)
    assert outcome and outcome[0] != 200
    session.close()


def _request_outcome(sim):
    try:
        return get(sim, "/version", timeout=10).status_code
    except requests.exceptions.RequestException as exc:
        return type(exc).__name__


def test_malformed_json(sim):
    sim.set_faults(malformed=True)
    response = get(sim, "/cluster/resources")
    assert response.status_code == 200 and response.content.startswith(b'{"data":[')
    with pytest.raises(ValueError):
        response.json()
    # proxmoxer does not raise on a broken body: it hands back {"errors": <raw bytes>}.
    assert set(token_api(sim).cluster.resources.get()) == {"errors"}


def test_latency(sim):
    sim.set_faults(latency_ms=150)
    started = time.monotonic()
    assert get(sim, "/version").status_code == 200
    assert time.monotonic() - started >= 0.15


def test_bad_fault_is_refused(sim):
    with pytest.raises(SimError):
        sim.set_faults(colour="red")
    with pytest.raises(SimError):
        sim.set_faults(offline_nodes=["pve9"])


# -- control endpoints and counters -------------------------------------------------------


def control(sim, method, path, payload=None):
    return requests.request(method, f"{sim.url}/_sim/{path}", json=payload, verify=sim.ca_file, timeout=5)


def test_request_counter(sim):
    get(sim, "/version")
    get(sim, "/version")
    get(sim, "/cluster/resources?type=storage")
    get(sim, "/nowhere", headers={})
    control(sim, "GET", "stats")
    expected = {"/api2/json/version": 2, "/api2/json/cluster/resources": 1, "/api2/json/nowhere": 1}
    assert (sim.request_count, sim.requests_by_path) == (4, expected)
    assert control(sim, "GET", "stats").json() == {"requests": 4, "by_path": expected}
    assert control(sim, "POST", "reset").json() == {"requests": 0, "by_path": {}}
    assert sim.request_count == 0


def test_faults_over_http(sim):
    answer = control(sim, "POST", "faults", {"status": 503, "path": "^/api2/json/version$", "latency_ms": 10})
    assert answer.status_code == 200 and answer.json()["status"] == 503
    assert get(sim, "/version").status_code == 503 and get(sim, "/nodes").status_code == 200
    assert control(sim, "GET", "faults").json()["latency_ms"] == 10
    assert control(sim, "POST", "faults", {"clear": True}).json() == sim.faults
    assert sim.faults["status"] is None
    refused = control(sim, "POST", "faults", {"colour": "red"})
    assert refused.status_code == 400 and "unknown fault 'colour'" in refused.json()["error"]
    assert control(sim, "GET", "nope").status_code == 404


def test_rename_fault_sends_odd_text_over_http(sim):
    # JSON has no lone surrogate but its escape: "\ud800" decodes to one on either side.
    body = '{"rename": {"pve2": "pve\\ud800x", "images": "img\\u001b[2J", "dir": "' + "d" * 5000 + '"}, "path": "resources|/storage$"}'
    answer = requests.post(f"{sim.url}/_sim/faults", data=body, verify=sim.ca_file, timeout=5)
    assert answer.status_code == 200 and answer.json()["rename"]["pve2"] == "pve\ud800x"
    raw = get(sim, "/cluster/resources?type=storage")
    assert b'"node":"pve\\ud800x"' in raw.content and b'"node":"pve2"' not in raw.content
    rows = raw.json()["data"]
    assert {r["node"] for r in rows} == {"pve1", "pve\ud800x", "pve3"}
    assert all(r["id"].startswith("storage/pve") for r in rows)  # a string's part is not renamed, only comma items
    assert any("img\x1b[2J" in r["content"].split(",") for r in rows)  # an item of a comma list
    assert {r["type"] for r in get(sim, "/storage").json()["data"] if r["storage"] == "local"} == {"d" * 5000}
    assert get(sim, "/nodes").json()["data"][0]["node"] in ("pve1", "pve2", "pve3")  # path-limited
    assert control(sim, "POST", "faults", {"rename": {"a": 1}}).status_code == 400
    assert control(sim, "POST", "faults", {"rename": None}).json()["rename"] == {}


def test_cluster_ops_over_http(make_sim):
    sim = make_sim()
    ops = [{"op": "set_node_online", "node": "pve3", "online": False},
           {"op": "set_usage", "datastore": "local", "node": "pve1", "used": 4096},
           {"op": "vanish", "datastore": "tank"}]
    assert control(sim, "POST", "cluster", ops).json() == {"ok": True, "applied": 3}
    assert get(sim, "/nodes/pve3/storage").status_code == 595
    rows = by_key(get(sim, "/cluster/resources?type=storage").json()["data"], "id")
    assert rows["storage/pve1/local"]["disk"] == 4096 and "storage/pve2/tank" not in rows
    assert control(sim, "POST", "cluster", {"op": "format_disk"}).status_code == 400
    assert control(sim, "POST", "cluster", {"op": "vanish", "datastore": "nope"}).status_code == 400
    assert sim.request_count == 2


# -- the model without HTTP -----------------------------------------------------------------


def test_large_mix_keeps_its_shape():
    cluster = Cluster(nodes=100, datastores=100, random_seed=7)
    datastores = list(cluster.datastores.values())
    named = ["local", "local-lvm", "ceph-vm", "nas-backup", "tank", "old-iso", "pbs1"]
    assert [d.id for d in datastores[:7]] == named
    assert 0.3 < sum(d.shared for d in datastores) / len(datastores) < 0.6
    assert not any(d.shared and d.type in ("lvmthin", "zfspool") for d in datastores)
    rows = PveApi(cluster).answer(resolve("GET", "/cluster/resources"), {"type": "storage"})
    expected = sum(len(d.nodes or cluster.nodes) for d in datastores if not d.disabled)
    assert len(rows) == expected > 8000
    shared = [d for d in datastores if d.shared and not d.disabled]
    assert all(set(d.usage) == {SHARED} for d in shared)


def test_cluster_of_one_node_is_standalone():
    rows = PveApi(Cluster(nodes=1, datastores=7)).answer(resolve("GET", "/cluster/status"), {})
    assert rows == [{"type": "node", "id": "node/pve1", "name": "pve1", "ip": "10.0.0.2", "level": "",
                     "local": 1, "online": 1, "nodeid": 0}]


# -- the `simulate` command's body ----------------------------------------------------------


def test_parse_listen():
    assert parse_listen("127.0.0.1:8006") == ("127.0.0.1", 8006)
    assert parse_listen("8006") == ("127.0.0.1", 8006)
    assert parse_listen(":0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:8443") == ("::1", 8443)


SIMULATE = ("import sys\nfrom pve_datastore_exporter.simulator import Simulator, run_until_signal\n"
            "listen, state_dir, nodes, datastores = sys.argv[1:]\n"
            "sim = Simulator(nodes=int(nodes), datastores=int(datastores), state_dir=state_dir, auth_delay=0.01)\n"
            "sys.exit(run_until_signal(sim, listen))\n")


def simulate(*args):
    """run_until_signal() in a process of its own, as `pve-datastore-exporter simulate` runs it."""
    return subprocess.Popen([sys.executable, "-c", SIMULATE, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_run_until_signal_serves_until_sigterm(state_dir):
    process = simulate("127.0.0.1:0", state_dir, 2, 4)
    try:
        headline = process.stdout.readline()
        assert headline.startswith("# simulated Proxmox VE: 2 nodes x 4 datastores at https://127.0.0.1:")
        env = {}
        while "PROXMOX_CA_BUNDLE" not in env:
            line = process.stdout.readline()
            assert line, "simulate exited early"
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith("#"):
                env[key] = value
        token = f"{env['PROXMOX_USER']}!{env['PROXMOX_TOKEN_NAME']}={env['PROXMOX_TOKEN_VALUE']}"
        response = requests.get(f"https://{env['PROXMOX_HOST']}/api2/json/nodes", verify=env["PROXMOX_CA_BUNDLE"],
                                headers={"Authorization": f"PVEAPIToken={token}"}, timeout=5)
        assert len(response.json()["data"]) == 2
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("listen", ["127.0.0.1:{port}", "{port}", "127.0.0.1:http"])
def test_run_until_signal_says_when_it_cannot_listen(sim, state_dir, listen):
    listen = listen.format(port=sim.port)  # the port the shared simulator holds, or no port at all
    process = simulate(listen, state_dir, 1, 1)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 1 and out == ""
    assert err.startswith(f"simulate: cannot listen on {listen}: ") and "Traceback" not in err


# -- captured payloads for the parser tests ---------------------------------------------------


def test_captured_payloads(make_sim):
    sim = make_sim(nodes=3, datastores=6, random_seed=1, drift=False, clock=FakeClock())
    captured = {"sim_cluster_resources.json": get(sim, "/cluster/resources?type=storage").json(),
                "sim_storage.json": get(sim, "/storage").json()}
    for name, payload in captured.items():
        path = DATA / name
        if os.environ.get("UPDATE_GOLDEN"):
            path.write_text(json.dumps(payload, indent=1) + "\n")
        assert json.loads(path.read_text()) == payload, f"{name} is stale: rerun with UPDATE_GOLDEN=1"
