"""The `list` command's table, laid out like `pvesm status`."""

from __future__ import annotations

from .records import View


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return str(value)


def format_table(view: View) -> str:
    """A table like `pvesm status`, with the defaults marked."""
    lines = [f"{'Name':<20} {'Type':<10} {'Status':<9} {'Total':>12} {'Used':>12} {'Available':>12} {'%':>7}  Default"]
    for row in view.rows:
        r = row.record
        if not r.enabled:
            continue
        percent = f"{100 * r.used / r.size:.2f}%" if r.size else "-"
        marks = ",".join(m for m, on in (("hdd", row.is_default_hdd), ("ssd", row.is_default_ssd)) if on)
        status = "active" if r.active else "inactive"
        lines.append(f"{r.id:<20} {r.type:<10} {status:<9} {_size(r.size):>12} {_size(r.used):>12} "
                     f"{_size(r.available):>12} {percent:>7}  {marks}")
    lines.append(f"default HDD: {view.default_hdd}  default SSD: {view.default_ssd}  (source: {view.source})")
    return "\n".join(lines)
