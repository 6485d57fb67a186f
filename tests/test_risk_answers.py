"""The per-node reads in the seed's answers: GET /api/datastores' keys, the page (Korean and English), `list`."""

import dataclasses

import pytest

from pve_datastore_exporter.formatting import format_table
from pve_datastore_exporter.records import Disk, Provisioned, ThinPool, ZfsPool
from pve_datastore_exporter.store import Store

from .factories import FakeReader, cluster, config, record
from .servers import Exporter

NOW = 1_700_000_000.0
READS = {
    "pools": {"pve1": [ThinPool("pve1", "pve", "data", 1000, 100, 1000, 930, datastore="local-lvm"),
                       ZfsPool("pve1", "tank", 4000, 3400, 600, 0.31, 1.0, "DEGRADED")],
              "pve2": [ThinPool("pve2", "pve", "data", 1000, 100, 1000, 100, datastore="local-lvm")]},
    "disks": {"pve1": [Disk("pve1", "/dev/sda", "ssd", "INTEL SSDSC2KB960G8", "PHYF1", 960, "PASSED", True, 0.07),
                       Disk("pve1", "/dev/sdb", "hdd", "ST4000NM0033", "Z1Z0", 4000, "FAILED!", False, None)]},
    "provisioned": {"pve1": [Provisioned("local-lvm", "pve1", 1500), Provisioned("ceph-vm", "pve1", 6000)],
                    "pve2": ("forbidden", "403 'no VM.Config.Disk'")},
}


@pytest.fixture
def exporter(tmp_path):
    records = [dataclasses.replace(r, pool="pve/data" if r.id == "local-lvm" else "")
               for r in cluster()] + [dataclasses.replace(record("tank", "zfspool", 3000, 2500), pool="tank/data")]
    records = [dataclasses.replace(r, nodes=tuple(dataclasses.replace(n, used=800) for n in r.nodes))
               if r.id == "local-lvm" else r for r in records]  # 80 % used: overcommit with 150 % promised
    e = Exporter(config(tmp_path), FakeReader(records))
    e.service.refresh()
    store = Store(e.config.database_url)
    for read, outcomes in READS.items():
        generation, _ = store.save_node_reads(read, outcomes, NOW, 900)
    e.service.display.follow(generation)
    yield e
    e.close()


def test_the_api_shows_the_figures_per_datastore_and_node_and_the_risks_in_words(exporter):
    answer = exporter.get("/api/datastores").json()
    by_id = {d["id"]: d for d in answer["datastores"]}
    lvm = by_id["local-lvm"]
    nodes = {n["node"]: n for n in lvm["nodes"]}
    assert (nodes["pve1"]["thin_metadata_size"], nodes["pve1"]["thin_metadata_used"], nodes["pve1"]["provisioned"]) == (1000, 930, 1500)
    assert nodes["pve2"]["provisioned"] is None  # forbidden: absent, never 0
    assert lvm["thin_metadata_fraction"] == 0.93 and lvm["provisioned"] == 1500 and lvm["overcommit"] == 1.5
    assert lvm["risks"] == ["the thin pool's metadata on pve1 is 93.0 % full",
                            "150.0 % of its size on pve1 is promised to guests' disks"]
    tank = by_id["tank"]
    assert tank["zpool_health"] == "DEGRADED" and tank["nodes"][0]["zpool"] == "tank"
    assert "ZFS pool tank on pve1 is DEGRADED" in tank["risks"]
    # A dir may hold qcow2, but "local" holds no images or rootdir: nothing to promise, so no provisioned key.
    assert "zpool" not in by_id["local"]["nodes"][0] and "provisioned" not in by_id["local"]["nodes"][0]
    ceph = by_id["ceph-vm"]  # shared, read once on pve1: the figure holds on every node, its risk said once
    assert [n["provisioned"] for n in ceph["nodes"]] == [6000, 6000] and ceph["overcommit"] == 1.2
    assert "thin_metadata_size" not in by_id["ceph-vm"]["nodes"][0]
    assert answer["disk_risks"] == ["disk /dev/sda on pve1 (INTEL SSDSC2KB960G8) has 7.0 % of its life left",
                                    "disk /dev/sdb on pve1 (ST4000NM0033) fails its SMART check"]
    reads = {(r["read"], r["node"]): r for r in answer["node_reads"]}
    assert reads[("provisioned", "pve2")]["reason"] == "forbidden" and reads[("pools", "pve1")]["last_success"] == NOW


def test_the_page_says_the_risks_in_korean_and_english_with_the_fill_levels(exporter):
    english = exporter.get("/", headers={"Accept-Language": "en"}).text
    assert "the thin pool&#39;s metadata on pve1 is 93.0 % full" in english
    assert 'class="risk-note usage-critical"' in english  # over 90 %: the page's red
    assert "disk /dev/sdb on pve1 (ST4000NM0033) fails its SMART check" in english
    korean = exporter.get("/", headers={"Accept-Language": "ko"}).text
    assert "pve1의 씬 풀 메타데이터가 93.0 % 찼습니다" in korean
    assert "pve1의 ZFS 풀 tank 상태가 DEGRADED입니다" in korean
    assert "pve1의 디스크 /dev/sda (INTEL SSDSC2KB960G8)의 남은 수명이 7.0 %입니다" in korean


def test_list_prints_the_risks(exporter):
    table = format_table(exporter.service.view)
    assert "critical: local-lvm: the thin pool's metadata on pve1 is 93.0 % full" in table
    assert "critical: disk /dev/sdb on pve1 (ST4000NM0033) fails its SMART check" in table
