"""EXPORTER_EXACT_AVAILABLE: each node's own `avail` (docs/proxmox-api.md#node-storage, #root-reserved-blocks)."""

import json
import logging
import threading
import time
from pathlib import Path

import pytest
import requests
from proxmoxer import ResourceException

from pve_datastore_exporter.config import Config
from pve_datastore_exporter.parse import online_nodes, parse, parse_node_storage, with_exact_available
from pve_datastore_exporter.reader import Reader
from pve_datastore_exporter.records import RefreshFailed
from pve_datastore_exporter.simulator import Simulator

DATA = Path(__file__).parent / "data"
RESOURCES = json.loads((DATA / "cluster_resources.json").read_text())["data"]
STORAGE = json.loads((DATA / "storage.json").read_text())["data"]
NODE_STORAGE = {node: answer["data"] for node, answer in json.loads((DATA / "node_storage.json").read_text()).items()}


class FakeApi:
    """proxmoxer's shape: attribute and call chains build a path; get() answers it, or raises an exception given."""

    def __init__(self, answers, path=(), calls=None):
        self.answers, self.path, self.calls = answers, path, [] if calls is None else calls

    def __getattr__(self, name):
        return FakeApi(self.answers, (*self.path, name), self.calls)

    def __call__(self, *parts):
        return FakeApi(self.answers, (*self.path, *map(str, parts)), self.calls)

    def get(self, **params):
        path = "/" + "/".join(self.path)
        self.calls.append(path)
        answer = self.answers[path]
        if callable(answer):
            answer = answer()
        if isinstance(answer, BaseException):
            raise answer
        return answer


def fake_api(**nodes):
    answers = {"/cluster/resources": RESOURCES, "/storage": STORAGE, "/cluster/status": [],
               **{f"/nodes/{n}/storage": NODE_STORAGE.get(n) for n in ("pve1", "pve2")}}
    answers.update({f"/nodes/{node}/storage": answer for node, answer in nodes.items()})
    return FakeApi(answers)


def make_reader(api, clock=time.monotonic, **settings):
    config = Config(proxmox_host="pve1:8006", proxmox_user="m@pve", proxmox_token_name="t", proxmox_token_value="v",
                    proxmox_cluster_name="prod", exact_available=True).replace(**settings)
    return Reader(config, connect=lambda c: api, clock=clock)


def by_id(datastores):
    return {d.id: d for d in datastores}


def available(datastore):
    return {n.node: n.available for n in datastore.nodes}


# -- the pure parts ---------------------------------------------------------------------------------


def test_node_storage_gives_avail_only_where_enabled_and_active():
    assert parse_node_storage(NODE_STORAGE["pve1"], "pve1") == {
        "local": 82340397056, "local-lvm": 1315502549402, "ceph-vm": 9895604649984, "san": 0}
    # Strings for 0/1 and for numbers, no avail at all (drbd1), inactive zeros (nas-backup), off-node (old-iso).
    assert parse_node_storage(NODE_STORAGE["pve2"], "pve2") == {
        "tank": 3173980831744, "ceph-vm": 9895604649984, "local": 75818640384, "local-lvm": 900000000000, "san": 0}


@pytest.mark.parametrize("payload", [{"errors": b"<html>"}, None, "text"])
def test_a_node_answer_that_is_not_a_list_is_refused(payload):
    with pytest.raises(RefreshFailed):
        parse_node_storage(payload, "pve1")


def test_an_avail_that_is_no_byte_count_is_refused_naming_the_datastore():
    with pytest.raises(ValueError, match="'local'"):
        parse_node_storage([{"storage": "local", "enabled": 1, "active": 1, "avail": "lots"}], "pve1")


def test_missing_flags_are_not_active():
    assert parse_node_storage([{"storage": "local", "avail": 5}, {"storage": "x1", "enabled": 1, "avail": 5}], "pve1") == {}


def test_online_nodes_are_those_with_a_datastore_available():
    assert online_nodes(RESOURCES) == ["pve1", "pve2"]  # pve3 shows only `unknown`
    odd = [{"node": "../access", "status": "available"}, {"node": 7, "status": "available"}, "junk",
           {"node": "pve-4", "status": "available", "storage": "x1"}]
    assert online_nodes(odd) == ["pve-4"] and online_nodes({"errors": b""}) == []


