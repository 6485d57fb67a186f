"""The body of a time series panel: axes, lines, dashed thresholds and the legend, in SVG."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from html import escape as esc

from .grafana_units import CLASSIC, color, field_defaults, format_value
from .layout import CHAR, last_value, no_data


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
        return no_data()
    config = field_defaults(panel)
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
