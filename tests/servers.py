"""Real HTTP on loopback: the exporter's WSGI app in the server `serve` uses, in a thread."""

from __future__ import annotations

import threading

import requests

from pve_datastore_exporter.metrics import Exposition
from pve_datastore_exporter.server import http_server
from pve_datastore_exporter.service import Service
from pve_datastore_exporter.store import Store
from pve_datastore_exporter.web import create_wsgi


class Exporter:
    """A running exporter (service + HTTP) built from a config and a reader."""

    def __init__(self, config, reader):
        self.config = config
        self.service = Service(config, reader, Store(config.database_url))
        self.exposition = Exposition(process=False)
        self.service.start()
        self.server = http_server(create_wsgi(self.service, config, self.exposition), "127.0.0.1", 0,
                                  threads=4, asyncore_loop_timeout=0.1)
        self.url = f"http://127.0.0.1:{self.server.effective_port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        self.http = requests.Session()

    def get(self, path, **kw):
        return self.http.get(self.url + path, timeout=10, **kw)

    def post(self, path, **kw):
        return self.http.post(self.url + path, timeout=10, **kw)

    def close(self):
        self.http.close()
        # Close every channel from inside the loop's own thread, so select() never sees a dead fd;
        # run() returns once its map is empty.
        def close_all():
            for channel in list(self.server._map.values()):
                channel.close()

        try:
            self.server.trigger.pull_trigger(close_all)
        except OSError:  # the trigger's descriptor is already gone (seen once in CI): close from here
            close_all()
        self.thread.join(5)