def test_exact_figures_are_summed_and_counted_once_like_size_and_used():
    datastores = by_id(with_exact_available(parse(RESOURCES, STORAGE), {
        n: parse_node_storage(NODE_STORAGE[n], n) for n in ("pve1", "pve2")}))
    local = datastores["local"]
    assert available(local) == {"pve1": 82340397056, "pve2": 75818640384, "pve3": None}
    assert local.available == 82340397056 + 75818640384 < local.size - local.used  # root's 5 %
    assert datastores["local-lvm"].available == datastores["local-lvm"].size - datastores["local-lvm"].used
    ceph = datastores["ceph-vm"]
    assert ceph.available == 9895604649984 and available(ceph)["pve3"] is None  # shared: once
    assert datastores["nas-backup"].available == 0 and not datastores["nas-backup"].active
    assert datastores["tank"].available == 3173980831744


def test_a_node_without_an_answer_keeps_its_figures_and_a_shared_one_takes_a_node_that_answered():
    plain = by_id(parse(RESOURCES, STORAGE))
    exact = by_id(with_exact_available(list(plain.values()), {"pve2": {"local": 1000, "ceph-vm": 9}}))
    assert available(exact["local"])["pve1"] == available(plain["local"])["pve1"]
    assert exact["local"].available == available(plain["local"])["pve1"] + 1000
    assert exact["ceph-vm"].available == 9 and available(exact["ceph-vm"])["pve1"] == plain["ceph-vm"].available
    assert exact["local-lvm"] == plain["local-lvm"]  # nothing reported: untouched


def test_an_avail_is_never_put_on_a_node_the_resources_call_unknown():
    exact = by_id(with_exact_available(parse(RESOURCES, STORAGE), {"pve3": {"local": 5}}))
    assert available(exact["local"])["pve3"] is None and exact["local"] == by_id(parse(RESOURCES, STORAGE))["local"]


# -- the reader -------------------------------------------------------------------------------------


def test_one_call_per_online_node_and_proxmoxs_avail_in_the_records():
    api = fake_api()
    datastores = by_id(make_reader(api).read())
    assert sorted(api.calls) == ["/cluster/resources", "/nodes/pve1/storage", "/nodes/pve2/storage", "/storage"]
    assert datastores["local"].available == 82340397056 + 75818640384


def test_off_by_default_it_is_two_calls_whatever_the_size():
    api = fake_api()
    datastores = by_id(make_reader(api, exact_available=False).read())
    assert sorted(api.calls) == ["/cluster/resources", "/storage"]
    assert datastores["local"].available == datastores["local"].size - datastores["local"].used


@pytest.mark.parametrize("failure", [
    ResourceException(595, "Errors during connection establishment, proxy handshake", "No route to host",
                      {"errors": b""}),
    ResourceException(500, "Internal Server Error", "got \x1b[2J a bug"),
    requests.exceptions.ReadTimeout("read timed out"),
    {"errors": b"<html>"},
    [{"storage": "local", "enabled": 1, "active": 1, "avail": "lots"}],
])
def test_a_failing_node_keeps_its_figures_and_never_fails_the_refresh(failure, caplog):
    plain = by_id(parse(RESOURCES, STORAGE))
    reader = make_reader(fake_api(pve2=failure))
    with caplog.at_level(logging.INFO, "pve_datastore_exporter.reader"):
        datastores = by_id(reader.read())
        reader.read()
    local = datastores["local"]
    assert available(local) == {"pve1": 82340397056, "pve2": available(plain["local"])["pve2"], "pve3": None}
    assert local.available == 82340397056 + available(plain["local"])["pve2"]
    assert datastores["ceph-vm"].available == 9895604649984  # from pve1, which answered
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'pve2'" in warnings[0] and "\x1b" not in warnings[0]  # once, escaped


def test_a_node_answering_again_is_said_once(caplog):
    answers = [ResourceException(596, "TLS", "Connection timed out"), NODE_STORAGE["pve2"]]
    reader = make_reader(fake_api(pve2=lambda: answers[0]))
    with caplog.at_level(logging.INFO, "pve_datastore_exporter.reader"):
        reader.read()
        answers.pop(0)
        assert by_id(reader.read())["local"].available == 82340397056 + 75818640384
        reader.read()
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]
    assert "596 'Connection timed out'" in caplog.records[0].getMessage()
    assert "avail from 'pve2' again" in caplog.records[1].getMessage()


def test_a_hanging_node_is_let_go_at_the_timeout_and_the_others_count():
    release = threading.Event()

    def hang():
        release.wait(10)
        return NODE_STORAGE["pve2"]

    reader = make_reader(fake_api(pve2=hang), proxmox_timeout=1)
    started = time.monotonic()
    try:
        datastores = by_id(reader.read())
    finally:
        release.set()
    assert time.monotonic() - started < 3
    assert available(datastores["local"])["pve1"] == 82340397056
    plain = by_id(parse(RESOURCES, STORAGE))
    assert available(datastores["local"])["pve2"] == available(plain["local"])["pve2"]


