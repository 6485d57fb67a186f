"""A picture of the Grafana dashboard's layout and data: `python -m tests.dashboard_picture` (make dashboard-picture).

There is no Grafana here, and the picture is *not* a Grafana screenshot. The script starts the
simulated cluster, the exporter and a real Prometheus (scraping every second) as
tests/test_prometheus_integration.py does, lets ~30 s of samples accumulate, runs every panel's
queries through Prometheus' HTTP API with the variables resolved as that test does (*All* = `.*`),
lays the panels out on Grafana's 24-column grid from their gridPos, draws their data in plain
HTML/CSS/SVG (no JavaScript, nothing from the network) and saves a full-page PNG from headless
Chromium.

`render_html()` is a pure function (dashboard + query results -> HTML); tests/test_dashboard_picture.py
checks it without a browser or Prometheus.
"""

from __future__ import annotations

import argparse
import html
import math
import re
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from . import grafana_queries as gq

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "docs" / "dashboard.png"
CAPTION = ("Layout and data of grafana/dashboards/pve-datastores.json, rendered from a real Prometheus run "
           "against the simulated cluster — not a Grafana screenshot")

# Grafana's grid: 24 columns, 30 px per height unit, 8 px between panels.
COLUMNS, CELL_HEIGHT, MARGIN = 24, 30, 8
PAGE_WIDTH, PAGE_PADDING = 1600, 16
GRID_WIDTH = PAGE_WIDTH - 2 * PAGE_PADDING
HEADER, PAD = 26, 8  # a panel's title bar and inner padding, px
MAX_PNG_BYTES = 600 * 1024

# Grafana's named colours (dark theme) and its classic series palette.
NAMED_COLORS = {"green": "#73bf69", "red": "#f2495c", "orange": "#ff9830", "yellow": "#fade2a",
                "blue": "#5794f2", "purple": "#b877d9", "text": "#ccccdc", "transparent": "transparent"}
CLASSIC = ["#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a6", "#705da0",
           "#508642", "#cca300", "#447ebc", "#c15c17", "#890f02", "#0a437c", "#6d1f62", "#584477"]
CHAR = 0.56  # average glyph width of the sans-serif font, in em

_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
esc = html.escape


# --- formatting -------------------------------------------------------------------------------


def color(name: str | None) -> str:
    """A Grafana colour name (or CSS colour) as CSS."""
    return NAMED_COLORS.get(name or "text", name or NAMED_COLORS["text"])


def _fixed(number: float, decimals: int | None) -> str:
    if decimals is None:  # Grafana's "auto", roughly
        magnitude = abs(number)
        whole = abs(number - round(number)) < 1e-9 * max(1.0, magnitude)
        decimals = 0 if magnitude >= 100 or whole else 1 if magnitude >= 10 else 2
    return f"{number:.{decimals}f}"


def _scaled(value: float, base: int, units: tuple[str, ...], decimals: int | None) -> str:
    magnitude, index = abs(value), 0
    while magnitude >= base and index < len(units) - 1:
        magnitude, index = magnitude / base, index + 1
    return f"{_fixed(math.copysign(magnitude, value), decimals)}{units[index]}"


def _seconds(value: float, decimals: int | None) -> str:
    magnitude = abs(value)
    if magnitude == 0:
        return "0 s"
    for limit, divisor, unit in ((1e-3, 1e-6, "µs"), (1, 1e-3, "ms"), (60, 1, "s"), (3600, 60, "min"),
                                 (86400, 3600, "hour"), (604800, 86400, "day"), (31536000, 604800, "week")):
        if magnitude < limit:
            return f"{_fixed(value / divisor, decimals)} {unit}"
    return f"{_fixed(value / 31536000, decimals)} year"


def format_value(value: float | None, unit: str | None = None, decimals: int | None = None) -> str:
    """A value as Grafana's unit formatters show it: bytes/binBps in IEC, percentunit, s, short."""
    if value is None:
        return "No data"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if unit == "bytes":
        return _scaled(value, 1024, (" B", " KiB", " MiB", " GiB", " TiB", " PiB", " EiB"), decimals)
    if unit == "binBps":
        return _scaled(value, 1024, (" B/s", " KiB/s", " MiB/s", " GiB/s", " TiB/s", " PiB/s"), decimals)
    if unit == "percentunit":
        return f"{_fixed(value * 100, decimals)}%"
    if unit == "percent":
        return f"{_fixed(value, decimals)}%"
    if unit == "s":
        return _seconds(value, decimals)
    if unit in (None, "", "none", "short"):
        return _scaled(value, 1000, ("", " K", " Mil", " Bil", " Tri"), decimals)
    return f"{_fixed(value, decimals)} {unit}"


