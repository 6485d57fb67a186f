"""Grafana's grid (24 columns, 30 px rows, 8 px gaps), text sizes, and the series a panel shows."""

from __future__ import annotations

import math
import re
from html import escape as esc

# Grafana's grid: 24 columns, 30 px per height unit, 8 px between panels.
COLUMNS, CELL_HEIGHT, MARGIN = 24, 30, 8
PAGE_WIDTH, PAGE_PADDING = 1600, 16
GRID_WIDTH = PAGE_WIDTH - 2 * PAGE_PADDING
HEADER, PAD = 26, 8  # a panel's title bar and inner padding, px
CHAR = 0.56  # average glyph width of the sans-serif font, in em

_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def grid_box(grid_pos: dict, width: int = GRID_WIDTH) -> tuple[int, int, int, int]:
    """(left, top, width, height) in px of a gridPos on Grafana's grid (24 columns, 30 px rows, 8 px gaps)."""
    column = (width + MARGIN) / COLUMNS
    x, y, w, h = (int(grid_pos[k]) for k in "xywh")
    left = round(x * column)
    return left, y * (CELL_HEIGHT + MARGIN), round((x + w) * column - MARGIN) - left, h * CELL_HEIGHT + (h - 1) * MARGIN


def layout_panels(dashboard: dict) -> list[dict]:
    """The top-level panels (rows included) in gridPos order, top to bottom, left to right."""
    return sorted(dashboard.get("panels", []), key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))


def panel_key(panel: dict) -> str:
    """The key of a panel's entry in the results: its id (or its title when it has none)."""
    return str(panel.get("id", panel.get("title", "")))


def series_name(target: dict, metric: dict) -> str:
    """A series' display name: the target's legendFormat, or the series' selector like Grafana."""
    legend = target.get("legendFormat") or ""
    if legend and legend != "__auto":
        return _LEGEND.sub(lambda m: metric.get(m.group(1), ""), legend).strip()
    labels = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    return (metric.get("__name__", "") + (f"{{{labels}}}" if labels else "")) or "Value"


def panel_series(panel: dict, queries: list[dict]) -> list[dict]:
    """Every series of a panel's query results: name, labels, refId and (time, value) points."""
    targets = {t.get("refId"): t for t in panel.get("targets", [])}
    series = []
    for query in queries:
        target = targets.get(query.get("refId"), {})
        for sample in query.get("result") or []:
            raw = sample["values"] if "values" in sample else [sample["value"]]
            series.append({"name": series_name(target, sample.get("metric", {})), "metric": sample.get("metric", {}),
                           "refId": query.get("refId"), "points": [(float(t), float(v)) for t, v in raw]})
    return series


def last_value(points: list[tuple[float, float]]) -> float | None:
    """Grafana's lastNotNull."""
    for _, value in reversed(points):
        if not math.isnan(value):
            return value
    return None


def font_for(text: str, width: float, height: float, largest: float = 44, smallest: float = 11) -> float:
    """A font size that fits `text` on one line in width x height px."""
    return max(smallest, min(largest, height, width / (CHAR * max(len(text), 1))))


def no_data(message: str = "No data") -> str:
    """A panel body with nothing to draw, saying why."""
    return f'<div class="nodata">{esc(message)}</div>'
