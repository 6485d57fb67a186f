"""The `Simulator`: a simulated Proxmox VE cluster served over HTTPS, started and stopped as a whole.

It has a Cluster (the model), a PveProxy (what pveproxy does with an API request), a Control (the
/_sim/ endpoints) and, while running, an ApiServer; it talks to each through its public methods.
"""

from __future__ import annotations

import random
import shutil
import ssl
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from .auth import Auth, ensure_certificates
from .cluster import Cluster
from .control import PREFIX, Control
from .proxy import PveProxy
from .server import ApiServer


class Simulator:
    """The simulated Proxmox VE API over HTTPS, for the demo, the tests and the benchmarks."""

    def __init__(self, nodes: int = 3, datastores: int = 6, random_seed: int = 1, state_dir=None,
                 drift: bool = True, drift_rate: float = 0.05, shuffle: bool = True, vms: int = 0,
                 quirks: bool = False, host: str = "127.0.0.1", port: int = 0, latency_ms: float = 0.0,
                 auth_delay: float = 3.0, user: str = "monitor@pve", token_name: str = "exporter",
                 token_value: str | None = None, password: str = "simulator", clock=time.time,
                 cluster_name: str = "pve-sim"):
        # cluster_name: what /cluster/status names the cluster (a single node is standalone: no cluster entry).
        self.cluster = Cluster(nodes=nodes, datastores=datastores, random_seed=random_seed, drift=drift,
                               drift_rate=drift_rate, shuffle=shuffle, vms=vms, quirks=quirks, clock=clock,
                               name=cluster_name)
        self.user, self.token_name, self.password = user, token_name, password
        self.token_value = token_value or str(uuid.UUID(int=random.Random(f"{random_seed}:token").getrandbits(128),
                                                        version=4))
        auth = Auth(user, token_name, self.token_value, password, clock)
        self.proxy = PveProxy(self.cluster, auth, auth_delay, latency_ms)
        self._control = Control(self.proxy)
        self.state_dir = Path(state_dir) if state_dir else None  # None: a temporary one per run
        self._own_state_dir = False
        self.host, self.port = host, port
        self._server = self._thread = None
        self.ca_file = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self):
        """Make or reuse the certificates, bind, and serve in a background thread; OSError when it cannot bind."""
        if self._server is not None:
            return self
        if self.state_dir is None:
            self.state_dir, self._own_state_dir = Path(tempfile.mkdtemp(prefix="pve-sim-")), True
        try:
            paths = ensure_certificates(self.state_dir)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(paths.cert, paths.key)
            self.proxy.start()
            self._server = ApiServer((self.host, self.port), self.handle, context)
        except Exception:
            self.stop()  # a temporary state_dir goes with the failed start
            raise
        self.port = self._server.server_address[1]
        self.ca_file = str(paths.ca)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"pve-simulator:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop promptly, even while requests hang: waits end and connections are cut."""
        self.proxy.stop()
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

    def handle(self, method, target, headers, body):
        """The Reply to one HTTP request: a /_sim/ control call, else an API call."""
        path = urlsplit(target).path
        if path.startswith(PREFIX):
            return self._control.handle(method, path, body)
        return self.proxy.handle(method, target, headers, body)

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

    @property
    def request_count(self):
        """API requests served since start or the last reset."""
        return self.proxy.request_count

    @property
    def requests_by_path(self):
        """{path: count} of API requests (no query string)."""
        return self.proxy.requests_by_path

    def reset_stats(self):
        """Zero the request counters."""
        self.proxy.reset_stats()

    @property
    def faults(self):
        """The faults in force, as a JSON-ready dict."""
        return self.proxy.faults

    def set_faults(self, **changes):
        """Switch faults on or change them (see faults.Faults); the others stay as they are."""
        return self.proxy.set_faults(**changes)

    def clear_faults(self):
        """Switch every fault off."""
        self.proxy.clear_faults()