def map_value(value: float | None, mappings: list) -> tuple[str, str | None] | None:
    """(text, colour) of the first value/range mapping that matches, as Grafana applies them."""
    for mapping in mappings or []:
        options = mapping.get("options", {})
        if mapping.get("type") == "value" and value is not None:
            for key, result in options.items():
                try:
                    if float(key) == value:
                        return result.get("text", key), result.get("color")
                except ValueError:
                    continue
        elif mapping.get("type") == "range" and value is not None:
            low, high = options.get("from"), options.get("to")
            if (low is None or value >= low) and (high is None or value <= high):
                return options["result"].get("text", ""), options["result"].get("color")
    return None


def value_color(value: float | None, config: dict) -> str:
    """The colour Grafana gives a value: a fixed colour, or the threshold step it falls in."""
    mode = config.get("color", {}).get("mode", "thresholds")
    if mode == "fixed":
        return color(config["color"].get("fixedColor"))
    steps = config.get("thresholds", {}).get("steps") or [{"color": "green", "value": None}]
    chosen = steps[0]["color"]
    for step in steps:
        if step.get("value") is None or (value is not None and not math.isnan(value) and value >= step["value"]):
            chosen = step["color"]
    return color(chosen)


def display(value: float | None, config: dict) -> tuple[str, str]:
    """(text, colour) of a value: value mappings first, then the unit's formatter."""
    mapped = map_value(value, config.get("mappings", []))
    if mapped:
        return mapped[0], color(mapped[1]) if mapped[1] else value_color(value, config)
    return format_value(value, config.get("unit"), config.get("decimals")), value_color(value, config)


# --- layout and series ------------------------------------------------------------------------


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


def _defaults(panel: dict) -> dict:
    return panel.get("fieldConfig", {}).get("defaults", {})


def _font_for(text: str, width: float, height: float, largest: float = 44, smallest: float = 11) -> float:
    """A font size that fits `text` on one line in width x height px."""
    return max(smallest, min(largest, height, width / (CHAR * max(len(text), 1))))


def _no_data(message: str = "No data") -> str:
    return f'<div class="nodata">{esc(message)}</div>'


# --- panel bodies -----------------------------------------------------------------------------


def render_stat(panel: dict, series: list[dict], width: int, height: int) -> str:
    """Big value(s), reduced with lastNotNull; the name too for several values or textMode value_and_name."""
    if not series:
        return _no_data()
    config, options = _defaults(panel), panel.get("options", {})
    mode, color_mode = options.get("textMode", "auto"), options.get("colorMode", "value")
    show_name = mode in ("value_and_name", "name") or (mode == "auto" and len(series) > 1)
    cell = height / len(series)
    cells = []
    for item in series:
        text, shade = display(last_value(item["points"]), config)
        name_size = max(11, min(16, cell * 0.2)) if show_name else 0
        size = _font_for(text, width - 2 * PAD, (cell - name_size * 1.4) * 0.62, largest=48)
        style = f"height:{cell:.0f}px;"
        style += f"background:{shade};color:#fff;" if color_mode == "background" else f"color:{shade};"
        name = f'<div class="name" style="font-size:{name_size:.0f}px">{esc(item["name"])}</div>' if show_name else ""
        cells.append(f'<div class="statcell" style="{style}">{name}'
                     f'<div class="big" style="font-size:{size:.0f}px">{esc(text)}</div></div>')
    return "".join(cells)


def _arc(cx: float, cy: float, r: float, start: float, end: float) -> str:
    """An SVG path of a clockwise arc between two angles in degrees (0 = right, y down)."""
    a, b = math.radians(start), math.radians(end)
    large = 1 if end - start > 180 else 0
    return (f"M{cx + r * math.cos(a):.1f},{cy + r * math.sin(a):.1f} "
            f"A{r:.1f},{r:.1f} 0 {large} 1 {cx + r * math.cos(b):.1f},{cy + r * math.sin(b):.1f}")


