"""The simulated API's routes: path templates, pve's parameter checks and its errors.

Every rule below follows docs/proxmox-api.md; the comments name the fact they rely on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .model import CONTENT_TYPES, PLUGIN_TYPES, valid_storage_id


class PveApiError(Exception):
    """A Proxmox error: status, message (its first line is the reason phrase), errors (docs/proxmox-api.md#errors)."""

    def __init__(self, status, message, errors=None):
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors


def _boolean(value):
    """Only '1'/'0' over HTTP, so proxmoxer's True ('True') fails (docs/proxmox-api.md#parameters)."""
    if value not in ("0", "1"):
        raise ValueError(f"type check ('boolean') failed - got '{value}'")
    return value == "1"


def _enum(*choices):
    """A validator for an enum parameter, with pve's error text."""
    def check(value):
        if value not in choices:
            raise ValueError(f"value '{value}' does not have a value in the enumeration "
                             f"'{', '.join(choices)}'")
        return value
    return check


def _storage_param(value):
    """A storage ID (pve-storage-id format)."""
    if len(value) < 2:
        raise ValueError(f"invalid format - storage ID '{value}' cannot be shorter than 2 characters\n")
    if not valid_storage_id(value):
        raise ValueError(f"invalid format - storage ID '{value}' contains illegal characters\n")
    return value


def _content_param(value):
    """A content list (pve-storage-content-list); the error text is an approximation."""
    items = [item for item in re.split(r"[,;\s]+", value) if item]
    for item in items:
        if item not in CONTENT_TYPES and item != "none":
            raise ValueError(f"invalid format - invalid content type '{item}'\n")
    return frozenset(items)


def _node_param(value):
    """A node name (pve-node format)."""
    if not re.fullmatch(r"[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?", value):
        raise ValueError("invalid format - value does not look like a valid node name\n")
    return value


def _integer(value):
    """An integer parameter."""
    if not re.fullmatch(r"-?\d+", value):
        raise ValueError(f"type check ('integer') failed - got '{value}'")
    return int(value)


# (method, path template, PveApi method, {parameter: validator}); None = the transport's own.
ROUTES = (
    ("GET", "/version", "version", {}),
    ("GET", "/cluster/resources", "resources", {"type": _enum("vm", "storage", "node", "sdn")}),
    ("GET", "/cluster/status", "cluster_status", {}),
    ("GET", "/cluster/backup-info/not-backed-up", "not_backed_up", {}),
    ("GET", "/cluster/config/qdevice", "qdevice", {}),
    ("GET", "/storage", "storage_config", {"type": _enum(*PLUGIN_TYPES)}),
    ("GET", "/nodes", "nodes_list", {}),
    ("GET", "/nodes/{node}/storage", "node_storage",
     {"content": _content_param, "enabled": _boolean, "format": _boolean,
      "storage": _storage_param, "target": _node_param}),
    ("GET", "/nodes/{node}/storage/{storage}/status", "storage_status", {}),
    ("GET", "/nodes/{node}/storage/{storage}/content", "storage_content",
     {"content": _enum(*CONTENT_TYPES), "vmid": _integer}),
    ("GET", "/nodes/{node}/disks/lvmthin", "disks_lvmthin", {}),
    ("GET", "/nodes/{node}/disks/zfs", "disks_zfs", {}),
    ("GET", "/nodes/{node}/disks/list", "disks_list",
     {"skipsmart": _boolean, "include-partitions": _boolean, "type": _enum("unused", "journal_disks")}),
    ("GET", "/access/permissions", "permissions", {"path": str, "userid": str}),
    ("GET", "/nodes/{node}/{kind:qemu|lxc}", "node_guests", {"full": _boolean}),
    ("GET", "/nodes/{node}/{kind:qemu|lxc}/{vmid}/config", "guest_config", {"current": _boolean}),
    ("GET", "/nodes/{node}/replication", "replication", {"guest": _integer}),
    ("GET", "/nodes/{node}/subscription", "subscription", {}),
    ("POST", "/access/ticket", None, {}),
)


def _compile(template):
    """'/nodes/{node}/{kind:qemu|lxc}' -> an anchored regex with named groups."""
    def group(match):
        name, _, choices = match[1].partition(":")
        return f"(?P<{name}>{choices or '[^/]+'})"
    return re.compile("^" + re.sub(r"\{([^}]+)\}", group, template) + "$")


NOT_IN_SCHEMA = "property is not defined in schema and the schema does not allow additional properties"
_ROUTES = [(method, _compile(path), name, params) for method, path, name, params in ROUTES]


@dataclass
class Call:
    """A resolved API call: which answer, its path arguments, its parameter validators."""

    name: str | None
    path_args: dict
    params: dict

    @property
    def node(self):
        """The {node} of a /nodes/{node}/... call: pveproxy proxies those to that node."""
        return self.path_args.get("node")

    def arguments(self, query):
        """Validate query parameters like pve's JSONSchema, or raise the 400."""
        errors, values = {}, {}
        for key, value in query.items():
            check = self.params.get(key)
            if check is None:
                errors[key] = NOT_IN_SCHEMA
                continue
            try:
                values[key] = check(value)
            except ValueError as exc:
                errors[key] = str(exc)
        if errors:
            raise PveApiError(400, "Parameter verification failed.", errors)
        return {**self.path_args, **values}


def resolve(method, path):
    """The Call for `method path` (path below /api2/json), or the 501 pve answers."""
    for route_method, regex, name, params in _ROUTES:
        match = regex.match(path)
        if match and route_method == method:
            return Call(name, match.groupdict(), params)
    raise PveApiError(501, f"Method '{method} {path}' not implemented")
