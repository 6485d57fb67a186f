"""The page: caption, notes, variable values and every panel placed on the grid with its data."""

from __future__ import annotations

from html import escape as esc

from .. import grafana_queries as gq
from .grafana_units import field_defaults
from .layout import GRID_WIDTH, HEADER, PAD, PAGE_PADDING, grid_box, layout_panels, no_data, panel_key, panel_series
from .panels import render_bargauge, render_gauge, render_stat, render_table
from .timeseries import render_timeseries

CAPTION = ("Layout and data of grafana/dashboards/pve-datastores.json, rendered from a real Prometheus run "
           "against the simulated cluster — not a Grafana screenshot")


def _panel_meta(panel: dict) -> str:
    """`type · unit(s)` for the panel's title bar."""
    units = [field_defaults(panel).get("unit")]
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
        body = no_data("query error: " + "; ".join(errors))
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
        body = no_data(f"panel type {kind} is not drawn here")
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