def render_gauge(panel: dict, series: list[dict], width: int, height: int) -> str:
    """A 240° gauge per value with threshold markers, in SVG."""
    if not series:
        return _no_data()
    config = _defaults(panel)
    low, high = config.get("min", 0), config.get("max", 1)
    each = width / len(series)
    parts = []
    for index, item in enumerate(series):
        value = last_value(item["points"])
        text, shade = display(value, config)
        # The threshold ring reaches 1.2 r: the 240° sweep needs 2.4 r across and 1.8 r down.
        r = max(10.0, min((each - 8) / 2.4, (height - (18 if len(series) > 1 else 4)) / 1.8))
        cx, cy = index * each + each / 2, 2 + r * 1.2
        stroke = r * 0.2
        fraction = 0.0 if value is None or high == low else min(1.0, max(0.0, (value - low) / (high - low)))
        parts.append(f'<path d="{_arc(cx, cy, r, 150, 390)}" stroke="#2c3235" stroke-width="{stroke:.1f}" fill="none"/>')
        if fraction > 0:
            parts.append(f'<path d="{_arc(cx, cy, r, 150, 150 + 240 * fraction)}" stroke="{shade}" '
                         f'stroke-width="{stroke:.1f}" fill="none"/>')
        steps = config.get("thresholds", {}).get("steps", [])
        if panel.get("options", {}).get("showThresholdMarkers", True) and high != low:
            for step, following in zip(steps, [*steps[1:], None], strict=True):
                begin = 0.0 if step.get("value") is None else (step["value"] - low) / (high - low)
                stop = 1.0 if following is None else (following["value"] - low) / (high - low)
                parts.append(f'<path d="{_arc(cx, cy, r + stroke * 0.85, 150 + 240 * begin, 150 + 240 * stop)}" '
                             f'stroke="{color(step["color"])}" stroke-width="{stroke * 0.3:.1f}" fill="none"/>')
        size = _font_for(text, r * 1.3, r * 0.45, largest=40)
        parts.append(f'<text x="{cx:.1f}" y="{cy + size * 0.35:.1f}" text-anchor="middle" fill="{shade}" '
                     f'font-size="{size:.0f}" font-weight="500">{esc(text)}</text>')
        if len(series) > 1:
            parts.append(f'<text x="{cx:.1f}" y="{height - 2}" text-anchor="middle" font-size="11" '
                         f'fill="#9fa7b3">{esc(item["name"])}</text>')
    return f'<svg width="{width}" height="{height}">{"".join(parts)}</svg>'


