"""Prometheus exporter and JSON API for Proxmox VE datastores."""

__version__ = "0.1.0"
