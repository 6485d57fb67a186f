"""Parsing captured Proxmox payloads, quirks included (docs/proxmox-api.md#quirks-at-a-glance)."""

import json
import logging
from pathlib import Path

import pytest
from proxmoxer import ResourceException

from pve_datastore_exporter.parse import MAX_TEXT, parse, parse_cluster_name
from pve_datastore_exporter.records import NodeFigures, RefreshFailed

DATA = Path(__file__).parent / "data"


def load(name):
    return json.loads((DATA / name).read_text())["data"]


@pytest.fixture(scope="module")
def records():
    return {r.id: r for r in parse(load("cluster_resources.json"), load("storage.json"))}


def test_every_datastore_of_either_list_is_known(records):
    assert sorted(records) == ["ceph-vm", "local", "local-lvm", "nas-backup", "old-iso", "san", "tank"]


def test_shared_datastore_is_counted_once_not_per_node(records):
    ceph = records["ceph-vm"]
    assert ceph.shared is True
    assert (ceph.size, ceph.used) == (12094627905536, 2199023255552)
    assert ceph.available == 12094627905536 - 2199023255552
    assert [n.node for n in ceph.nodes] == ["pve1", "pve2", "pve3"]


def test_local_datastore_is_summed_over_its_available_nodes(records):
    local = records["local"]
    assert local.shared is False
    assert local.size == 2 * 100861726720
    assert local.used == 13478248448 + 20000000000
    assert local.available == local.size - local.used


def test_unknown_entry_has_no_sizes_and_is_not_zero(records):
    pve3 = records["local-lvm"].nodes[2]
    assert pve3 == NodeFigures(node="pve3", active=False, size=None, used=None, available=None)


def test_strings_for_numbers_and_flags_are_coerced(records):
    pve2 = records["ceph-vm"].nodes[1]
    assert pve2.active and pve2.size == 12094627905536 and pve2.used == 2199023255552


def test_disabled_datastore_comes_only_from_storage_config(records):
    old = records["old-iso"]
    assert old.enabled is False and old.nodes == () and old.size == 0 and old.type == "dir"


def test_restricted_datastore_lists_only_its_nodes(records):
    tank = records["tank"]
    assert [n.node for n in tank.nodes] == ["pve2", "pve3"]
    assert tank.size == 3985729650688 and tank.active


def test_content_lists_are_sorted_and_none_is_empty(records):
    assert records["local"].content == "backup,iso,vztmpl"
    assert records["local-lvm"].content == "images,rootdir"
    assert records["san"].content == ""


def test_datastore_unreachable_everywhere_is_inactive_with_zero_totals(records):
    nas = records["nas-backup"]
    assert nas.enabled and not nas.active and (nas.size, nas.used, nas.available) == (0, 0, 0)


def test_capacityless_iscsi_is_active_with_zero_size(records):
    san = records["san"]
    assert san.active and san.size == 0 and san.type == "iscsi"


def test_order_of_input_does_not_change_the_result():
    resources, storage = load("cluster_resources.json"), load("storage.json")
    assert parse(resources, storage) == parse(list(reversed(resources)), list(reversed(storage)))


def test_datastore_missing_from_config_takes_plugintype():
    resources = [{"type": "storage", "storage": "extra", "node": "pve1", "status": "available",
                  "plugintype": "cifs", "shared": 1, "content": "backup", "disk": 5, "maxdisk": 10}]
    (record,) = parse(resources, [])
    assert (record.type, record.shared, record.size, record.available) == ("cifs", True, 10, 5)


def test_the_storage_configuration_type_wins_over_plugintype_whatever_it_says():
    resources = [{"type": "storage", "storage": "odd", "node": "pve1", "status": "available",
                  "plugintype": "zfspool", "disk": 1, "maxdisk": 10}]
    for configured in ("dir", "unknown"):
        (record,) = parse(resources, [{"storage": "odd", "type": configured}])
        assert record.type == configured
    (record,) = parse(resources, [{"storage": "odd"}])  # no type in /storage: the nodes say it
    assert record.type == "zfspool"


