"""Prometheus exporter and JSON API for Proxmox VE datastores."""

__version__ = "1.2.0"
