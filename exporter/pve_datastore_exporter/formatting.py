"""Sizes and usage as people read them: the one formatter of the page (through i18n, which says ages
the locale's way) and of the `list` command."""

from __future__ import annotations

from .records import View
from .risk_answers import page_risks

UNKNOWN = "–"  # an en dash: a size or a ratio Proxmox did not report
UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
HIGH, CRITICAL = 80, 90  # per cent used: the page's amber and red, as on the dashboard (docs/dashboard.md)


def iec(value: int | None) -> str:
    """Bytes in the largest IEC unit they reach, two decimals rounded half up; "–" when unknown."""
    if value is None:
        return UNKNOWN
    unit, name = 1, "B"
    for candidate in UNITS:
        if value >= unit * 1024:
            unit, name = unit * 1024, candidate
    if unit == 1:
        return f"{value} B"
    # Integer arithmetic: a float would misround sizes past 2**53 bytes and halves like 1.125 GiB.
    hundredths = (value * 100 + unit // 2) // unit
    return f"{hundredths // 100}.{hundredths % 100:02d} {name}"


def percent(used: int | None, size: int | None) -> str:
    """Used as a share of size, one decimal rounded half up; "–" without a size."""
    if not size or used is None:
        return UNKNOWN
    tenths = (used * 1000 + size // 2) // size
    return f"{tenths // 10}.{tenths % 10} %"


def level(used: int | None, size: int | None) -> str:
    """"ok", "high" from 80 % used, "critical" from 90 %, "unknown" without a size."""
    if not size or used is None:
        return "unknown"
    if used * 100 >= size * CRITICAL:
        return "critical"
    return "high" if used * 100 >= size * HIGH else "ok"


def printable(text: object) -> str:
    """`text` safe for a terminal: what repr would escape (ESC as \\x1b, a newline as \\n) escaped, the rest kept."""
    text = str(text)
    # A terminal obeys ESC, OSC and CSI sequences, BEL and bidi overrides, and a newline forges a row:
    # control, format and separator characters and lone surrogates, all of which isprintable() refuses.
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def format_table(view: View) -> str:
    """The `list` command's table, laid out like `pvesm status`, with the defaults marked."""
    lines = [f"{'Name':<20} {'Type':<10} {'Status':<9} {'Total':>12} {'Used':>12} {'Available':>12} {'%':>7}  Default"]
    for d in view.enabled:
        marks = ",".join(m for m, on in (("hdd", d.is_default_hdd), ("ssd", d.is_default_ssd)) if on)
        status = "active" if d.active else "inactive"
        lines.append(f"{printable(d.id):<20} {printable(d.type):<10} {status:<9} {iec(d.size):>12} {iec(d.used):>12} "
                     f"{iec(d.available):>12} {percent(d.used, d.size):>7}  {marks}")
    lines.append(f"default HDD: {printable(view.default_hdd)}  default SSD: {printable(view.default_ssd)}  "
                 f"(source: {view.source})")
    # What the per-node reads found at risk, in the page's words (English, like the rest of the table).
    for datastore_id, risks in page_risks(view).items():
        lines += [f"{r.level}: {printable(datastore_id) + ': ' if datastore_id else ''}{printable(r.english())}" for r in risks]
    return "\n".join(lines)