@pytest.mark.parametrize("payload", [{"errors": b"<html>"}, None, "text", 42])
def test_a_body_that_is_not_a_list_is_a_parse_error(payload):
    with pytest.raises(RefreshFailed) as info:
        parse(payload, [])
    assert info.value.reason == "parse"


def test_garbage_sizes_are_a_parse_error_naming_the_first_bad_entry():
    good = {"type": "storage", "storage": "tank", "node": "pve2", "status": "available", "disk": 1, "maxdisk": 10}
    resources = [good, {"type": "storage", "storage": "x1", "node": "pve1", "status": "available",
                        "disk": "lots", "maxdisk": 10}, {**good, "node": "pve3", "disk": "bad"}]
    with pytest.raises(RefreshFailed) as info:
        parse(resources, [])
    assert info.value.reason == "parse" and "'x1'" in str(info.value)


def test_items_that_are_not_storages_are_ignored():
    resources = [{"type": "node", "node": "pve1", "id": "node/pve1"}, "junk",
                 {"type": "storage", "storage": "s1", "node": "pve1", "status": "unknown"}]
    (record,) = parse(resources, [])
    assert record.id == "s1" and not record.active


def test_a_size_past_any_disk_is_a_parse_error():
    resources = [{"type": "storage", "storage": "big", "node": "pve1", "status": "available",
                  "disk": 1, "maxdisk": 18446744073709551621}]
    with pytest.raises(RefreshFailed) as info:
        parse(resources, [])
    assert info.value.reason == "parse"


def test_ids_longer_than_the_seed_column_are_skipped():
    long_id = "a" * 101
    resources = [{"type": "storage", "storage": long_id, "node": "pve1", "status": "unknown"},
                 {"type": "storage", "storage": "ok1", "node": "pve1", "status": "unknown"}]
    assert [r.id for r in parse(resources, [{"storage": long_id, "type": "dir"}])] == ["ok1"]


def test_sizes_are_read_exactly_up_to_the_largest_column_value():
    resources = [{"type": "storage", "storage": "big", "node": "pve1", "status": "available",
                  "disk": 2**63 - 2, "maxdisk": 2**63 - 1}]
    (record,) = parse(resources, [])
    assert (record.size, record.used, record.available) == (2**63 - 1, 2**63 - 2, 1)


def test_a_local_total_past_any_column_is_a_parse_error():
    entry = {"type": "storage", "storage": "big", "status": "available", "disk": 1, "maxdisk": 2**62 + 2**61}
    with pytest.raises(RefreshFailed) as info:
        parse([{**entry, "node": "pve1"}, {**entry, "node": "pve2"}], [])
    assert info.value.reason == "parse"


class _Hanging:
    """A Proxmox client whose every call blocks until released (a body that never ends)."""

    def __init__(self, release):
        self.release = release
        self.cluster = self
        self.resources = self
        self.storage = self

    def get(self, **_):
        self.release.wait(10)
        return []


def test_stuck_calls_to_proxmox_are_bounded(tmp_path):
    import threading

    from pve_datastore_exporter.config import Config
    from pve_datastore_exporter.reader import MAX_STUCK, Reader

    release, made = threading.Event(), []
    config = Config(proxmox_host="pve1", proxmox_user="m@pve", proxmox_token_name="t", proxmox_token_value="v")
    reader = Reader(config, connect=lambda c: made.append(_Hanging(release)) or made[-1])
    reader.deadline = 0.2
    try:
        for _ in range(MAX_STUCK):
            with pytest.raises(RefreshFailed, match="within 0.2 s"):
                reader.read()
        with pytest.raises(RefreshFailed, match="still not answered") as info:
            reader.read()
        assert info.value.reason == "timeout" and len(made) == MAX_STUCK  # no new client, no new thread
    finally:
        release.set()


# -- text from Proxmox: invalid, absurdly long, or forging log lines (docs/proxmox-api.md#text-from-proxmox) --

ENTRY = {"type": "storage", "storage": "tank", "node": "pve1", "status": "available", "plugintype": "zfspool",
         "content": "images,rootdir", "disk": 1, "maxdisk": 10}


