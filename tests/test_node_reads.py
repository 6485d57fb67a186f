"""The per-node reads end to end: the simulated Proxmox over HTTPS, the real Reader, a real SQLite store.

What is checked: the figures per node and datastore and their joins, UNKNOWN and "N/A" as no series, a 403
and an offline node counted without harming the refresh, a change seen at the next read, the last good
figures kept while a node fails and dropped after the bound, followers reading the same figures.
"""

import pytest

from pve_datastore_exporter.config import Config
from pve_datastore_exporter.metrics import render_datastores
from pve_datastore_exporter.service import Service
from pve_datastore_exporter.simulator import Simulator
from pve_datastore_exporter.store import Store

NOW = [1_700_000_000.0]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    with Simulator(nodes=3, datastores=6, drift=False, state_dir=str(tmp_path_factory.mktemp("sim")),
                   auth_delay=0.01) as simulator:
        yield simulator


@pytest.fixture
def service(sim, tmp_path):
    sim.clear_faults()
    sim.cluster.underneath.set_role("PVEAuditor")
    env = sim.env()
    config = Config(proxmox_host=env["PROXMOX_HOST"], proxmox_user=env["PROXMOX_USER"],
                    proxmox_token_name=env["PROXMOX_TOKEN_NAME"], proxmox_token_value=env["PROXMOX_TOKEN_VALUE"],
                    proxmox_ca_bundle=env["PROXMOX_CA_BUNDLE"], proxmox_timeout=2, proxmox_cluster_name="sim",
                    database_url=f"sqlite:///{tmp_path}/db.sqlite", pools_interval=300, disks_interval=600,
                    provisioned_interval=600)
    s = Service(config, store=Store(config.database_url), clock=lambda: NOW[0])
    s.start()
    s.refresh()
    yield s
    sim.clear_faults()


def series(view, name):
    """{labels text: value} of one family in the exposition of `view`."""
    found = {}
    for line in render_datastores(view).decode().splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name):].rsplit(" ", 1)
            found[labels] = float(value)
    return found


def reads(view):
    return {(r.read, r.node): r for r in view.risk.reads}


def test_pools_per_node_joined_to_datastores_and_a_change_seen_at_the_next_read(sim, service):
    sim.cluster.underneath.set_thin_metadata("local-lvm", 0.93, node="pve1")
    sim.cluster.underneath.set_zpool("tank", node="pve2", health="DEGRADED")
    service.node_reads.run("pools")
    view = service.view
    thin = {(p.node, p.vg, p.lv): p for p in view.risk.thin_pools}
    pve1 = thin[("pve1", "pve", "data")]
    assert pve1.datastore == "local-lvm" and 0.92 < pve1.metadata_used / pve1.metadata_size <= 0.93
    assert thin[("pve1", "vg-spare", "scratch")].datastore == ""  # backs no datastore: kept, datastore=""
    assert {n for n, *_ in thin} == {"pve1", "pve2", "pve3"}
    zfs = {(p.node, p.name): p for p in view.risk.zfs_pools}
    assert zfs[("pve2", "tank")].health == "DEGRADED" and ("pve1", "tank") not in zfs  # tank is not on pve1
    info = series(view, "pve_datastore_zfs_pool_info")
    assert '{pve_cluster="sim",datastore="tank",node="pve2",pool="tank"}' in info
    state = series(view, "pve_datastore_zfs_pool_state")
    assert state['{pve_cluster="sim",node="pve2",pool="tank",state="DEGRADED"}'] == 1
    assert state['{pve_cluster="sim",node="pve2",pool="tank",state="ONLINE"}'] == 0

    sim.cluster.underneath.set_thin_metadata("local-lvm", 0.5, node="pve1")
    service.node_reads.run("pools")
    pve1 = next(p for p in service.view.risk.thin_pools if (p.node, p.vg) == ("pve1", "pve"))
    assert 0.49 < pve1.metadata_used / pve1.metadata_size <= 0.5
    assert reads(service.view)[("pools", "pve1")].last_success == NOW[0]


def test_disks_unknown_and_na_are_no_series_and_a_hung_smartctl_is_counted(sim, service):
    sim.cluster.underneath.set_disk("pve3", "/dev/sda", wearout=7)
    sim.cluster.underneath.set_disk("pve2", "/dev/sdb", health="FAILED!")
    sim.cluster.underneath.set_disk("pve1", "/dev/sda", hang=True)
    sim.cluster.underneath.set_pve(9, smart_timeout=0.2)
    try:
        service.node_reads.run("disks")
        view = service.view
        healthy = series(view, "pve_datastore_disk_healthy")
        assert healthy['{pve_cluster="sim",node="pve2",devpath="/dev/sdb"}'] == 0
        assert '{pve_cluster="sim",node="pve1",devpath="/dev/sda"}' not in healthy  # PVE 9: UNKNOWN after its timeout
        life = series(view, "pve_datastore_disk_life_left_ratio")
        assert life['{pve_cluster="sim",node="pve3",devpath="/dev/sda"}'] == 0.07
        assert not any("/dev/sdb" in labels for labels in life)  # an HDD's "N/A"
        sim.cluster.underneath.set_pve(8, proxy_cut=0.3)  # PVE 8: the hung smartctl stalls the call until pveproxy cuts it
        service.node_reads.run("disks")
        pve1 = reads(service.view)[("disks", "pve1")]
        assert pve1.reason == "http_5xx" and "596" in pve1.error
        assert any(d.node == "pve1" for d in service.view.risk.disks)  # its last good figures stay
    finally:
        sim.cluster.underneath.set_disk("pve1", "/dev/sda", hang=False)
        sim.cluster.underneath.set_pve(9)


