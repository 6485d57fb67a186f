"""The Reader's calls bounded (issue 22, items 2 and 11): a read given up at its deadline makes no further
call, and answers that drip cannot collect threads and sockets, for the refresh's extra round and the
per-node reads together."""

import threading
import time

import pytest

from pve_datastore_exporter.calls import MAX_CALL_THREADS
from pve_datastore_exporter.config import Config
from pve_datastore_exporter.proxmox import Reader
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
    sim.set_faults(drip=True, path="/nodes/[^/]+/storage$")  # 8 nodes, a byte every 0.2 s: never done in time
    reader = reader_for(sim, proxmox_timeout=1, exact_available=True)
    before = extra_threads()
    for _ in range(4):
        reader.read()  # each read gives up the dripping calls after PROXMOX_TIMEOUT
    assert extra_threads() - before <= MAX_CALL_THREADS  # before the fix: 8 more per read (32)
    outcomes = reader.storage_outcomes()
    assert set(outcomes) == {f"pve{i}" for i in range(1, 9)}
    assert {reason for reason, _ in outcomes.values()} == {"busy"}  # the last read asked no one
    # The per-node reads share the bound: with every thread held, they ask no one either.
    answers = reader.read_nodes({"pve1": lambda api: api.nodes("pve1").disks.lvmthin.get()}, 1)
    assert type(answers["pve1"]).__name__ == "Busy"
