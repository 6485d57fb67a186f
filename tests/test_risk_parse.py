"""The per-node reads' parsers on captured payloads (docs/proxmox-api.md#risk): fields, units, joins and quirks."""

import json
from pathlib import Path

import pytest

from pve_datastore_exporter.parse import parse_storage_config
from pve_datastore_exporter.parse_risk import (
    can_see_guest_disks,
    parse_content,
    parse_disks,
    parse_lvmthin,
    parse_zfs,
    provisioned_targets,
)
from pve_datastore_exporter.records import Datastore, NodeFigures

DATA = json.loads((Path(__file__).parent / "data" / "risk_payloads.json").read_text())
STORAGE = [{"storage": "local-lvm", "type": "lvmthin", "vgname": "pve", "thinpool": "data", "content": "images,rootdir"},
           {"storage": "cold", "type": "lvmthin", "vgname": "vg-cold", "thinpool": "data", "content": "images"},
           {"storage": "local-zfs", "type": "zfspool", "pool": "rpool/data", "content": "images,rootdir"},
           {"storage": "nas", "type": "nfs", "content": "images", "shared": 1}]


def configured():
    return list(parse_storage_config(STORAGE).values())


def test_the_storage_config_names_what_backs_each_datastore():
    assert {d.id: d.pool for d in configured()} == {"local-lvm": "pve/data", "cold": "vg-cold/data",
                                                    "local-zfs": "rpool/data", "nas": ""}


def test_thin_pools_are_joined_by_vg_and_lv_and_an_unbacked_one_is_kept():
    pools = {f"{p.vg}/{p.lv}": p for p in parse_lvmthin(DATA["lvmthin"], "pve1", configured())}
    assert pools["pve/data"].datastore == "local-lvm"
    assert (pools["pve/data"].metadata_size, pools["pve/data"].metadata_used) == (16106127360, 333396836)
    assert pools["vg-spare/scratch"].datastore == "" and pools["vg-spare/scratch"].size == 274877906944  # a string count
    # Inactive: Proxmox's 0 used is no figure.
    assert pools["vg-cold/data"].active is False and pools["vg-cold/data"].datastore == "cold"


def test_zpools_frag_is_a_ratio_and_dedup_a_number():
    pools = {p.name: p for p in parse_zfs(DATA["zfs"], "pve1")}
    assert pools["tank"].frag == 0.31 and pools["tank"].dedup == 1.25 and pools["tank"].health == "DEGRADED"
    assert pools["fresh"].frag == 0  # ZFS's "-" (unknown) arrives as 0
    assert pools["rpool"].free == pools["rpool"].size - pools["rpool"].alloc


def test_numbers_copied_as_text_are_numbers():
    pool = parse_zfs([{"name": "t", "size": "10", "alloc": "4", "free": "6", "frag": "7", "dedup": "1.50", "health": "ONLINE"}], "n")[0]
    assert (pool.size, pool.frag, pool.dedup) == (10, 0.07, 1.5)
    disk = parse_disks([{"devpath": "/dev/sda", "type": "ssd", "size": 1, "health": "PASSED", "wearout": "97"}], "n")[0]
    assert disk.life_left == 0.97


def test_disks_health_and_wear_with_unknown_and_na_as_none():
    disks = {d.devpath: d for d in parse_disks(DATA["disks"], "pve1")}
    assert "/dev/sde1" not in disks  # a partition is no disk
    assert disks["/dev/nvme0n1"].healthy is True and disks["/dev/nvme0n1"].life_left == 0.97
    assert disks["/dev/sdb"].healthy is False and disks["/dev/sdb"].life_left is None  # "FAILED!", HDD "N/A"
    assert disks["/dev/sdc"].healthy is None  # UNKNOWN: smartctl skipped, failed or timed out
    assert disks["/dev/sdd"].healthy is True  # SAS says OK
    assert disks["/dev/sde"].life_left == 0.06


def test_provisioned_sums_guests_disks_only_and_takes_approximate_size():
    assert parse_content(DATA["content_lvmthin"], "local-lvm", "pve1").bytes == 45311066112  # the facts' sum
    # qcow2 (size), PVE 9.1.5's approximate-size for an inactive LV; the ISO and the backup are not guests' disks.
    assert parse_content(DATA["content_dir_pve9"], "local", "pve1").bytes == 34359738368 + 10737418240


@pytest.mark.parametrize("name, datastore, visible", [
    ("permissions_auditor", "local-lvm", False),  # PVEAuditor: guests' volumes silently filtered
    ("permissions_storage_admin", "local-lvm", True),  # Datastore.Allocate on the datastore itself
    ("permissions_storage_admin", "cold", False),  # /storage's is not propagated (0)
    ("permissions_vm_disk", "cold", True),  # Datastore.Audit (from /) and VM.Config.Disk on /vms
    # VM.Config.Disk on /vms itself, not propagated: Proxmox checks it on /vms/<owner>, where it is not held.
    ("permissions_vm_disk_on_vms_only", "cold", False),
])
def test_whether_the_token_can_see_guests_disks(name, datastore, visible):
    assert can_see_guest_disks(DATA[name], datastore) is visible


@pytest.mark.parametrize("payload, parser", [
    ({"errors": b"<html>"}, lambda p: parse_lvmthin(p, "pve1", [])),
    ([{"lv": "data", "vg": "pve", "lv_size": "lots", "metadata_size": 1}], lambda p: parse_lvmthin(p, "pve1", [])),
    ([{"name": "tank", "size": 1, "alloc": 1, "free": 0, "frag": 1, "dedup": "1.00x", "health": "ONLINE"}],
     lambda p: parse_zfs(p, "pve1")),
    ([{"name": "tank", "size": 1, "alloc": 1, "free": 0, "frag": "-", "dedup": 1, "health": "ONLINE"}],
     lambda p: parse_zfs(p, "pve1")),
    ([{"devpath": "/dev/sda", "size": -5}], lambda p: parse_disks(p, "pve1")),
    (None, lambda p: can_see_guest_disks(p, "x")),
])
def test_an_answer_that_is_not_one_is_a_value_error(payload, parser):
    with pytest.raises(ValueError):
        parser(payload)


def test_provisioned_targets_thin_capable_active_online_and_shared_once():
    def ds(i, kind, shared=False, content="images", nodes=("pve1", "pve2")):
        figures = tuple(NodeFigures(n, 1, 0, 1, active=n != "pve3") for n in nodes)
        return Datastore(i, type=kind, shared=shared, content=content, nodes=figures)

    datastores = [ds("thin", "lvmthin", nodes=("pve1", "pve2", "pve3")), ds("ceph", "rbd", shared=True),
                  ds("isos", "dir", content="iso"), ds("pbs", "pbs", shared=True, content="backup"),
                  ds("../../access", "lvmthin")]  # no storage ID: never put into a URL
    assert provisioned_targets(datastores, {"pve1", "pve2", "pve3"}) == [("thin", "pve1"), ("thin", "pve2"), ("ceph", "pve1")]
    assert provisioned_targets(datastores, {"pve2"}) == [("thin", "pve2"), ("ceph", "pve2")]