def test_a_403_and_an_offline_node_are_counted_and_the_refresh_is_unharmed(sim, service):
    sim.set_faults(status=403, reason="Permission check failed (/, Sys.Audit)", path="/disks/")
    sim.cluster.set_node_online("pve3", False)
    try:
        service.refresh()  # pve3 now shows as unknown in the snapshot
        sim.reset_stats()
        service.node_reads.run("pools")
        assert service.refresh() > 0 and service.view.refresh.ok
    finally:
        sim.cluster.set_node_online("pve3", True)
    r = reads(service.view)
    assert r[("pools", "pve1")].reason == "forbidden" and dict(r[("pools", "pve1")].failures) == {"forbidden": 1}
    assert r[("pools", "pve3")].reason == "offline"
    assert not any("/nodes/pve3/" in path for path in sim.requests_by_path)  # counted, not asked
    failures = series(service.view, "pve_datastore_node_read_failures_total")
    assert failures['{pve_cluster="sim",read="pools",node="pve1",reason="forbidden"}'] == 1
    assert failures['{pve_cluster="sim",read="pools",node="pve3",reason="offline"}'] == 1


def test_a_failing_node_keeps_its_figures_until_the_bound_then_they_are_dropped(sim, service):
    service.node_reads.run("pools")
    assert any(p.node == "pve2" for p in service.view.risk.thin_pools)
    sim.set_faults(malformed=True, path="/nodes/pve2/disks/")
    NOW[0] += 600
    service.node_reads.run("pools")
    assert reads(service.view)[("pools", "pve2")].reason == "parse"
    assert any(p.node == "pve2" for p in service.view.risk.thin_pools)  # 10 min old: still shown
    NOW[0] += 600  # 20 min since its last success: past max(3 x 300 s, 15 min)
    service.node_reads.run("pools")
    assert not any(p.node == "pve2" for p in service.view.risk.thin_pools)
    assert any(p.node == "pve1" for p in service.view.risk.thin_pools)


def test_provisioned_is_absent_and_counted_forbidden_for_an_auditor_then_read_for_an_admin(sim, service):
    service.node_reads.run("provisioned")
    assert service.view.risk.provisioned == ()
    assert reads(service.view)[("provisioned", "pve1")].reason == "forbidden"
    assert not any("/content" in path for path in sim.requests_by_path)  # a call whose answer would read 0: not made
    sim.cluster.underneath.set_role("Administrator")
    sim.cluster.underneath.set_provisioned("local-lvm", 1.5, node="pve1")
    service.node_reads.run("provisioned")
    promised = {(p.datastore, p.node): p.bytes for p in service.view.risk.provisioned}
    size = next(n.size for n in service.view.row("local-lvm").nodes if n.node == "pve1")
    assert abs(promised[("local-lvm", "pve1")] / size - 1.5) < 0.01
    assert [n for d, n in promised if d == "ceph-vm"] == ["pve1"]  # shared: read on one node


def test_a_follower_loads_the_same_figures(sim, service, tmp_path):
    service.node_reads.run("pools")
    _, stored = Store(f"sqlite:///{tmp_path}/db.sqlite").load()
    assert stored.risk == service.view.risk and stored.risk.thin_pools


def test_a_node_without_lvm_or_zfs_and_an_inactive_thin_pool_are_no_failures_and_no_false_zeros(sim, service):
    sim.cluster.underneath.set_tools("pve3", lvm=False, zfs=False)  # zfs answers 500 "zfsutils-linux not installed"
    sim.cluster.underneath.set_thin_metadata("local-lvm", node="pve2", active=False)
    try:
        service.node_reads.run("pools")
    finally:
        sim.cluster.underneath.set_tools("pve3", lvm=True, zfs=True)
        sim.cluster.underneath.set_thin_metadata("local-lvm", node="pve2", active=True)
    r = reads(service.view)
    assert r[("pools", "pve3")].reason is None and not any(p.node == "pve3" for p in service.view.risk.thin_pools)
    used = series(service.view, "pve_datastore_thin_metadata_used_bytes")
    assert not any('node="pve2",thin_pool="pve/data"' in labels for labels in used)  # inactive: 0 is no figure
    assert any('node="pve1",thin_pool="pve/data"' in labels for labels in used)


