"""Turns a view into exposition bytes once per change; only self-metrics are rendered per scrape."""

from __future__ import annotations

import struct
import threading
import time
import zlib
from collections.abc import Callable

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

from .records import FAILURE_REASONS, RefreshInfo, View
from .risk_metrics import render_risk

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

disable_created_metrics()  # *_created series add nothing for a long-running exporter
# Process metrics cost ~0.25 ms to collect, as much as sending the bytes: reuse them for a second.
SELF_METRICS_TTL = 1.0
# Why the listener (http/listener.py) closed or refused a connection before its answer.
HTTP_CLOSE_REASONS = ("per_client_limit", "handshake_timeout", "request_timeout", "head_too_large",
                      "pipeline_too_deep", "not_http", "write_timeout")
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, mtime 0, OS unknown

FAMILIES = (
    ("pve_datastore_size_bytes", "Size of the datastore as one node reports it, in bytes."),
    ("pve_datastore_used_bytes", "Used space of the datastore as one node reports it, in bytes."),
    ("pve_datastore_available_bytes", "Available space of the datastore on one node, in bytes: size - used, "
     "or what Proxmox reports with EXPORTER_EXACT_AVAILABLE."),
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _bool(flag: bool) -> str:
    return "true" if flag else "false"


def render_datastores(view: View) -> bytes:
    """The datastore families of the exposition (text format 0.0.4) for one view; each series names its cluster."""
    lines: list[str] = []
    cluster = view.cluster
    capacity = [(d.id, n) for d in view.rows for n in d.nodes]
    for index, (name, help_text) in enumerate(FAMILIES):
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for datastore, node in capacity:
            if node.active and node.size is not None:
                value = (node.size, node.used, node.available)[index]
                lines.append(f"{name}{_labels(pve_cluster=cluster, datastore=datastore, node=node.node)} {value}")
    lines += ["# HELP pve_datastore_active 1 when Proxmox reports the datastore available on the node.",
              "# TYPE pve_datastore_active gauge"]
    lines += [f"pve_datastore_active{_labels(pve_cluster=cluster, datastore=d, node=n.node)} {int(n.active)}"
              for d, n in capacity]
    lines += ["# HELP pve_datastore_info Datastore attributes; join on pve_cluster and datastore. Always 1.",
              "# TYPE pve_datastore_info gauge"]
    for d in view.rows:
        lines.append("pve_datastore_info" + _labels(
            pve_cluster=cluster, datastore=d.id, type=d.type, content=d.content, shared=_bool(d.shared), enabled=_bool(d.enabled),
            is_default_hdd=_bool(d.is_default_hdd), is_default_ssd=_bool(d.is_default_ssd)) + " 1")
    lines += ["# HELP pve_datastore_default The default datastore per role and where the setting comes from.",
              "# TYPE pve_datastore_default gauge"]
    for role, datastore in (("hdd", view.default_hdd), ("ssd", view.default_ssd)):
        if datastore:
            lines.append(f"pve_datastore_default{_labels(pve_cluster=cluster, role=role, datastore=datastore, source=view.source)} 1")
    lines += render_risk(view)  # thin pools, zpools, disks, provisioned space: the per-node reads
    lines.append("")  # the final newline, without another copy of the whole text
    text = "\n".join(lines)
    del lines  # at 100 x 100 the lines, the text and the bytes are ~3.4 MB each: two at a time at most
    return text.encode()


class Exposition:
    """Keeps the rendered datastore bytes (deflated only) and the self-metrics registry."""

    def __init__(self, registry: CollectorRegistry | None = None, process: bool = True,
                 clock: Callable[[], float] = time.monotonic):
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
        self.leader = Gauge("pve_datastore_leader", "1 on the replica that reads Proxmox (the leader), 0 on a follower.",
                            registry=self.registry)
        self.fenced = Counter("pve_datastore_fenced_writes", "Writes refused because this replica had lost the "
                              "leader's lock before they committed.", registry=self.registry)
        self.http_closed = Counter("pve_datastore_http_connections_closed",
                                   "Connections the listener refused or closed before an answer, by reason.",
                                   ["reason"], registry=self.registry)
        for reason in HTTP_CLOSE_REASONS:
            self.http_closed.labels(reason)
        self.web_config_reloaded = Gauge("pve_datastore_web_config_last_reload_successful",
                                         "0 when the changed web config (or a file it names) could not be used "
                                         "and the one before is still in force, else 1.", registry=self.registry)
        self.web_config_reloaded.set(1)
        self._clock = clock
        self._counted: tuple = (None, None)  # (refresh, reason) last counted
        # (gzip header + deflate, crc32, length) of the datastore bytes, swapped as one. One copy,
        # compressed: at 100 x 100 the plain text is 3.4 MB, its deflate 0.24 MB; a scrape without
        # gzip inflates it.
        self._parts = (GZIP_HEADER + _deflate(b"", 6, final=False), 0, 0)
        self._own = (float("-inf"), b"", b"")  # (rendered at, plain, gzip) of the self-metrics
        self._own_lock = threading.Lock()

    def __call__(self, view: View, event: str) -> None:
        """A Display subscriber: re-render on every change, count refresh outcomes."""
        plain = render_datastores(view)
        self._parts = (GZIP_HEADER + _deflate(plain, 6, final=False), zlib.crc32(plain), len(plain))
        del plain
        info = view.refresh
        # Counted after the new bytes are in place, so no scrape sees the count without the data.
        if event == "refresh":
            self._count(info)
        elif event == "fenced":
            self.fenced.inc()
        self.up.set(1 if info.ok else 0)
        self.last_success.set(info.last_success or 0)
        self.leader.set(1 if view.role == "leader" else 0)
        with self._own_lock:
            self._own = (float("-inf"), b"", b"")  # the next scrape shows this change

    def count_closed(self, reason: str) -> None:
        """The listener closed a connection early (an HTTP_CLOSE_REASONS reason)."""
        self.http_closed.labels(reason).inc()

    def _count(self, info: RefreshInfo) -> None:
        """Observe a refresh once, and its failure once, however often its view is published."""
        # A refresh is published again, as failed, when a subscriber could not take its view.
        refresh = (info.last_attempt, info.count)
        if refresh != self._counted[0] and info.duration is not None:
            self.duration.observe(info.duration)
        if info.reason and (refresh, info.reason) != self._counted:
            self.failures.labels(info.reason).inc()
        self._counted = (refresh, info.reason)

    def _own_parts(self) -> tuple[bytes, bytes]:
        """The self-metrics (plain, final deflate block), rendered at most once per SELF_METRICS_TTL."""
        rendered_at, plain, deflated = self._own
        if self._clock() - rendered_at < SELF_METRICS_TTL:
            return plain, deflated
        with self._own_lock:  # one thread renders; the others reuse its bytes
            if self._clock() - self._own[0] >= SELF_METRICS_TTL:
                own = generate_latest(self.registry)
                self._own = (self._clock(), own, _deflate(own, 1, final=True))
            return self._own[1], self._own[2]

    def scrape(self, use_gzip: bool) -> list[bytes]:
        """The whole exposition as chunks: cached datastore bytes, then the self-metrics."""
        zipped, crc, length = self._parts
        own_plain, own_deflated = self._own_parts()
        if not use_gzip:  # Prometheus always asks for gzip; curl without --compressed pays ~1 ms per MB
            return [zlib.decompressobj(-15).decompress(memoryview(zipped)[len(GZIP_HEADER):]), own_plain]
        # One gzip member from two deflate runs: the cached one ends on a byte boundary without a
        # final block, the small one per scrape closes the stream; only the trailer is computed.
        # (Two concatenated members would be valid gzip too, but curl and browsers keep the first.)
        trailer = struct.pack("<II", zlib.crc32(own_plain, crc), (length + len(own_plain)) & 0xFFFFFFFF)
        return [zipped, own_deflated + trailer]  # two writes, the cached part never copied


def _deflate(data: bytes, level: int, final: bool) -> bytes:
    """Raw deflate of `data`; not final: ends with a sync flush so more blocks can follow."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)
