"""Golden files: the whole exposition and the seed's JSON. Regenerate with `make golden`."""

import dataclasses
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from pve_datastore_exporter.answers import datastores_answer
from pve_datastore_exporter.metrics import Exposition
from pve_datastore_exporter.records import Disk, Provisioned, ThinPool, ZfsPool
from pve_datastore_exporter.service import Service
from pve_datastore_exporter.store import Store

from .factories import FakeReader, cluster, config, record
from .needs import require_tool

DATA = Path(__file__).parent / "data"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def golden(name: str, actual: str) -> None:
    path = DATA / name
    if UPDATE:
        path.write_text(actual)
    assert path.exists(), f"{path} is missing: run `make golden`"
    assert actual == path.read_text(), f"{name} changed: check the diff, then `make golden`"


# What the per-node reads stored (node_reads.py): a thin pool backing local-lvm and one backing nothing, a
# degraded zpool under "tank", an SSD wearing out, an HDD whose SMART says nothing, provisioned bytes,
# and one read failing on pve2.
POOLS = {"pve1": [ThinPool("pve1", "pve", "data", 1000, 100, 64, 58, datastore="local-lvm"),
                  ThinPool("pve1", "vg-spare", "scratch", 500, 0, 32, 0, active=False),
                  ZfsPool("pve1", "tank", 4000, 3400, 600, 0.31, 1.25, "DEGRADED")],
         "pve2": ("http_5xx", "595 'No route to host'")}
DISKS = {"pve1": [Disk("pve1", "/dev/nvme0n1", "nvme", "Samsung SSD 980 PRO 1TB", "S5GX", 1000, "PASSED", True, 0.07),
                  Disk("pve1", "/dev/sdb", "hdd", "ST4000NM0033", "Z1Z0", 4000, "UNKNOWN", None, None)]}
PROVISIONED = {"pve1": [Provisioned("local-lvm", "pve1", 1500)]}


@pytest.fixture
def service(tmp_path):
    records = cluster() + [record("nas-backup", "nfs", 9000, 1000, shared=True, nodes=("pve1", "pve2"),
                                  content="backup,iso"), record("tank", "zfspool", 3000, 2500)]
    records = [dataclasses.replace(r, pool={"local-lvm": "pve/data", "tank": "tank/data"}.get(r.id, "")) for r in records]
    c = config(tmp_path, hdd_datastore="ceph-vm")
    store = Store(c.database_url)
    s = Service(c, FakeReader(records), store, clock=lambda: 1_700_000_000.0)
    s.start()
    s.refresh()
    for read, outcomes in (("pools", POOLS), ("disks", DISKS), ("provisioned", PROVISIONED)):
        generation, _ = store.save_node_reads(read, outcomes, 1_700_000_000.0, 900)
    s.display.follow(generation)
    return s


def test_exposition_golden(service):
    exposition = Exposition(process=False)
    service.subscribe(exposition)
    exposition.failures.labels("timeout").inc()
    golden("golden_metrics.txt", b"".join(exposition.scrape(use_gzip=False)).decode())


def test_promtool_finds_nothing_to_say_about_the_golden_exposition():
    promtool = require_tool("promtool")
    text = (DATA / "golden_metrics.txt").read_bytes()
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert done.returncode == 0 and done.stdout.strip() == b"" and done.stderr.strip() == b"", done


def test_promtool_accepts_a_live_exposition_with_process_metrics(service):
    promtool = require_tool("promtool")
    exposition = Exposition()
    service.subscribe(exposition)
    done = subprocess.run([promtool, "check", "metrics"], input=b"".join(exposition.scrape(False)), capture_output=True, timeout=30)
    assert done.returncode == 0, done


def test_seed_json_golden(service):
    answer = datastores_answer(service.datastores(), service.age())
    text = json.dumps(answer, indent=2, ensure_ascii=False) + "\n"
    text = re.sub(r'"updated_at": "[^"]+"', '"updated_at": "<timestamp>"', text)
    golden("golden_datastores.json", text)
