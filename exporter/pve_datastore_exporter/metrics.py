"""Turns a view into exposition bytes once per change; only self-metrics are rendered per scrape."""

from __future__ import annotations

import gzip

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from .records import View

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
FAILURE_REASONS = ("auth", "timeout", "connection", "http_4xx", "http_5xx", "parse", "db")
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

disable_created_metrics()  # *_created series add nothing for a long-running exporter

FAMILIES = (
    ("pve_datastore_size_bytes", "Size of the datastore as one node reports it, in bytes."),
    ("pve_datastore_used_bytes", "Used space of the datastore as one node reports it, in bytes."),
    ("pve_datastore_available_bytes", "Available space (size - used) of the datastore on one node, in bytes."),
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _bool(flag: bool) -> str:
    return "true" if flag else "false"


def render_datastores(view: View) -> bytes:
    """The datastore families of the exposition (text format 0.0.4) for one view."""
    lines: list[str] = []
    capacity = [(r.record.id, n) for r in view.rows for n in r.record.nodes]
    for index, (name, help_text) in enumerate(FAMILIES):
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for datastore, node in capacity:
            if node.active and node.size is not None:
                value = (node.size, node.used, node.available)[index]
                lines.append(f"{name}{_labels(datastore=datastore, node=node.node)} {value}")
    lines += ["# HELP pve_datastore_active 1 when Proxmox reports the datastore available on the node.",
              "# TYPE pve_datastore_active gauge"]
    lines += [f"pve_datastore_active{_labels(datastore=d, node=n.node)} {int(n.active)}" for d, n in capacity]
    lines += ["# HELP pve_datastore_info Datastore attributes; join on datastore. Always 1.",
              "# TYPE pve_datastore_info gauge"]
    for row in view.rows:
        r = row.record
        lines.append("pve_datastore_info" + _labels(
            datastore=r.id, type=r.type, content=r.content, shared=_bool(r.shared), enabled=_bool(r.enabled),
            is_default_hdd=_bool(row.is_default_hdd), is_default_ssd=_bool(row.is_default_ssd)) + " 1")
    lines += ["# HELP pve_datastore_default The default datastore per role and where the setting comes from.",
              "# TYPE pve_datastore_default gauge"]
    for role, datastore in (("hdd", view.default_hdd), ("ssd", view.default_ssd)):
        if datastore:
            lines.append(f"pve_datastore_default{_labels(role=role, datastore=datastore, source=view.source)} 1")
    return ("\n".join(lines) + "\n").encode()


class Exposition:
    """Keeps the rendered datastore bytes (plain and gzip) and the self-metrics registry."""

    def __init__(self, registry: CollectorRegistry | None = None, process: bool = True):
        self.registry = registry or CollectorRegistry()
        if process:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
        self.up = Gauge("pve_datastore_up", "1 when the last refresh succeeded, else 0.", registry=self.registry)
        self.last_success = Gauge("pve_datastore_last_refresh_success_timestamp_seconds",
                                  "Unix time of the last successful read from Proxmox.", registry=self.registry)
        self.duration = Histogram("pve_datastore_refresh_duration_seconds", "Time taken by refreshes.",
                                  buckets=DURATION_BUCKETS, registry=self.registry)
        self.failures = Counter("pve_datastore_refresh_failures", "Failed refreshes by reason.",
                                ["reason"], registry=self.registry)
        for reason in FAILURE_REASONS:
            self.failures.labels(reason)
        self._parts = (b"", b"")  # (plain, gzip), swapped as one tuple so a scrape never mixes two

    def __call__(self, view: View, event: str) -> None:
        """Service listener: re-render on every change, count refresh outcomes."""
        info = view.refresh
        if event == "refresh":
            if info.duration is not None:
                self.duration.observe(info.duration)
            if info.reason:
                self.failures.labels(info.reason).inc()
        self.up.set(1 if info.ok else 0)
        self.last_success.set(info.last_success or 0)
        plain = render_datastores(view)
        parts = (plain, gzip.compress(plain, compresslevel=6, mtime=0))
        self._parts = parts

    def scrape(self, use_gzip: bool) -> bytes:
        """The whole exposition: cached datastore bytes plus freshly rendered self-metrics."""
        plain, zipped = self._parts
        own = generate_latest(self.registry)
        if use_gzip:
            # Concatenated gzip members form one valid stream (RFC 1952 section 2.2).
            return zipped + gzip.compress(own, compresslevel=1, mtime=0)
        return plain + own
