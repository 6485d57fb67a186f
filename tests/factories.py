"""Small builders shared by the unit tests: records, a fake reader at the Proxmox boundary."""

from __future__ import annotations

import threading

from pve_datastore_exporter.config import Config
from pve_datastore_exporter.records import Datastore, NodeFigures, RefreshFailed

SEED_SCHEMA = """
CREATE TABLE datastores (
    id VARCHAR(100) PRIMARY KEY,
    name VARCHAR(100) NOT NULL,
    type VARCHAR(50) NOT NULL,
    size BIGINT DEFAULT 0,
    used BIGINT DEFAULT 0,
    available BIGINT DEFAULT 0,
    content TEXT,
    enabled BOOLEAN DEFAULT TRUE,
    is_default_hdd BOOLEAN DEFAULT FALSE,
    is_default_ssd BOOLEAN DEFAULT FALSE,
    is_system_default BOOLEAN DEFAULT FALSE,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP
);
"""


def record(datastore_id: str, type_: str = "dir", size: int = 1000, used: int = 100, shared: bool = False,
           enabled: bool = True, nodes: tuple[str, ...] = ("pve1",), content: str = "images,rootdir"):
    """A datastore with the same figures on each node (summed unless shared)."""
    figures = tuple(NodeFigures(node=n, size=size, used=used, available=size - used, active=True)
                    for n in nodes) if enabled else ()
    factor = 1 if shared else len(figures)
    return Datastore(id=datastore_id, type=type_, content=content, shared=shared, enabled=enabled,
                     size=size * factor, used=used * factor, available=(size - used) * factor,
                     active=bool(figures), nodes=figures)


def cluster():
    """A small cluster with the seed's default names present."""
    return [record("local", content="backup,iso,vztmpl", nodes=("pve1", "pve2")),
            record("local-lvm", "lvmthin", nodes=("pve1", "pve2")),
            record("ceph-vm", "rbd", 5000, 500, shared=True, nodes=("pve1", "pve2")),
            record("old-iso", enabled=False)]


def config(tmp_path, **changes) -> Config:
    """A Config pointing at a SQLite file in tmp_path."""
    base = Config(database_url=f"sqlite:///{tmp_path}/db.sqlite", proxmox_host="pve1",
                  proxmox_user="monitor@pve", proxmox_token_name="exporter",
                  proxmox_token_value="tok-s3cret-value")
    return base.replace(**changes)


class FakeReader:
    """Stands in for Proxmox: returns `records`, or raises `error`; counts calls."""

    cluster = "pve-test"  # the cluster's name, as reader.Reader.cluster

    def __init__(self, records=None, error: RefreshFailed | None = None, gate: threading.Event | None = None):
        self.records = cluster() if records is None else records
        self.error = error
        self.gate = gate
        self.calls = 0

    def known(self) -> str:
        """As reader.Reader.known, for a reader that read the name."""
        return self.cluster

    def name(self, stored: str = "") -> str:
        """As reader.Reader.name, with no PROXMOX_CLUSTER_NAME."""
        return stored or self.cluster

    def label(self, stored: str) -> str | None:
        """As reader.Reader.label: once the name is known, another stored name is another cluster's."""
        if not stored or stored == self.cluster:
            return self.cluster
        return None if self.known() else stored

    def read(self, fence=None):
        self.calls += 1
        if self.gate:
            self.gate.wait(5)
        if self.error:
            raise self.error
        return list(self.records)