def render_bargauge(panel: dict, series: list[dict], width: int, height: int) -> str:
    """Horizontal bars, name left and value right, in the query's order; what does not fit is counted."""
    if not series:
        return _no_data("No data — nothing matches")
    config, options = _defaults(panel), panel.get("options", {})
    values = [last_value(s["points"]) for s in series]
    finite = [v for v in values if v is not None and math.isfinite(v)]
    low = config.get("min", min([0.0, *finite]))
    high = config.get("max", max(finite, default=1.0))
    row = max(options.get("minVizHeight", 16) + 4, min(options.get("maxVizHeight", 24) + 4, height / len(series)))
    fits = max(1, int(height // row))
    shown = series if len(series) <= fits else series[:fits - 1]
    name_width = min(width * 0.38, max(CHAR * 12 * len(s["name"]) for s in shown) + 10)
    texts = [display(v, config) for v in values[:len(shown)]]
    value_width = min(width * 0.25, max(CHAR * 12 * len(t) for t, _ in texts) + 10)
    gradient = options.get("displayMode") == "gradient"
    rows = []
    for item, value, (text, shade) in zip(shown, values, texts, strict=False):
        fraction = 0.0 if value is None or high == low else min(1.0, max(0.0, (value - low) / (high - low)))
        fill = f"linear-gradient(90deg, {shade}55, {shade})" if gradient else shade
        rows.append(
            f'<div class="bar" style="height:{row - 4:.0f}px">'
            f'<span class="bname" style="width:{name_width:.0f}px" title="{esc(item["name"])}">{esc(item["name"])}</span>'
            f'<span class="track"><span class="fill" style="width:{fraction * 100:.1f}%;background:{fill}"></span></span>'
            f'<span class="bvalue" style="width:{value_width:.0f}px;color:{shade}">{esc(text)}</span></div>')
    if len(shown) < len(series):
        rows.append(f'<div class="more">+ {len(series) - len(shown)} more</div>')
    return "".join(rows)


def table_frame(panel: dict, queries: list[dict]) -> tuple[list[str], list[dict]]:
    """Columns and rows after the panel's merge and organize transformations."""
    results = [q for q in queries if q.get("result")]
    label_sets = [set(s.get("metric", {})) - {"__name__"} for q in results for s in q["result"]]
    join = set.intersection(*label_sets) if label_sets else set()
    rows: dict[tuple, dict] = {}
    columns: list[str] = []
    for query in results:
        value_column = "Value" if len(queries) == 1 else f"Value #{query.get('refId')}"
        for sample in query["result"]:
            metric = {k: v for k, v in sample.get("metric", {}).items() if k != "__name__"}
            row = rows.setdefault(tuple(sorted((k, metric[k]) for k in join)), {})
            row.update(metric)
            raw = sample["value"] if "value" in sample else sample["values"][-1]
            row[value_column] = float(raw[1])
            for column in [*metric, value_column]:
                if column not in columns:
                    columns.append(column)
    excluded, order, renamed = set(), {}, {}
    for transformation in panel.get("transformations", []):
        if transformation.get("id") == "organize":
            options = transformation.get("options", {})
            excluded |= {k for k, v in options.get("excludeByName", {}).items() if v}
            order.update(options.get("indexByName", {}))
            renamed.update(options.get("renameByName", {}))
    kept = sorted((c for c in columns if c not in excluded and c != "Time"),
                  key=lambda c: (order.get(c, len(order) + columns.index(c))))
    frame = [{renamed.get(c, c): row.get(c) for c in kept} for row in rows.values()]
    names = [renamed.get(c, c) for c in kept]
    for sort in reversed(panel.get("options", {}).get("sortBy", [])):
        key = sort.get("displayName")
        if key in names:  # empty cells last either way
            filled = sorted((r for r in frame if r.get(key) is not None), key=lambda r, k=key: r[k],
                            reverse=bool(sort.get("desc")))
            frame = filled + [r for r in frame if r.get(key) is None]
    return names, frame


def column_config(panel: dict, name: str) -> dict:
    """The field config of a table column: the defaults with its byName overrides applied."""
    config = dict(_defaults(panel))
    for override in panel.get("fieldConfig", {}).get("overrides", []):
        matcher = override.get("matcher", {})
        if matcher.get("id") == "byName" and matcher.get("options") == name:
            for prop in override.get("properties", []):
                config[prop["id"]] = prop.get("value")
    return config


def render_table(panel: dict, queries: list[dict], width: int, height: int) -> str:
    """The first rows of the merged table that fit; numbers formatted per column, gauge cells as bars."""
    names, frame = table_frame(panel, queries)
    if not frame:
        return _no_data()
    row_height = 24
    fits = max(1, int((height - row_height) // row_height))
    shown = frame if len(frame) <= fits else frame[:fits - 1]
    configs = {n: column_config(panel, n) for n in names}
    head = "".join(f'<th style="{_width_style(configs[n])}">{esc(n)}</th>' for n in names)
    body = []
    for row in shown:
        cells = []
        for name in names:
            value, config = row.get(name), configs[name]
            if isinstance(value, float):
                text, shade = display(value, config)
                if config.get("custom.cellOptions", {}).get("type") == "gauge":
                    low, high = config.get("min", 0), config.get("max", 1)
                    fraction = min(1.0, max(0.0, (value - low) / (high - low))) if high != low else 0.0
                    cells.append(f'<td><span class="cellbar"><span class="fill" style="width:{fraction * 100:.1f}%;'
                                 f'background:{shade}"></span></span><span style="color:{shade}">{esc(text)}</span></td>')
                else:
                    cells.append(f'<td class="num">{esc(text)}</td>')
            else:
                cells.append(f"<td>{esc('' if value is None else str(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    if len(shown) < len(frame):
        body.append(f'<tr><td class="more" colspan="{len(names)}">+ {len(frame) - len(shown)} more rows</td></tr>')
    return f'<table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _width_style(config: dict) -> str:
    width = config.get("custom.width")
    return f"width:{width}px" if width else ""


def _nice_step(span: float, count: int, scale: float = 1.0) -> float:
    """A 1/2/2.5/5 x 10^n step giving about `count` ticks, in units of `scale` (1024^k for IEC units)."""
    raw = span / scale / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    return scale * next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)


def _unit_scale(config: dict, low: float, high: float) -> float:
    """1024^k of the largest value for byte units, so that ticks fall on round KiB/MiB/GiB/TiB."""
    largest = max(abs(low), abs(high))
    if config.get("unit") not in ("bytes", "binBps") or largest < 1024:
        return 1.0
    return 1024.0 ** min(6, int(math.log(largest, 1024)))


def _axis(values: list[float], config: dict, ticks: int) -> tuple[float, float, list[float]]:
    """The y range and tick values: min/max from the field, soft min, centred zero, nice bounds.

    Ticks are never finer than the field's decimals allow (no "0, 0, 1" on a counter)."""
    custom = config.get("custom", {})
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if custom.get("axisSoftMin") is not None:
        low = min(low, custom["axisSoftMin"])
    if custom.get("axisSoftMax") is not None:
        high = max(high, custom["axisSoftMax"])
    if custom.get("axisCenteredZero"):
        high = max(abs(low), abs(high))
        low = -high
    if high == low:
        high, low = (1.0, 0.0) if low == 0 else (low + abs(low) * 0.1, low - abs(low) * 0.1)
    scale = _unit_scale(config, low, high)
    step = _nice_step(high - low, ticks, scale)
    low = config["min"] if config.get("min") is not None else math.floor(low / step + 1e-9) * step
    high = config["max"] if config.get("max") is not None else math.ceil(high / step - 1e-9) * step
    step = _nice_step(high - low, ticks, scale)
    if config.get("decimals") is not None and config.get("unit") in (None, "", "none", "short"):
        step = max(step, 10.0 ** -config["decimals"])
    first = math.ceil(low / step - 1e-9) * step
    marks = [round(first + i * step, 12) for i in range(int((high - first) / step + 1e-9) + 1)]
    return low, high, marks


def render_timeseries(panel: dict, series: list[dict], width: int, height: int,
                      window: tuple[float, float] | None = None) -> str:
    """Polylines over the window with y and time axes, dashed thresholds and the panel's legend."""
    if not series:
        return _no_data()
    config = _defaults(panel)
    legend = panel.get("options", {}).get("legend", {})
    unit, decimals = config.get("unit"), config.get("decimals")
    colors = [CLASSIC[i % len(CLASSIC)] for i in range(len(series))]
    lasts = [format_value(last_value(s["points"]), unit, decimals) for s in series]
    legend_html, plot_w, plot_h = "", width, height
    if legend.get("showLegend", True) and legend.get("placement") == "right":
        name_w = max(CHAR * 11 * len(s["name"]) for s in series) + 22
        last_w = max(CHAR * 11 * len(t) for t in [*lasts, "Last *"]) + 10
        legend_w = min(width * 0.45, name_w + last_w)
        plot_w = width - legend_w - 8
        fits = max(1, int((height - 18) // 17))
        shown = range(len(series)) if len(series) <= fits else range(fits - 1)
        rows = "".join(f'<tr><td><i style="background:{colors[i]}"></i>{esc(series[i]["name"])}</td>'
                       f'<td class="num">{esc(lasts[i])}</td></tr>' for i in shown)
        if len(shown) < len(series):
            rows += f'<tr><td class="more" colspan="2">+ {len(series) - len(shown)} more</td></tr>'
        legend_html = (f'<table class="legend right" style="width:{legend_w:.0f}px">'
                       f'<thead><tr><th>Name</th><th class="num">Last *</th></tr></thead><tbody>{rows}</tbody></table>')
    elif legend.get("showLegend", True):
        lines, used = 1, 0.0
        for item in series:
            need = CHAR * 11 * len(item["name"]) + 26
            if used + need > width and used:
                lines, used = lines + 1, 0.0
            used += need
        plot_h = height - 16 * lines - 4
        items = "".join(f'<span><i style="background:{c}"></i>{esc(s["name"])}</span>' for s, c in zip(series, colors, strict=True))
        legend_html = f'<div class="legend bottom">{items}</div>'

    values = [v for s in series for _, v in s["points"] if math.isfinite(v)]
    times = [t for s in series for t, _ in s["points"]]
    start, end = window or (min(times), max(times))
    end = end if end > start else start + 1
    low, high, marks = _axis(values, config, max(2, int(plot_h // 40)))
    labels = [format_value(m, unit, decimals) for m in marks]
    left = max(CHAR * 11 * len(t) for t in labels) + 8
    top, bottom, right = 6, 18, 6
    inner_w, inner_h = plot_w - left - right, plot_h - top - bottom

    def px(t: float) -> float:
        return left + (t - start) / (end - start) * inner_w

    def py(v: float) -> float:
        return top + (high - min(high, max(low, v))) / (high - low) * inner_h

    svg = []
    for mark, label in zip(marks, labels, strict=True):
        svg.append(f'<line x1="{left}" x2="{left + inner_w:.0f}" y1="{py(mark):.1f}" y2="{py(mark):.1f}" class="gridline"/>'
                   f'<text x="{left - 4:.0f}" y="{py(mark) + 4:.1f}" text-anchor="end" class="tick">{esc(label)}</text>')
    tick = next((s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 43200, 86400)
                 if (end - start) / s <= max(2, inner_w // 90)), 86400)
    mark, half_label = math.ceil(start / tick) * tick, CHAR * 11 * 4 + 2  # HH:MM:SS is 8 characters
    while mark <= end:
        svg.append(f'<line x1="{px(mark):.1f}" x2="{px(mark):.1f}" y1="{top}" y2="{top + inner_h:.0f}" class="gridline"/>')
        if left <= px(mark) - half_label and px(mark) + half_label <= plot_w:  # clear of the y labels and the edge
            svg.append(f'<text x="{px(mark):.1f}" y="{plot_h - 4}" text-anchor="middle" class="tick">'
                       f'{datetime.fromtimestamp(mark, UTC):%H:%M:%S}</text>')
        mark += tick
    if config.get("custom", {}).get("thresholdsStyle", {}).get("mode") in ("dashed", "line", "line+area", "dashed+area"):
        for step in config.get("thresholds", {}).get("steps", []):
            if step.get("value") is not None and low <= step["value"] <= high:
                svg.append(f'<line x1="{left}" x2="{left + inner_w:.0f}" y1="{py(step["value"]):.1f}" '
                           f'y2="{py(step["value"]):.1f}" stroke="{color(step["color"])}" stroke-dasharray="6 4"/>')
    opacity = config.get("custom", {}).get("fillOpacity", 0) / 100
    base = py(min(max(0.0, low), high))
    for item, shade in zip(series, colors, strict=True):
        segments, current = [], []
        for t, v in item["points"]:
            if math.isfinite(v):
                current.append(f"{px(t):.1f},{py(v):.1f}")
            elif current:
                segments.append(current)
                current = []
        segments.append(current)
        for points in (s for s in segments if s):
            if opacity and len(points) > 1:
                first_x, last_x = points[0].split(",")[0], points[-1].split(",")[0]
                svg.append(f'<polygon points="{first_x},{base:.1f} {" ".join(points)} {last_x},{base:.1f}" '
                           f'fill="{shade}" fill-opacity="{opacity:.2f}"/>')
            svg.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="{shade}" '
                       f'stroke-width="{config.get("custom", {}).get("lineWidth", 1)}"/>')
    plot = f'<svg class="plot" width="{plot_w:.0f}" height="{plot_h:.0f}">{"".join(svg)}</svg>'
    if legend.get("placement") == "right":
        return f'<div class="ts right">{plot}{legend_html}</div>'
    return f'<div class="ts">{plot}{legend_html}</div>'


def _panel_meta(panel: dict) -> str:
    """`type · unit(s)` for the panel's title bar."""
    units = [_defaults(panel).get("unit")]
    units += [p.get("value") for o in panel.get("fieldConfig", {}).get("overrides", [])
              for p in o.get("properties", []) if p.get("id") == "unit"]
    units = list(dict.fromkeys(u for u in units if u))
    return " · ".join([panel.get("type", "?"), *([", ".join(units)] if units else [])])


def render_panel(panel: dict, queries: list[dict], width: int = GRID_WIDTH,
                 window: tuple[float, float] | None = None) -> str:
    """One panel, absolutely placed from its gridPos; a row is a section header across the grid."""
    left, top, w, h = grid_box(panel["gridPos"], width)
    pos = ",".join(str(panel["gridPos"][k]) for k in "xywh")
    place = f"left:{left}px;top:{top}px;width:{w}px;height:{h}px"
    title = esc(panel.get("title", ""))
    if panel.get("type") == "row":
        hidden = panel.get("panels", []) if panel.get("collapsed") else []
        note = (f'<span class="meta">collapsed: {esc(", ".join(p.get("title", "") for p in hidden))}</span>'
                if hidden else "")
        return (f'<div class="row" data-title="{title}" data-gridpos="{pos}" style="{place}">'
                f'<span class="chevron">{"▸" if panel.get("collapsed") else "▾"}</span>{title}{note}</div>')
    body_w, body_h = w - 2 * PAD, h - HEADER - 2 * PAD
    kind = panel.get("type")
    series = panel_series(panel, queries)
    errors = [q["error"] for q in queries if q.get("error")]
    if errors:
        body = _no_data("query error: " + "; ".join(errors))
    elif kind == "stat":
        body = render_stat(panel, series, body_w, body_h)
    elif kind == "gauge":
        body = render_gauge(panel, series, body_w, body_h)
    elif kind == "bargauge":
        body = render_bargauge(panel, series, body_w, body_h)
    elif kind == "table":
        body = render_table(panel, queries, body_w, body_h)
    elif kind == "timeseries":
        body = render_timeseries(panel, series, body_w, body_h, window)
    elif kind == "text":
        body = f'<div class="text">{esc(panel.get("options", {}).get("content", ""))}</div>'
    else:
        body = _no_data(f"panel type {kind} is not drawn here")
    return (f'<section class="panel type-{esc(kind or "")}" data-title="{title}" data-gridpos="{pos}" style="{place}">'
            f'<header><h2>{title}</h2><span class="meta">{esc(_panel_meta(panel))}</span></header>'
            f'<div class="body" style="width:{body_w}px;height:{body_h}px">{body}</div></section>')


STYLE = """
* { box-sizing: border-box; }
body { margin: 0; padding: %(pad)dpx; width: %(page)dpx; background: #111217; color: #ccccdc;
       font: 13px/1.3 "Liberation Sans", "DejaVu Sans", sans-serif; }
.caption { border: 2px dashed #ff9830; border-radius: 4px; padding: 10px 14px; margin-bottom: 10px;
           background: #22252b; color: #fff; font-size: 17px; font-weight: 700; }
.notes { color: #9fa7b3; font-size: 12px; margin: 0 0 10px; }
.notes div { margin: 2px 0; }
.title { font-size: 20px; color: #fff; margin: 4px 0 8px; }
.vars { display: flex; gap: 8px; margin-bottom: 12px; flex-wrap: wrap; }
.vars span { border: 1px solid #34373d; background: #181b1f; border-radius: 2px; padding: 3px 8px; font-size: 12px; }
.vars b { color: #9fa7b3; font-weight: 400; margin-right: 6px; }
.grid { position: relative; }
.row { position: absolute; font-size: 16px; font-weight: 600; color: #fff; padding-top: 6px;
       border-bottom: 1px solid #2c3235; white-space: nowrap; }
.row .chevron { color: #9fa7b3; margin-right: 6px; }
.row .meta { margin-left: 12px; color: #9fa7b3; font-size: 12px; font-weight: 400; }
.panel { position: absolute; background: #181b1f; border: 1px solid #2c3235; border-radius: 2px; overflow: hidden; }
.panel header { height: %(header)dpx; display: flex; justify-content: space-between; align-items: center;
                padding: 0 %(padding)dpx; gap: 8px; }
.panel h2 { margin: 0; font-size: 14px; font-weight: 500; color: #fff; white-space: nowrap; overflow: hidden;
            text-overflow: ellipsis; }
.panel header .meta { font-size: 11px; color: #8e8e99; background: #22252b; border-radius: 2px; padding: 1px 6px;
                      white-space: nowrap; }
.panel .body { margin: %(padding)dpx; position: relative; overflow: hidden; }
.nodata { height: 100%%; display: flex; align-items: center; justify-content: center; color: #8e8e99; font-size: 14px;
          text-align: center; }
.statcell { display: flex; flex-direction: column; justify-content: center; align-items: center; border-radius: 2px;
        overflow: hidden; white-space: nowrap; }
.statcell .big { font-weight: 500; line-height: 1.1; }
.statcell .name { color: inherit; opacity: .85; margin-bottom: 2px; }
.bar { display: flex; align-items: center; gap: 8px; margin-bottom: 4px; font-size: 12px; }
.bname { text-align: right; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; color: #ccccdc; }
.track { flex: 1; height: 100%%; background: #22252b; border-radius: 2px; overflow: hidden; }
.track .fill, .cellbar .fill { display: block; height: 100%%; }
.bvalue { white-space: nowrap; font-weight: 600; font-size: 13px; }
.more { color: #8e8e99; font-size: 11px; font-style: italic; }
table { border-collapse: collapse; width: 100%%; font-size: 12px; }
th { text-align: left; color: #6e9fff; font-weight: 500; border-bottom: 1px solid #2c3235; padding: 4px 8px;
     white-space: nowrap; }
td { border-bottom: 1px solid #22252b; padding: 0 8px; height: 24px; white-space: nowrap; }
td.num, th.num { text-align: right; }
.cellbar { display: inline-block; width: 150px; height: 10px; background: #22252b; margin-right: 8px;
           vertical-align: middle; border-radius: 2px; overflow: hidden; }
.ts { display: flex; flex-direction: column; }
.ts.right { flex-direction: row; gap: 8px; align-items: flex-start; }
.plot .gridline { stroke: #2c3235; stroke-width: 1; }
.plot .tick { fill: #9fa7b3; font-size: 11px; }
.legend { font-size: 11px; }
.legend i { display: inline-block; width: 12px; height: 3px; margin: 0 5px 3px 0; vertical-align: middle; }
.legend.bottom { display: flex; flex-wrap: wrap; gap: 0 12px; padding-left: 4px; line-height: 16px; }
.legend.right th { font-size: 11px; padding: 1px 4px; }
.legend.right td { height: 17px; padding: 0 4px; }
.text { white-space: pre-wrap; }
"""


def _variable_chips(dashboard: dict, values: dict | None) -> str:
    chips = []
    for variable in gq.variables(dashboard):
        if variable.get("hide") == 2:
            continue
        value = (values or {}).get(variable["name"], "")
        if variable["type"] == "datasource":
            value = "Prometheus"
        elif value == variable.get("allValue", ".*") and variable.get("includeAll"):
            value = "All"
        chips.append(f'<span><b>{esc(variable.get("label") or variable["name"])}</b>{esc(value)}</span>')
    return f'<div class="vars">{"".join(chips)}</div>'


def render_html(dashboard: dict, results: dict, *, values: dict | None = None,
                window: tuple[float, float] | None = None, notes: tuple[str, ...] | list[str] = (),
                width: int = GRID_WIDTH) -> str:
    """The page: caption, notes, variable values and every panel placed on the grid with its data.

    `results` maps panel_key(panel) to that panel's queries: dicts with refId and Prometheus' `result`
    (instant vectors with `value`, range matrices with `values`), and `error` when the query failed.
    """
    panels = layout_panels(dashboard)
    bottom = max((sum(grid_box(p["gridPos"], width)[1::2]) for p in panels), default=0)
    body = "".join(render_panel(p, results.get(panel_key(p), []), width, window) for p in panels)
    style = STYLE % {"pad": PAGE_PADDING, "page": width + 2 * PAGE_PADDING, "header": HEADER, "padding": PAD}
    notes_html = "".join(f"<div>{esc(n)}</div>" for n in notes)
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{esc(dashboard.get('title', 'dashboard'))} — layout and data</title><style>{style}</style></head>"
            f'<body><div class="caption">{esc(CAPTION)}</div><div class="notes">{notes_html}</div>'
            f'<div class="title">{esc(dashboard.get("title", ""))}</div>{_variable_chips(dashboard, values)}'
            f'<div class="grid" style="width:{width}px;height:{bottom}px">{body}</div></body></html>\n')


# --- the run: simulator, exporter, Prometheus -------------------------------------------------


def collect(prometheus, dashboard: dict, values: dict, start: float, end: float, step: float = 1.0) -> dict:
    """Every visible panel's queries: instant at `end`, or over [start, end] for timeseries panels."""
    import requests

    results = {}
    for panel in layout_panels(dashboard):
        queries = []
        for target in panel.get("targets", []):
            if target.get("hide"):
                continue
            expr = gq.substitute(target["expr"], values)
            entry = {"refId": target.get("refId"), "expr": expr}
            try:
                if panel["type"] == "timeseries":
                    data = prometheus.api("query_range", query=expr, start=start, end=end, step=step)
                else:
                    data = prometheus.api("query", query=expr, time=end)
                entry["result"] = data["result"]
            except (AssertionError, requests.RequestException, ValueError, KeyError) as exc:
                entry["result"], entry["error"] = [], str(exc)[:200]
            queries.append(entry)
        results[panel_key(panel)] = queries
    return results


def gather(seconds: float) -> tuple[dict, dict, dict, tuple[float, float], list[str]]:
    """Run the stack for `seconds` of samples; the dashboard, variable values, results, window and notes."""
    from .stack import running_stack, wait_for
    from .test_prometheus_integration import resolve_variables

    dashboard = gq.load()
    with tempfile.TemporaryDirectory(prefix="pve-dashboard-picture-") as tmp, running_stack(Path(tmp)) as (prometheus, _):
        wait_for("the first sample", lambda: prometheus.query("pve_datastore_up"))
        start = time.time()
        print(f"dashboard-picture: Prometheus on {prometheus.url}, collecting {seconds:.0f} s of 1 s scrapes", flush=True)
        wait_for("8 samples per capacity series", lambda: prometheus.query(
            "min(count_over_time(pve_datastore_used_bytes[1m])) >= 8"), timeout=max(30.0, seconds + 10))
        time.sleep(max(0.0, start + seconds - time.time()))
        end = time.time()
        values = resolve_variables(prometheus, dashboard, ".*")  # the dashboard's default: All
        results = collect(prometheus, dashboard, values, start, end)
        version = prometheus.api("status/buildinfo").get("version", "?")
    stamp = f"{datetime.fromtimestamp(start, UTC):%Y-%m-%d %H:%M:%S}–{datetime.fromtimestamp(end, UTC):%H:%M:%S} UTC"
    notes = [
        f"Prometheus {version} scraping the exporter every 1 s; the simulator has 3 nodes × 6 datastores drifting "
        f"fast, local-lvm (local) and ceph-vm (shared) filling. Window {stamp} ({end - start:.0f} s).",
        "Stat, gauge, bar gauge and table panels: /api/v1/query at the end of the window; time series: "
        "/api/v1/query_range over the window, step 1 s. Variables: All (.*); $__rate_interval = "
        f"{gq.TEST_MACROS['__rate_interval']}. Panels placed from gridPos on a 24-column grid, 30 px per unit "
        "+ 8 px gaps (Grafana's). Drawing is approximate: Grafana's own rendering differs in detail.",
    ]
    return dashboard, values, results, (start, end), notes


def screenshot(page_html: str, out: Path, width: int = PAGE_WIDTH) -> None:
    """Save a full-page PNG of the HTML from headless Chromium; every network request is refused."""
    from playwright.sync_api import sync_playwright

    from .browser import launch_chromium

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900}, device_scale_factor=1)
            page.route("**/*", lambda route: route.abort())
            page.set_content(page_html, wait_until="load")
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    """Run the stack, query every panel, render the page and screenshot it."""
    from .browser import CHROMIUM

    parser = argparse.ArgumentParser(prog="python -m tests.dashboard_picture", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the PNG to write (default %(default)s)")
    parser.add_argument("--html", type=Path, help="also keep the rendered HTML here")
    parser.add_argument("--seconds", type=float, default=30, help="seconds of samples to collect (default %(default)s)")
    args = parser.parse_args(argv)
    for tool in ("prometheus", CHROMIUM):
        if not shutil.which(tool):
            print(f"dashboard-picture: {tool} is missing (.ci/run installs it)", file=sys.stderr)
            return 1
    import pytest  # the integration test's helpers report a timeout with pytest.fail

    try:
        dashboard, values, results, window, notes = gather(args.seconds)
    except pytest.fail.Exception as exc:
        print(f"dashboard-picture: {exc}", file=sys.stderr)
        return 1
    empty = [p["title"] for p in layout_panels(dashboard)
             if p["type"] != "row" and not any(q.get("result") for q in results.get(panel_key(p), []))]
    if empty:
        print(f"dashboard-picture: panels without data: {', '.join(empty)}", file=sys.stderr)
    page_html = render_html(dashboard, results, values=values, window=window, notes=notes)
    if args.html:
        args.html.write_text(page_html)
        print(f"wrote {args.html}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    screenshot(page_html, args.out)
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size // 1024} KiB)")
    if size > MAX_PNG_BYTES:
        print(f"dashboard-picture: {args.out} is over {MAX_PNG_BYTES // 1024} KiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
