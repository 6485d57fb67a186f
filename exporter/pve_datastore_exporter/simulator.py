"""The simulated Proxmox VE API: the `Simulator` facade and the `simulate` sub-command.

Used by `pve-datastore-exporter simulate`, the demo, the tests and the benchmarks. The parts:
simcluster (the model) and simmodel (its datastores and nodes), simapi and simroutes (the API's
answers and routes), simproxy (faults, auth and counters per request), simserver (HTTP + TLS),
simauth (certificates, tokens, tickets). Facts about the real API are in /work/shared/pve-api.md;
the comments name the ones they rely on.

Control endpoints (no auth, not counted, JSON in and out, 400 {"error": ...} on bad input):
  GET  /_sim/stats    -> {"requests": N, "by_path": {"/api2/json/...": N}}
  POST /_sim/reset    -> zero the counters
  GET  /_sim/faults   -> the faults in force
  POST /_sim/faults   {"latency_ms": 200, "status": 503, "reason": "...", "path": "regex",
                       "auth_fail": true, "offline_nodes": ["pve2"], "offline_delay_ms": 0,
                       "hang": true, "hang_seconds": null, "malformed": true, "clear": true}
                      merged into the faults in force ("clear" first switches all off)
  POST /_sim/cluster  {"op": "set_usage", "datastore": "local", "node": "pve1", "used": 123}
                      or a list of ops; op is a Cluster method: set_usage, set_rate,
                      set_node_online, set_active, disable, enable, vanish, add, set_string_bools
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import ssl
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from .simauth import Auth, ensure_certificates
from .simcluster import Cluster
from .simmodel import SimError
from .simproxy import PveProxy
from .simserver import ApiServer, json_reply

__all__ = ["Simulator", "ensure_certificates", "register", "run"]

CLUSTER_OPS = frozenset({"set_usage", "set_rate", "set_node_online", "set_active", "disable",
                         "enable", "vanish", "add", "set_string_bools"})


# -- the simulator -------------------------------------------------------------------------


class Simulator(PveProxy):
    """The simulated Proxmox VE API over HTTPS, for the demo, the tests and the benchmarks."""

    def __init__(self, nodes=3, datastores=6, seed=1, state_dir=None, drift=True, drift_rate=0.05,
                 shuffle=True, vms=0, quirks=False, host="127.0.0.1", port=0, latency_ms=0.0,
                 auth_delay=3.0, user="monitor@pve", token_name="exporter", token_value=None,
                 password="simulator", clock=time.time):
        cluster = Cluster(nodes, datastores, seed, drift, drift_rate, shuffle, vms, quirks, clock)
        self.user, self.token_name = user, token_name
        self.token_value = token_value or str(uuid.UUID(int=random.Random(f"{seed}:token").getrandbits(128),
                                                        version=4))
        self.password = password
        super().__init__(cluster, Auth(user, token_name, self.token_value, password, clock), auth_delay, latency_ms)
        self.state_dir = Path(state_dir) if state_dir else None  # None: a temporary one per run
        self._own_state_dir = False
        self.host, self.port = host, port
        self._server = self._thread = None
        self.ca_file = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self):
        """Make or reuse the certificates, bind, and serve in a background thread."""
        if self._server is not None:
            return self
        if self.state_dir is None:
            self.state_dir, self._own_state_dir = Path(tempfile.mkdtemp(prefix="pve-sim-")), True
        paths = ensure_certificates(self.state_dir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(paths.cert, paths.key)
        self._stopping.clear()
        self._release = threading.Event()  # stop() released the hangs of the previous run
        self._server = ApiServer((self.host, self.port), self, context)
        self.port = self._server.server_address[1]
        self.ca_file = str(paths.ca)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"pve-simulator:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop promptly, even while requests hang: waits end and connections are cut."""
        self._stopping.set()
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.cut_connections()
            self._server.server_close()
            self._thread.join(5)
            self._server = None
        if self._own_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            self.state_dir, self._own_state_dir = None, False

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- what tests, demo and bench use ------------------------------------------------------

    @property
    def url(self):
        """https://HOST:PORT."""
        return f"https://{self.host}:{self.port}"

    def env(self):
        """The PROXMOX_* settings that point the exporter at this simulator."""
        return {"PROXMOX_HOST": f"{self.host}:{self.port}", "PROXMOX_USER": self.user,
                "PROXMOX_TOKEN_NAME": self.token_name, "PROXMOX_TOKEN_VALUE": self.token_value,
                "PROXMOX_CA_BUNDLE": self.ca_file}

    def handle(self, method, target, headers, body):
        """The Reply to one HTTP request: a /_sim/ control call, else an API call."""
        path = urlsplit(target).path
        if path.startswith("/_sim/"):
            return self._control(method, path, body)
        return super().handle(method, target, headers, body)

    # -- the /_sim/ control endpoints (no auth, not counted) ---------------------------------

    def _control(self, method, path, body):
        """GET /_sim/stats, POST /_sim/reset, GET|POST /_sim/faults, POST /_sim/cluster."""
        try:
            payload = json.loads(body) if body.strip() else {}
            return json_reply(self._control_answer(method, path, payload))
        except (SimError, TypeError, ValueError) as exc:
            return json_reply({"error": str(exc)}, 400, "Bad Request")
        except LookupError:
            return json_reply({"error": f"no control endpoint {method} {path}"}, 404, "Not Found")

    def _control_answer(self, method, path, payload):
        """The JSON answer of one control call."""
        if (method, path) == ("GET", "/_sim/stats"):
            return self._stats.snapshot()
        if (method, path) == ("POST", "/_sim/reset"):
            self._stats.reset()
            return self._stats.snapshot()
        if (method, path) == ("GET", "/_sim/faults"):
            return self.faults
        if (method, path) == ("POST", "/_sim/faults"):
            if not isinstance(payload, dict):
                raise SimError("faults: expected a JSON object")
            payload = dict(payload)
            if payload.pop("clear", False):
                self.clear_faults()
            return self.set_faults(**payload)
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
            if name not in CLUSTER_OPS:
                raise SimError(f"unknown op {name!r} (known: {', '.join(sorted(CLUSTER_OPS))})")
            getattr(self.cluster, name)(**args)
        return len(ops)


