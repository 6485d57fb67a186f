"""The bodies of stat, gauge, bar gauge and table panels, in HTML and SVG."""

from __future__ import annotations

import math
from html import escape as esc

from .grafana_units import color, display, field_defaults
from .layout import CHAR, PAD, font_for, last_value, no_data


def render_stat(panel: dict, series: list[dict], width: int, height: int) -> str:
    """Big value(s), reduced with lastNotNull; the name too for several values or textMode value_and_name."""
    if not series:
        return no_data()
    config, options = field_defaults(panel), panel.get("options", {})
    mode, color_mode = options.get("textMode", "auto"), options.get("colorMode", "value")
    show_name = mode in ("value_and_name", "name") or (mode == "auto" and len(series) > 1)
    cell = height / len(series)
    cells = []
    for item in series:
        text, shade = display(last_value(item["points"]), config)
        name_size = max(11, min(16, cell * 0.2)) if show_name else 0
        size = font_for(text, width - 2 * PAD, (cell - name_size * 1.4) * 0.62, largest=48)
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
        return no_data()
    config = field_defaults(panel)
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
        size = font_for(text, r * 1.3, r * 0.45, largest=40)
        parts.append(f'<text x="{cx:.1f}" y="{cy + size * 0.35:.1f}" text-anchor="middle" fill="{shade}" '
                     f'font-size="{size:.0f}" font-weight="500">{esc(text)}</text>')
        if len(series) > 1:
            parts.append(f'<text x="{cx:.1f}" y="{height - 2}" text-anchor="middle" font-size="11" '
                         f'fill="#9fa7b3">{esc(item["name"])}</text>')
    return f'<svg width="{width}" height="{height}">{"".join(parts)}</svg>'


def render_bargauge(panel: dict, series: list[dict], width: int, height: int) -> str:
    """Horizontal bars, name left and value right, in the query's order; what does not fit is counted."""
    if not series:
        return no_data("No data — nothing matches")
    config, options = field_defaults(panel), panel.get("options", {})
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
    config = dict(field_defaults(panel))
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
        return no_data()
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