def test_the_refresh_deadline_holds_the_extra_round():
    base = Config(proxmox_timeout=10)
    assert base.refresh_deadline == 45  # the cluster's name is read now and then
    assert base.replace(proxmox_cluster_name="prod").refresh_deadline == 35  # two calls and a login
    assert base.replace(proxmox_cluster_name="prod", exact_available=True).refresh_deadline == 45


# -- against the simulated cluster --------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    with Simulator(nodes=3, datastores=12, random_seed=5, drift=False, state_dir=str(tmp_path_factory.mktemp("sim")),
                   auth_delay=0.01) as s:
        yield s


def sim_config(sim, **settings):
    env = sim.env()
    config = Config(proxmox_host=env["PROXMOX_HOST"], proxmox_user=env["PROXMOX_USER"],
                    proxmox_token_name=env["PROXMOX_TOKEN_NAME"], proxmox_token_value=env["PROXMOX_TOKEN_VALUE"],
                    proxmox_ca_bundle=env["PROXMOX_CA_BUNDLE"], proxmox_timeout=5, exact_available=True)
    return config.replace(**settings)


def sim_reader(sim, **settings):
    return Reader(sim_config(sim, **settings))


def test_the_simulated_cluster_keeps_roots_blocks_out_of_file_system_datastores(sim):
    sim.reset_stats()
    datastores = sim_reader(sim).read()
    assert sim.request_count == 2 + 3 + 1  # the lists, one per node, the cluster's name
    seen = set()
    for d in datastores:
        for n in (n for n in d.nodes if n.active and n.size):
            seen.add(d.type)
            if d.type in ("dir", "nfs", "cifs", "cephfs", "btrfs"):
                assert n.available < n.size - n.used, (d.id, n)
            else:
                assert n.available == n.size - n.used, (d.id, n)
    assert {"dir", "nfs", "lvmthin", "rbd", "zfspool"} <= seen
    local = next(d for d in datastores if d.id == "local")
    assert local.available == sum(n.available for n in local.nodes)


def test_a_595_from_one_node_keeps_its_figures_in_the_simulated_cluster(sim):
    sim.set_faults(path="^/api2/json/nodes/pve2/storage$", status=595, reason="No route to host")
    try:
        local = next(d for d in sim_reader(sim).read() if d.id == "local")
    finally:
        sim.clear_faults()
    figures = {n.node: n for n in local.nodes}
    assert figures["pve2"].available == figures["pve2"].size - figures["pve2"].used
    assert figures["pve1"].available < figures["pve1"].size - figures["pve1"].used


def test_an_offline_node_is_not_asked(sim):
    sim.set_faults(offline_nodes=["pve3"])
    try:
        # Offline at once here; on a real cluster only after its figures turn `unknown` (up to 5 minutes).
        sim.reset_stats()
        sim_reader(sim, proxmox_cluster_name="x").read()
        assert "/api2/json/nodes/pve3/storage" not in sim.requests_by_path
        assert sim.request_count == 2 + 2
    finally:
        sim.clear_faults()


def test_the_exporter_names_the_simulated_cluster_and_shows_proxmoxs_avail(sim, tmp_path):
    from .servers import Exporter

    config = sim_config(sim, database_url=f"sqlite:///{tmp_path}/db.sqlite")
    exporter = Exporter(config, Reader(config))
    try:
        body = exporter.get("/api/datastores").json()
        assert body["cluster"] == "pve-sim" and exporter.get("/api/datastores/default").json()["cluster"] == "pve-sim"
        local = next(d for d in body["datastores"] if d["id"] == "local")
        assert local["available"] == sum(n["available"] for n in local["nodes"]) < local["size"] - local["used"]
        metrics = exporter.get("/metrics").text
        assert 'pve_datastore_available_bytes{pve_cluster="pve-sim",datastore="local",node="pve1"}' in metrics
        assert "pve_datastore_up 1.0" in metrics
    finally:
        exporter.close()


def test_without_sys_audit_the_simulated_cluster_is_named_by_the_host(sim, caplog):
    sim.set_faults(path="^/api2/json/cluster/status$", status=403, reason="Permission check failed (/, Sys.Audit)")
    try:
        reader = sim_reader(sim, exact_available=False)
        assert reader.read() and reader.cluster == "127.0.0.1"
    finally:
        sim.clear_faults()
    assert "Sys.Audit" in caplog.text


def test_a_standalone_simulated_host_is_named_by_its_node(tmp_path):
    with Simulator(nodes=1, datastores=2, state_dir=str(tmp_path), auth_delay=0.01) as alone:
        reader = sim_reader(alone, exact_available=False)
        reader.read()
        assert reader.cluster == "pve1"
