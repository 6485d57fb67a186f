# Copyright (c) 2026 the pve-datastore-exporter authors
# MIT License (see LICENSE in the collection root)
"""Reading a pve-datastore-exporter's GET /api/datastores: the envelope, sizes and the datastore filters.

Shared by the datastore_info module (fetch_url on the target) and the default_datastore lookup
(open_url on the controller); the HTTP call itself stays in each plugin.
"""

from __future__ import annotations

import base64
import json
import re

DATASTORES_PATH = "/api/datastores"
# K, M, G, T, P, E with an optional B or iB: powers of 1024, as Proxmox sizes disks (qm's "32G" is 32 GiB)
# and as Ansible's human_to_bytes reads them. There is no decimal (SI) reading; a lower-case b (bits) is refused.
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:([KMGTPEkmgtpe])(?:i?B)?|B)?\s*$")
_UNITS = "KMGTPE"
# Proxmox's datastore (storage) ID, pve-storage-id in PVE::JSONSchema: a letter, then letters, digits,
# -, _ or ., ending in a letter or digit. Nothing else may pass: an ID lands in a disk option such as
# "scsi0: <id>:32", where "local-lvm,import-from=..." would inject options of its own.
_DATASTORE_ID = re.compile(r"[a-z][a-z0-9\-_.]*[a-z0-9]", re.IGNORECASE | re.ASCII)


class ExporterError(Exception):
    """A call to the exporter that gave no usable answer, said in one sentence."""

    def __init__(self, message, status=None, error=None):
        super().__init__(message)
        self.status = status
        self.error = error


def check_datastore_id(value, what):
    """`value` when it is a Proxmox datastore ID; ExporterError saying `what` is not, otherwise."""
    if not isinstance(value, str) or not _DATASTORE_ID.fullmatch(value):
        raise ExporterError("%s: %r is not a Proxmox datastore ID (a letter, then letters, digits, -, _ or ., "
                            "ending in a letter or digit)" % (what, value))
    return value


def check_datastore_ids(answer, where):
    """ExporterError unless every datastore ID in an answer of GET /api/datastores is a Proxmox datastore ID."""
    for datastore in answer.get("datastores") or ():
        check_datastore_id(datastore.get("id") if isinstance(datastore, dict) else datastore,
                           "a datastore in the answer of %s" % where)
    for key in ("default_hdd", "default_ssd"):
        if answer.get(key) is not None:
            check_datastore_id(answer[key], "%s in the answer of %s" % (key, where))
    return answer


def parse_size(value):
    """Bytes from an integer or a size string (V(100G), V(1.5T), V(512MiB)); units are powers of 1024."""
    if isinstance(value, bool):
        raise ValueError("%r is not a size" % (value,))
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative: %d" % value)
        return value
    match = _SIZE.match(str(value))
    if match is None:
        raise ValueError("%r is not a size: give bytes, or a number with K, M, G, T, P or E "
                         "(powers of 1024: 100G = 100 GiB, 1.5T = 1.5 TiB)" % (value,))
    number, unit = match.groups()
    factor = 1024 ** (_UNITS.index(unit.upper()) + 1) if unit else 1
    if "." not in number:
        return int(number) * factor  # exact for any integer, where a float would round
    return int(float(number) * factor)


def format_size(size):
    """Bytes as a short text for messages: 1.5 TiB (1649267441664 bytes)."""
    value, unit = float(size), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if abs(value) < 1024 or unit == "EiB":
            break
        value /= 1024
    shown = "%d %s" % (value, unit) if unit == "B" else "%.1f %s" % (value, unit)
    return "%s (%d bytes)" % (shown, size)


def request_headers(username=None, password=None):
    """Headers for a GET, with basic auth sent at once (not after a 401 challenge) when a user is given."""
    headers = {"Accept": "application/json"}
    if username:
        pair = "%s:%s" % (username, password or "")
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
    return headers


def _decode(raw):
    """(JSON object or {}, text) of an answer's body."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else (raw or "")
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    return (body if isinstance(body, dict) else {}), text


def read_answer(where, status, raw, reason=""):
    """The JSON object of a successful answer; ExporterError naming what went wrong otherwise."""
    if status is None or status < 0:
        raise ExporterError("cannot reach the exporter (%s): %s" % (where, reason), status)
    body, text = _decode(raw)
    message = body.get("message") or " ".join(text.split())[:200] or reason
    code = body.get("error")
    if status in (401, 403):
        raise ExporterError("the exporter refused the request (%s, HTTP %d%s): %s; check url_username and "
                            "url_password" % (where, status, ", " + code if code else "", message), status, code)
    if status != 200 or body.get("success") is not True:
        raise ExporterError("the exporter answered HTTP %s to %s: %s" % (status, where, message), status, code)
    return body


def read_datastores(where, status, raw, reason=""):
    """The answer of GET /api/datastores, checked to hold a datastore list."""
    body = read_answer(where, status, raw, reason)
    if not isinstance(body.get("datastores"), list):
        raise ExporterError("%s answered without a datastore list: is it a pve-datastore-exporter?" % where, status)
    return body


def refresh_age(body):
    """Seconds since the exporter's last successful refresh from Proxmox, None when there was none."""
    refresh = body.get("last_refresh")
    age = refresh.get("age_seconds") if isinstance(refresh, dict) else None
    return float(age) if isinstance(age, (int, float)) and not isinstance(age, bool) else None


