"""The Reader's calls bounded (issue 22, items 2 and 11): a read given up at its deadline makes no further
call, and answers that drip cannot collect threads and sockets, for the refresh's extra round and the
per-node reads together."""

import threading
import time

import pytest

from pve_datastore_exporter.calls import MAX_CALL_THREADS
from pve_datastore_exporter.config import Config
from pve_datastore_exporter.reader import Reader
from pve_datastore_exporter.records import RefreshFailed
from pve_datastore_exporter.simulator import Simulator


@pytest.fixture
def sim(tmp_path):
    with Simulator(nodes=8, datastores=3, drift=False, state_dir=str(tmp_path), auth_delay=0.01) as simulator:
        yield simulator


def reader_for(sim, **settings):
    env = sim.env()
    config = Config(proxmox_host=env["PROXMOX_HOST"], proxmox_user=env["PROXMOX_USER"],
                    proxmox_token_name=env["PROXMOX_TOKEN_NAME"], proxmox_token_value=env["PROXMOX_TOKEN_VALUE"],
                    proxmox_ca_bundle=env["PROXMOX_CA_BUNDLE"], proxmox_cluster_name="sim", **settings)
    return Reader(config)


def extra_threads():
    return sum(1 for t in threading.enumerate() if t.name == "proxmox-extra" and t.is_alive())


def test_a_read_abandoned_at_its_deadline_makes_no_further_call(sim):
    reader = reader_for(sim, proxmox_timeout=5)
    reader.read()  # connected; the next read's first call is slow
    sim.set_faults(latency_ms=800, path="/cluster/resources$")
    sim.reset_stats()
    reader.deadline = 0.3
    with pytest.raises(RefreshFailed, match="did not finish"):
        reader.read()
    time.sleep(1.2)  # the first call has its answer by now: before the fix, /storage followed it
    assert set(sim.requests_by_path) == {"/api2/json/cluster/resources"}


def test_dripping_nodes_cannot_collect_threads(sim):
    # Four of eight nodes send their storage a byte every 0.2 s: never done within PROXMOX_TIMEOUT.
    sim.set_faults(drip=True, path="/nodes/pve[1-4]/storage$")
    reader = reader_for(sim, proxmox_timeout=1, exact_available=True)
    before = extra_threads()
    for _ in range(5):
        reader.read()  # each read gives up the dripping calls after PROXMOX_TIMEOUT
    # One thread left per dripping node, whatever the number of reads (before the fix: 4 more per read, 20).
    assert extra_threads() - before <= 4 <= MAX_CALL_THREADS
    fence, outcomes = reader.storage_outcomes()
    assert fence is None  # read outside any fence: a lone process's
    assert {n: reason for n, (reason, _) in outcomes.items()} == {
        **{f"pve{i}": "busy" for i in range(1, 5)}, **{f"pve{i}": None for i in range(5, 9)}}
    # The per-node reads share the bound: a node with a call still open gets no other; the others do.
    calls = {node: (lambda api, node=node: api.nodes(node).disks.lvmthin.get()) for node in ("pve1", "pve5")}
    answers = reader.read_nodes(calls, 2, node_of=lambda key: key)
    assert type(answers["pve1"]).__name__ == "ProxmoxBusy" and isinstance(answers["pve5"], list)


def test_the_limit_holds_when_more_nodes_drip_than_it_allows(tmp_path):
    with Simulator(nodes=16, datastores=2, drift=False, state_dir=str(tmp_path), auth_delay=0.01) as many:
        many.set_faults(drip=True, path="/nodes/[^/]+/storage$")
        reader = reader_for(many, proxmox_timeout=1, exact_available=True)
        before = extra_threads()
        for _ in range(2):
            reader.read()
        assert extra_threads() - before == MAX_CALL_THREADS  # 16 nodes, one thread each without the limit
        # The second read: 8 nodes still held (busy), 4 asked on the 4 threads left, 4 never started (timeout).
        reasons = [reason for reason, _ in reader.storage_outcomes()[1].values()]
        assert (reasons.count("busy"), reasons.count("timeout")) == (8, 8)


# -- a password login: one, shared by the refresh and the per-node reads, and bounded like their calls ------

TICKET = "/api2/json/access/ticket"


def password_reader(sim, **settings):
    """A Reader logging in with the password (a ticket), not yet logged in."""
    settings = {"proxmox_password": sim.password, **settings}
    return Reader(reader_for(sim)._config.replace(proxmox_token_name="", proxmox_token_value="", **settings))


def lvmthin(api, node="pve1"):
    return api.nodes(node).disks.lvmthin.get()


def test_a_hanging_login_holds_a_per_node_read_no_longer_than_its_limit(sim):
    reader = password_reader(sim, proxmox_timeout=6)
    sim.set_faults(hang=True, path="/access/ticket$")  # the ticket's answer never comes (until cleared)
    started = time.monotonic()
    answers = reader.read_nodes({"pve1": lvmthin}, 1.0, node_of=lambda key: key)
    took = time.monotonic() - started
    # Before the fix the per-node read logged in on its caller's thread, unbounded: PROXMOX_TIMEOUT (6 s) later.
    assert took < 1.0 + 1.5, took
    assert isinstance(answers["pve1"], TimeoutError)
    sim.clear_faults()
    time.sleep(0.2)  # the hung login ends with the fault: it logged in; the next read uses that ticket
    sim.reset_stats()
    assert isinstance(reader.read_nodes({"pve1": lvmthin}, 6.0, node_of=lambda key: key)["pve1"], list)
    assert TICKET not in sim.requests_by_path


def test_a_refresh_and_a_per_node_read_started_together_log_in_once(sim):
    reader = password_reader(sim, proxmox_timeout=5)
    sim.set_faults(latency_ms=400, path="/access/ticket$")  # a slow login: both want it while it is under way
    start, answers = threading.Barrier(2), {}

    def nodes():
        start.wait()
        answers.update(reader.read_nodes({"pve1": lvmthin, "pve2": lambda api: lvmthin(api, "pve2")}, 5.0,
                                         node_of=lambda key: key))

    thread = threading.Thread(target=nodes)
    thread.start()
    start.wait()
    assert len(reader.read()) > 0
    thread.join(10)
    assert all(isinstance(answer, list) for answer in answers.values()) and len(answers) == 2
    assert sim.requests_by_path[TICKET] == 1  # before the fix: 2, the per-node read's own login beside the refresh's


def test_a_failed_login_is_shared_by_the_calls_that_waited_for_it(sim):
    reader = password_reader(sim, proxmox_timeout=5, proxmox_password="wrong-password")
    calls = {f"pve{i}": (lambda api, node=f"pve{i}": lvmthin(api, node)) for i in range(1, 5)}
    answers = reader.read_nodes(calls, 5.0, node_of=lambda key: key)
    assert {type(answer).__name__ for answer in answers.values()} == {"AuthenticationError"}
    assert sim.requests_by_path[TICKET] == 1  # one refused login for the batch, not one per call
