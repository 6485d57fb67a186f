"""Real HTTP on loopback: the exporter's WSGI app in the server `serve` uses, in a thread."""

from __future__ import annotations

import socket
import time

import requests

from pve_datastore_exporter.http.assemble import build_front
from pve_datastore_exporter.http.listener import HttpServer, listening_socket
from pve_datastore_exporter.metrics import Exposition
from pve_datastore_exporter.service import Service
from pve_datastore_exporter.store import Store


class Exporter:
    """A running exporter (service + HTTP) built from a config and a reader."""

    def __init__(self, config, reader, **service):
        self.config = config
        self.service = Service(config, reader, Store(config.database_url), **service)
        self.exposition = Exposition(process=False)
        self.service.start()
        self.server = HttpServer(build_front(self.service, config, exposition=self.exposition, threads=4),
                                 listening_socket("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.port}"
        self.thread = self.server.start_in_thread()
        self.http = requests.Session()

    def get(self, path, **kw):
        return self.http.get(self.url + path, timeout=10, **kw)

    def post(self, path, **kw):
        return self.http.post(self.url + path, timeout=10, **kw)

    def close(self):
        self.http.close()
        self.server.stop()
        self.thread.join(10)
        self.server.sock.close()


def closed_after(sock: socket.socket, keep_sending: bytes | None, started: float, limit: float = 8) -> float | None:
    """Seconds from `started` until the server closes `sock` (None if it never did within `limit`)."""
    sock.settimeout(0.3)
    while time.monotonic() - started < limit:
        try:
            if keep_sending:
                sock.sendall(keep_sending)
            if sock.recv(4096) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - started
    return None
