"""The simulator's /_sim/ control endpoints: counters, faults and model operations over HTTP.

No auth, not counted, JSON in and out, 400 {"error": ...} on bad input, 404 for another path:
  GET  /_sim/stats    -> {"requests": N, "by_path": {"/api2/json/...": N}}
  POST /_sim/reset    -> zero the counters
  GET  /_sim/faults   -> the faults in force
  POST /_sim/faults   {"latency_ms": 200, "status": 503, "reason": "...", "path": "regex",
                       "auth_fail": true, "offline_nodes": ["pve2"], "offline_delay_ms": 0,
                       "hang": true, "hang_seconds": null, "malformed": true, "drip": true,
                       "rename": {"pve2": "pve\\ud800x"}, "clear": true}
                      merged into the faults in force ("clear" first switches all off)
  POST /_sim/cluster  {"op": "set_usage", "datastore": "local", "node": "pve1", "used": 123}
                      or a list of ops (or {"ops": [...]}); op is a Cluster method: set_usage,
                      set_rate, set_node_online, set_active, disable, enable, vanish, add,
                      set_string_bools; underneath: set_thin_metadata, set_zpool, set_disk,
                      set_tools, set_role, set_acl, set_pve, set_provisioned (the faults above
                      apply to their paths too: {"status": 403, "path": "/disks/"})
"""

from __future__ import annotations

import json

from .model import SimError
from .server import json_reply

PREFIX = "/_sim/"
CLUSTER_OPS = frozenset({"set_usage", "set_rate", "set_node_online", "set_active", "disable",
                         "enable", "vanish", "add", "set_string_bools"})
# The storage under the nodes (simulator/risk.py): thin pools, zpools, disks, the token's privileges.
UNDERNEATH_OPS = frozenset({"set_thin_metadata", "set_zpool", "set_disk", "set_tools", "set_role", "set_acl",
                            "set_pve", "set_provisioned"})


class Control:
    """The /_sim/ endpoints of one PveProxy and its cluster."""

    def __init__(self, proxy):
        self.proxy = proxy

    def handle(self, method, path, body):
        """The Reply to GET /_sim/stats, POST /_sim/reset, GET|POST /_sim/faults, POST /_sim/cluster."""
        try:
            payload = json.loads(body) if body.strip() else {}
            return json_reply(self._answer(method, path, payload))
        except (SimError, TypeError, ValueError) as exc:
            return json_reply({"error": str(exc)}, 400, "Bad Request")
        except LookupError:
            return json_reply({"error": f"no control endpoint {method} {path}"}, 404, "Not Found")

    def _answer(self, method, path, payload):
        """The JSON answer of one control call."""
        proxy = self.proxy
        if (method, path) == ("GET", "/_sim/stats"):
            return proxy.stats()
        if (method, path) == ("POST", "/_sim/reset"):
            proxy.reset_stats()
            return proxy.stats()
        if (method, path) == ("GET", "/_sim/faults"):
            return proxy.faults
        if (method, path) == ("POST", "/_sim/faults"):
            if not isinstance(payload, dict):
                raise SimError("faults: expected a JSON object")
            payload = dict(payload)
            if payload.pop("clear", False):
                proxy.clear_faults()
            return proxy.set_faults(**payload)
        if (method, path) == ("POST", "/_sim/cluster"):
            return {"ok": True, "applied": self._cluster_ops(payload)}
        raise LookupError(path)

    def _cluster_ops(self, payload):
        """Apply {"op": NAME, ...args} or a list of them (or {"ops": [...]}) to the model."""
        ops = payload.get("ops", payload) if isinstance(payload, dict) else payload
        ops = [ops] if isinstance(ops, dict) else ops
        if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
            raise SimError('cluster: expected {"op": ..., ...} or a list of them')
        for op in ops:
            args = dict(op)
            name = args.pop("op", None)
            if name not in CLUSTER_OPS | UNDERNEATH_OPS:
                raise SimError(f"unknown op {name!r} (known: {', '.join(sorted(CLUSTER_OPS | UNDERNEATH_OPS))})")
            cluster = self.proxy.cluster
            getattr(cluster.underneath if name in UNDERNEATH_OPS else cluster, name)(**args)
        return len(ops)
