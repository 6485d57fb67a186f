"""The `list` command's table, laid out like `pvesm status`, its figures written as on the page."""

from __future__ import annotations

from .formatting import iec, percent
from .records import View


def format_table(view: View) -> str:
    """A table like `pvesm status`, with the defaults marked."""
    lines = [f"{'Name':<20} {'Type':<10} {'Status':<9} {'Total':>12} {'Used':>12} {'Available':>12} {'%':>7}  Default"]
    for d in view.enabled:
        marks = ",".join(m for m, on in (("hdd", d.is_default_hdd), ("ssd", d.is_default_ssd)) if on)
        status = "active" if d.active else "inactive"
        lines.append(f"{d.id:<20} {d.type:<10} {status:<9} {iec(d.size):>12} {iec(d.used):>12} "
                     f"{iec(d.available):>12} {percent(d.used, d.size):>7}  {marks}")
    lines.append(f"default HDD: {view.default_hdd}  default SSD: {view.default_ssd}  (source: {view.source})")
    return "\n".join(lines)