@pytest.mark.parametrize("resources,storage", [
    ([{**ENTRY, "node": "pve\ud800x"}], []),  # JSON "\ud800" decodes to a lone surrogate
    ([ENTRY], [{"storage": "tank", "type": "dir\udfff"}]),
    ([{**ENTRY, "content": "images,\udc00"}], []),
    ([{**ENTRY, "storage": "ta\ud83dnk"}], []),
    ([ENTRY], [{"storage": "tank", "type": "dir", "path": "/mnt/\udfff"}]),  # any string of an entry
    ([{**ENTRY, "node": "pve\x001"}], []),  # NUL: no PostgreSQL text takes it
])
def test_text_no_output_can_encode_is_a_parse_error(resources, storage):
    with pytest.raises(RefreshFailed) as info:
        parse(resources, storage)
    assert info.value.reason == "parse" and "not valid text" in str(info.value)
    str(info.value).encode()  # the message itself is fit for the log, the DB and the answers


def too_long(field, length):
    return "x" * length if field != "content" else "images," + "i" * length


@pytest.mark.parametrize("field,limit", list(MAX_TEXT.items()))
def test_every_text_field_has_one_limit_and_an_entry_past_it_is_left_out(field, limit, caplog):
    resources = [{**ENTRY, "node": "pve2"}, {**ENTRY, field: too_long(field, limit + 1)}]
    storage = [{"storage": "tank", "type": "zfspool"}, {"storage": "other", "type": "dir", field: too_long(field, limit + 1)}]
    found = {r.id: r for r in parse(resources, storage)}
    assert "other" not in found and [n.node for n in found["tank"].nodes] == ["pve2"]
    assert "left out" in caplog.text and f"over {limit} characters" in caplog.text
    at_limit = too_long(field, limit)[:limit]
    kept = ([{**ENTRY, field: at_limit}], []) if field != "type" else ([ENTRY], [{"storage": "tank", "type": at_limit}])
    (record,) = parse(*kept)
    assert record.active


def test_a_node_name_of_200000_characters_is_left_out_and_logged_briefly(caplog):
    resources = [ENTRY, {**ENTRY, "node": "n" * 200_000}]
    (record,) = parse(resources, [])
    assert [n.node for n in record.nodes] == ["pve1"]
    assert len(caplog.text) < 1000 and "200000 characters" in caplog.text


def test_text_that_is_left_out_is_logged_escaped_never_forging_a_line(caplog):
    forged = "a" * 101 + "\n2030-01-01 00:00:00,000 ERROR pve_datastore_exporter.http.app: forged line"
    (record,) = parse([ENTRY, {**ENTRY, "storage": forged}], [{"storage": forged, "type": "dir\x1b[2J"}])
    assert record.id == "tank"
    assert len(caplog.records) == 2 and all("\n" not in r.getMessage() and "\x1b" not in r.getMessage()
                                            for r in caplog.records)
    assert "\\n2030-01-01" in caplog.text


def test_a_type_that_is_not_text_is_no_type():
    (record,) = parse([{**ENTRY, "plugintype": ["z"] * 1000}], [{"storage": "tank", "type": {"a": 1}}])
    assert record.type == "unknown"


# -- the cluster's name (docs/proxmox-api.md#cluster-status) ----------------------------------------

CLUSTER_STATUS = [{"type": "node", "id": "node/pve2", "name": "pve2", "nodeid": 2, "ip": "10.0.0.12", "local": 0,
                   "online": 1, "level": ""},
                  {"type": "cluster", "id": "cluster", "name": "prod", "nodes": 2, "version": 4, "quorate": 1},
                  {"type": "node", "id": "node/pve1", "name": "pve1", "nodeid": 1, "ip": "10.0.0.11", "local": 1,
                   "online": 1, "level": ""}]
STANDALONE = [{"type": "node", "id": "node/lonely", "name": "lonely", "nodeid": 0, "ip": "10.0.0.9", "local": "1",
               "online": 1, "level": ""}]