# -- the `simulate` sub-command ------------------------------------------------------------


def register(subparsers):
    """Add the `simulate` sub-command; it sets func(args) -> int."""
    parser = subparsers.add_parser(
        "simulate", help="serve a simulated Proxmox VE API over HTTPS",
        description="Serve a simulated Proxmox VE cluster's API (token and ticket auth, drifting "
                    "usage, faults over POST /_sim/faults) until SIGINT or SIGTERM.")
    add = parser.add_argument
    add("--listen", default="127.0.0.1:8006", help="HOST:PORT to serve on (default %(default)s)")
    add("--nodes", type=int, default=3, help="cluster nodes pve1..pveN (default %(default)s)")
    add("--datastores", type=int, default=6, help="datastores (default %(default)s)")
    add("--seed", type=int, default=1, help="seed for sizes, usage, token and order (default %(default)s)")
    add("--state-dir", default=".demo/simulator", help="where the CA and certificate live (default %(default)s)")
    add("--latency-ms", type=float, default=0.0, help="latency added to every API request")
    add("--auth-delay", type=float, default=3.0, help="seconds before a 401, like pve (default %(default)s)")
    add("--token-value", help="API token secret (default: a UUID derived from the seed)")
    add("--password", default="simulator", help="password of the user for ticket login (default %(default)s)")
    add("--no-drift", dest="drift", action="store_false", help="usage stays where it starts")
    add("--drift-rate", type=float, default=0.05,
        help="fastest usage drift, as a fraction of the size per hour (default %(default)s)")
    add("--no-shuffle", dest="shuffle", action="store_false", help="answer lists in a stable order")
    add("--vms", type=int, default=0, help="guests to list (default %(default)s)")
    add("--quirks", action="store_true", help="send 0/1 fields as strings, like some storage plugins")
    parser.set_defaults(func=run)
    return parser


def _parse_listen(value):
    """'HOST:PORT' or 'PORT' -> (host, port)."""
    host, _, port = value.rpartition(":")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def run(args):
    """Serve until SIGINT or SIGTERM, printing the settings an exporter needs."""
    host, port = _parse_listen(args.listen)
    sim = Simulator(nodes=args.nodes, datastores=args.datastores, seed=args.seed,
                    state_dir=os.path.abspath(args.state_dir), drift=args.drift, drift_rate=args.drift_rate,
                    shuffle=args.shuffle, vms=args.vms, quirks=args.quirks, host=host, port=port,
                    latency_ms=args.latency_ms, auth_delay=args.auth_delay, token_value=args.token_value,
                    password=args.password)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        sim.start()
    except OSError as exc:
        print(f"simulate: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 1
    try:
        _print_settings(sim, args)
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _print_settings(sim, args):
    """The env lines to use; the token is a throw-away demo credential, so printing it is fine."""
    print(f"# simulated Proxmox VE: {args.nodes} nodes x {args.datastores} datastores at {sim.url}"
          " (Ctrl-C to stop)")
    for key, value in sim.env().items():
        print(f"{key}={value}")
    print(f"# password login instead of the token: PROXMOX_PASSWORD={sim.password}")
    print(f"# faults: curl --cacert {sim.ca_file} -d '{{\"status\": 503}}' {sim.url}/_sim/faults")
    sys.stdout.flush()