def test_the_control_endpoint_switches_the_underneath(sim):
    import requests

    done = requests.post(sim.url + "/_sim/cluster", json=[{"op": "set_disk", "node": "pve1", "devpath": "/dev/sdb",
                                                          "health": "FAILED!"}, {"op": "set_role", "role": "nobody"}],
                         verify=sim.ca_file, timeout=5)
    assert done.status_code == 400 and "unknown role" in done.json()["error"]
    assert sim.cluster.underneath.nodes["pve1"].disks["/dev/sdb"]["health"] == "FAILED!"  # applied before the bad op
    sim.cluster.underneath.set_disk("pve1", "/dev/sdb", health="PASSED")


def test_a_datastore_the_token_cannot_see_is_absent_and_counted_while_the_others_are_read(sim, service):
    # Administrator everywhere but on local-lvm (an ACL with NoAccess there): the most specific ACL path counts.
    sim.cluster.underneath.set_role("Administrator")
    sim.reset_stats()
    sim.cluster.underneath.set_acl("/storage/local-lvm", [])
    try:
        service.node_reads.run("provisioned")
    finally:
        sim.cluster.underneath.set_acl("/storage/local-lvm", None)
    promised = {(p.datastore, p.node) for p in service.view.risk.provisioned}
    assert ("ceph-vm", "pve1") in promised and not any(d == "local-lvm" for d, _ in promised)
    pve1 = reads(service.view)[("provisioned", "pve1")]
    assert pve1.reason == "forbidden" and "'local-lvm'" in pve1.error and pve1.last_success == NOW[0]
    assert not any("/storage/local-lvm/content" in path for path in sim.requests_by_path)


def test_the_exact_available_storage_read_is_counted_per_node(sim, tmp_path):
    env = sim.env()
    config = Config(proxmox_host=env["PROXMOX_HOST"], proxmox_user=env["PROXMOX_USER"],
                    proxmox_token_name=env["PROXMOX_TOKEN_NAME"], proxmox_token_value=env["PROXMOX_TOKEN_VALUE"],
                    proxmox_ca_bundle=env["PROXMOX_CA_BUNDLE"], proxmox_timeout=2, proxmox_cluster_name="sim",
                    database_url=f"sqlite:///{tmp_path}/exact.sqlite", exact_available=True, pools_interval=0)
    s = Service(config, store=Store(config.database_url), clock=lambda: NOW[0])
    s.start()
    sim.set_faults(status=500, reason="storage 'nas-backup' is not online", path="/nodes/pve2/storage$")
    try:
        s.refresh()
        s.node_reads.tick()  # the refresh's per-node outcomes, stored on the loop's next look
    finally:
        sim.clear_faults()
    r = reads(s.view)
    assert r[("storage", "pve1")].reason is None and r[("storage", "pve1")].last_success == NOW[0]
    assert r[("storage", "pve2")].reason == "http_5xx" and "not online" in r[("storage", "pve2")].error
    assert series(s.view, "pve_datastore_node_read_failures_total")[
        '{pve_cluster="sim",read="storage",node="pve2",reason="http_5xx"}'] == 1


def test_a_replica_that_does_not_hold_the_fence_makes_no_call_and_stores_nothing(sim, service, tmp_path):
    from pve_datastore_exporter.coordination import Coordinator
    from pve_datastore_exporter.store import HeldLock, NoSignals

    # Another process on the same database, never leading: its fence (Coordinator.reading) refuses every batch.
    follower = Service(service.config, store=Store(service.config.database_url), coordinator=Coordinator(HeldLock(), NoSignals()))
    follower.start()  # the leader's snapshot: the nodes it would ask
    sim.reset_stats()
    follower.node_reads.run("pools")
    assert sim.request_count == 0 and follower.view.risk.reads == ()


def test_a_refresh_does_not_wait_for_a_batch_that_hangs_on_a_node(sim, service):
    import threading
    import time

    # pve1's disks call hangs until the read's bound (PROXMOX_TIMEOUT 2 s, a batch 3 s): a refresh meanwhile
    # must take what it takes alone (well under 1 s here), not wait for the batch's turn (the bug: ~3 s).
    sim.set_faults(hang=True, hang_seconds=5, path="/nodes/pve1/disks/")
    batch = threading.Thread(target=service.node_reads.run, args=("disks",), daemon=True)
    try:
        batch.start()
        deadline = time.monotonic() + 2
        while not any("/nodes/pve1/disks/" in path for path in sim.requests_by_path) and time.monotonic() < deadline:
            time.sleep(0.02)
        started = time.monotonic()
        assert service.refresh() > 0 and service.view.refresh.ok
        took = time.monotonic() - started
        assert batch.is_alive() and took < 1.5, f"the refresh took {took:.1f} s beside a hanging batch"
    finally:
        batch.join(5)
        sim.clear_faults()
    assert reads(service.view)[("disks", "pve1")].reason == "timeout"  # the batch ended by its own bound, counted
