"""The simulated Proxmox VE API: the demo's, the tests' and the benchmarks' cluster, never loaded by `serve`.

The parts, each behind the one below it:
  facade   Simulator: starts and stops the whole over HTTPS (a throw-away CA and certificate)
  command  run_until_signal(): the body of `pve-datastore-exporter simulate`
  control  the /_sim/ endpoints: counters, faults, model operations over HTTP
  server   HTTP + TLS, the Reply it writes, the request counters
  proxy    what pveproxy does with an API request: faults, auth, the proxy check
  faults   the faults that can be switched on while running
  auth     the certificates, API tokens and tickets
  routes   the API's paths and pve's parameter checks
  api      the answers, shaped like Proxmox VE's
  cluster  the model and its operations
  model    the model's parts: datastores, nodes, drifting usage

Facts about the real API are in docs/proxmox-api.md; the comments name the ones they rely on.
"""

from .auth import ensure_certificates
from .command import parse_listen, run_until_signal
from .facade import Simulator

__all__ = ["Simulator", "ensure_certificates", "parse_listen", "run_until_signal"]