def content_types(datastore):
    """The datastore's content types as a list (the API sends Proxmox's comma-separated string)."""
    content = datastore.get("content") or ""
    if isinstance(content, str):
        return [item.strip() for item in content.split(",") if item.strip()]
    return [str(item) for item in content]


def node_entry(datastore, node):
    """The datastore's per-node figures on `node`, None when it is not there."""
    for entry in datastore.get("nodes") or ():
        if entry.get("node") == node:
            return entry
    return None


def available(datastore, node=None):
    """Bytes available cluster-wide (shared: once, local: summed over nodes), or on one node."""
    entry = datastore if node is None else node_entry(datastore, node)
    value = entry.get("available") if entry else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def matches(datastore, content=None, min_available=None, node=None):
    """True when the datastore holds `content`, is on `node` and has at least min_available bytes free."""
    if content and content not in content_types(datastore):
        return False
    if node and node_entry(datastore, node) is None:
        return False
    if min_available is not None:
        room = available(datastore, node)
        return room is not None and room >= min_available
    return True


def select(datastores, content=None, min_available=None, node=None):
    """The datastores that match the filters, in the exporter's order and as the exporter sent them."""
    return [d for d in datastores if matches(d, content, min_available, node)]


# -- the per-node reads' figures (the exporter's risk keys, issue 19) ------------------------------------


def _fraction(used, size):
    """used / size, or None when either is unknown."""
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (used, size))
    return used / float(size) if numbers and size else None


def _on(node):
    return " on node %s" % node if node else ""


def thin_refusal(datastore, label, node, limit):
    """Why `datastore`'s thin pool metadata is over `limit` (a fraction), or unknown; None when it fits."""
    if datastore.get("type") != "lvmthin":
        return None
    entry = node_entry(datastore, node) if node else None
    fill = _fraction(entry.get("thin_metadata_used"), entry.get("thin_metadata_size")) if entry else \
        datastore.get("thin_metadata_fraction")
    if fill is None:
        return ("the %s %r has no thin pool metadata figure%s (the exporter reads it every EXPORTER_POOLS_INTERVAL), "
                "so max_thin_metadata=%s cannot be checked" % (label, datastore.get("id"), _on(node), limit))
    if fill > limit:
        return ("the %s %r has its thin pool metadata %.1f %% full%s, over max_thin_metadata=%s"
                % (label, datastore.get("id"), fill * 100, _on(node), limit))
    return None


def overcommit_refusal(datastore, label, node, limit):
    """Why `datastore` promises its guests more than `limit` times its size, or cannot say; None when it fits."""
    if not any("provisioned" in entry for entry in datastore.get("nodes") or ()):
        return None  # a type, or a content without images and rootdir, that cannot promise more than it holds
    entry = node_entry(datastore, node) if node else None
    ratio = _fraction(entry.get("provisioned"), entry.get("size")) if entry else datastore.get("overcommit")
    if ratio is None and entry and datastore.get("shared"):
        ratio = datastore.get("overcommit")  # read once, on another node: the same volumes on every node
    if ratio is None:
        return ("the %s %r has no provisioned figure%s (EXPORTER_PROVISIONED_INTERVAL off, or the exporter's token "
                "cannot see guests' volumes), so max_overcommit=%s cannot be checked"
                % (label, datastore.get("id"), _on(node), limit))
    if ratio > limit:
        return ("the %s %r has %.2f times its size promised to guests' disks%s, over max_overcommit=%s"
                % (label, datastore.get("id"), ratio, _on(node), limit))
    return None


def pool_refusal(datastore, label, node):
    """Why `datastore`'s zpool is not ONLINE (on `node`, else on any node), or its health unknown; None when it is ONLINE."""
    if datastore.get("type") != "zfspool":
        return None
    entries = [node_entry(datastore, node) or {}] if node else list(datastore.get("nodes") or ())
    if not any(entry.get("zpool_health") for entry in entries):
        return ("the %s %r has no ZFS pool health figure%s (the exporter reads it every EXPORTER_POOLS_INTERVAL), "
                "so healthy_pool cannot be checked; pass healthy_pool=false to use it anyway"
                % (label, datastore.get("id"), _on(node)))
    for entry in entries:
        health = entry.get("zpool_health")
        if health and health != "ONLINE":
            return ("the %s %r lives on ZFS pool %s, which is %s on node %s; pass healthy_pool=false to use it anyway"
                    % (label, datastore.get("id"), entry.get("zpool"), health, entry.get("node")))
    return None


def risk_refusals(datastore, label, node=None, max_thin_metadata=None, max_overcommit=None, healthy_pool=True):
    """The sentences refusing `datastore` by the limits given, each naming the datastore, the figure and the limit."""
    found = [thin_refusal(datastore, label, node, max_thin_metadata) if max_thin_metadata is not None else None,
             overcommit_refusal(datastore, label, node, max_overcommit) if max_overcommit is not None else None,
             pool_refusal(datastore, label, node) if healthy_pool else None]
    return [sentence for sentence in found if sentence]


def check_limits(max_thin_metadata=None, max_overcommit=None):
    """ValueError unless max_thin_metadata is a fraction 0-1 and max_overcommit a positive ratio (None: not asked)."""
    if max_thin_metadata is not None and not 0 <= max_thin_metadata <= 1:
        raise ValueError("max_thin_metadata must be a fraction from 0 to 1 (0.8 is 80 %%), not %s" % max_thin_metadata)
    if max_overcommit is not None and not max_overcommit > 0:
        raise ValueError("max_overcommit must be a ratio above 0 (1.5: guests may be promised 150 %% of the size), "
                         "not %s" % max_overcommit)