@pytest.mark.parametrize("payload,name", [
    (CLUSTER_STATUS, "prod"),
    (STANDALONE, "lonely"),  # no cluster entry: the local node's name
    ([{**STANDALONE[0], "local": 0}], None),
    ([{"type": "cluster", "name": 5}], None),
    ([{"type": "cluster", "name": "p\ud800"}], None),
    ([{"type": "cluster", "name": "p" * 101}], None),
    ({"errors": b""}, None),
    (None, None),
])
def test_the_cluster_name_is_the_cluster_entrys_or_a_standalone_hosts(payload, name):
    assert parse_cluster_name(payload) == name


def name_reader(answer, clock, **settings):
    from .test_exact_available import fake_api, make_reader

    api = fake_api()
    api.answers["/cluster/status"] = answer
    return make_reader(api, clock, **{"exact_available": False, "proxmox_cluster_name": "", **settings}), api


def test_the_name_is_read_at_the_first_refresh_then_once_an_hour():
    now = [1000.0]
    reader, api = name_reader(CLUSTER_STATUS, lambda: now[0])
    assert reader.cluster == "pve1"  # PROXMOX_HOST's host until it is read
    reader.read()
    assert reader.cluster == "prod" and api.calls.count("/cluster/status") == 1
    now[0] += 3599
    reader.read()
    assert api.calls.count("/cluster/status") == 1 and len(api.calls) == 5
    now[0] += 1
    reader.read()
    assert api.calls.count("/cluster/status") == 2


FORBIDDEN = ResourceException(403, "Forbidden", "Permission check failed (/, Sys.Audit)")


def test_without_sys_audit_the_host_stands_in_and_it_is_said_once(caplog):
    now = [0.0]
    reader, api = name_reader(FORBIDDEN, lambda: now[0], proxmox_host="[fd00::1]:8006")
    for _ in range(3):
        assert len(reader.read()) == 7  # never a failed refresh
        now[0] += 3600
    assert reader.cluster == "fd00::1" and api.calls.count("/cluster/status") == 3
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "403 'Permission check failed (/, Sys.Audit)'" in warning and "PROXMOX_HOST's host" in warning


def test_a_name_once_read_is_kept_when_it_can_no_longer_be_read(caplog):
    now, answers = [0.0], [CLUSTER_STATUS]
    reader, _ = name_reader(lambda: answers[0], lambda: now[0])
    reader.read()
    answers[0], now[0] = FORBIDDEN, 3600.0
    reader.read()
    assert reader.cluster == "prod" and "the last name read" in caplog.text


def test_a_name_read_refuses_to_store_over_another_clusters_and_an_unread_one_relabels_nothing():
    reader, _ = name_reader(CLUSTER_STATUS, lambda: 0.0)  # PROXMOX_HOST pve1, PROXMOX_CLUSTER_NAME unset
    assert (reader.label(""), reader.label("other")) == ("pve1", "other")  # unread: the stored name stands
    reader.read()
    assert reader.label("prod") == reader.label("") == "prod"
    assert reader.label("pve1") == "prod"  # the stand-in stored before the name was read gives way
    assert reader.label("other") is None  # another cluster's datastores: never stored over


def test_a_configured_name_is_never_asked_for():
    reader, api = name_reader(CLUSTER_STATUS, lambda: 0.0, proxmox_cluster_name="mine")
    reader.read()
    assert reader.cluster == "mine" and "/cluster/status" not in api.calls


@pytest.mark.parametrize("host,name", [("pve1", "pve1"), ("10.0.0.1:8443", "10.0.0.1"), ("[::1]:8006", "::1"),
                                       ("fd00::1", "fd00::1"), ("", "")])
def test_the_fallback_name_is_the_host_without_its_port(host, name):
    from pve_datastore_exporter.config import Config
    from pve_datastore_exporter.proxmox import fallback_name

    assert fallback_name(Config(proxmox_host=host)) == name


def test_a_list_that_fails_to_parse_still_lets_the_name_be_taken():
    reader, api = name_reader(CLUSTER_STATUS, lambda: 0.0)
    api.answers["/storage"] = {"errors": b"<html>"}
    with pytest.raises(RefreshFailed):
        reader.read()
    assert reader.cluster == "prod"
