"""Scrapes over TLS with basic auth (issue 11): the same exporter behind a web config, against plain HTTP.

A second exporter on the same simulated cluster serves HTTPS with a certificate from a throw-away CA
and one bcrypt user; it is scraped with a kept-alive connection (Prometheus between scrapes) and with
a new connection per scrape (a full handshake, as after an idle period), beside ours in plain HTTP.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import bcrypt

from ..certs import PrivateCA
from .exporters import Ours
from .loadgen import Target, load

USER = ("prometheus", "bench-password")


def web_config(folder: Path) -> Path:
    """Certificate, key, CA and a web config with one user (bcrypt cost 10, as htpasswd -B makes)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = PrivateCA()
    ca.issue(folder / "server.crt", folder / "server.key")
    ca.write_ca(folder / "ca.crt")
    hashed = bcrypt.hashpw(USER[1].encode(), bcrypt.gensalt(10)).decode()
    path = folder / "web.yml"
    path.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                    f"basic_auth_users:\n  {USER[0]}: {hashed}\n")
    return path


class OursTls(Ours):
    """Ours with EXPORTER_WEB_CONFIG_FILE: HTTPS and basic auth."""

    def __init__(self, sim_env: dict[str, str], work: Path, name: str):
        self.folder = work / f"{name}-tls"
        config = web_config(self.folder)
        self.target = Target(0, tls_ca=str(self.folder / "ca.crt"), auth=USER)
        super().__init__(sim_env, work, work, name, EXPORTER_WEB_CONFIG_FILE=str(config))

    def refreshes(self) -> int:
        """The first refresh has happened once /metrics answers over TLS with the user."""
        self.target = Target(self.port, tls_ca=self.target.tls_ca, auth=USER)
        with contextlib.suppress(Exception):
            return 1 if load(self.target, 1, 1, 5).latencies else 0
        return 0


def start(name: str, sizes: tuple[str, ...], sim_env: dict[str, str], work: Path,
          stack: contextlib.ExitStack) -> OursTls | None:
    """The TLS exporter for the sizes asked, or None."""
    if name not in sizes:
        return None
    tls = OursTls(sim_env, work, f"ours-tls-{name}")
    stack.callback(tls.stop)
    return tls


def new_connections(tls: OursTls, count: int, seconds: float) -> dict:
    """Sequential scrapes, each on a new connection with a full TLS handshake (kept-alive ones run in
    run.fast_rounds, in the same rounds as plain HTTP)."""
    fresh = Target(tls.target.port, tls_ca=tls.target.tls_ca, auth=USER, keep_alive=False)
    return load(fresh, 1, count, seconds).summary()
