"""The body of `pve-datastore-exporter simulate`: serve a Simulator until SIGINT or SIGTERM.

The command line itself (its options) is declared in cli.py.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

from .facade import Simulator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def parse_listen(value: str) -> tuple[str, int]:
    """'HOST:PORT', '[V6]:PORT' or 'PORT' -> (host, port); the host defaults to 127.0.0.1."""
    host, _, port = value.rpartition(":")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def run_until_signal(sim: Simulator, listen: str) -> int:
    """Serve `sim` on `listen` ('HOST:PORT' or 'PORT') until SIGINT or SIGTERM: 0, or 1 when it cannot listen."""
    stop = threading.Event()
    with _signals_set(stop):
        try:
            sim.host, sim.port = parse_listen(listen)
            sim.start()
        except (OSError, ValueError, OverflowError) as exc:  # in use or refused, not a port, over 65535
            print(f"simulate: cannot listen on {listen}: {exc}", file=sys.stderr)
            return 1
        try:
            _print_settings(sim)
            while not stop.wait(0.5):
                pass
        finally:
            sim.stop()
    return 0


def _print_settings(sim: Simulator) -> None:
    """The env lines to use; the token is a throw-away demo credential, so printing it is fine."""
    print(f"# simulated Proxmox VE: {len(sim.cluster.nodes)} nodes x {len(sim.cluster.datastores)} datastores"
          f" at {sim.url} (Ctrl-C to stop)")
    for key, value in sim.env().items():
        print(f"{key}={value}")
    print(f"# password login instead of the token: PROXMOX_PASSWORD={sim.password}")
    print(f"# faults: curl --cacert {sim.ca_file} -d '{{\"status\": 503}}' {sim.url}/_sim/faults")
    sys.stdout.flush()


@contextlib.contextmanager
def _signals_set(event):
    """SIGINT and SIGTERM set `event` instead of ending the process; the old handlers come back after."""
    previous = {sig: signal.signal(sig, lambda *_: event.set()) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

