"""tools/dashboard_picture's rendering, as a pure function: no browser, no Prometheus."""

import itertools
import re

import pytest

from tools import grafana_queries as gq
from tools.dashboard_picture.grafana_units import format_value
from tools.dashboard_picture.layout import GRID_WIDTH, grid_box
from tools.dashboard_picture.page import CAPTION, render_html

WIDTH = 24 * 40 - 8  # a grid whose columns are exactly 40 px (32 px panel + 8 px gap)
T0 = 1_700_000_000.0
TIB = 1 << 40
BOX = re.compile(r'data-title="([^"]*)" data-gridpos="(\d+),(\d+),(\d+),(\d+)" '
                 r'style="left:(\d+)px;top:(\d+)px;width:(\d+)px;height:(\d+)px"')


def target(ref, legend="", expr="x"):
    return {"refId": ref, "expr": expr, "legendFormat": legend}


def panel(pid, kind, title, x, y, w, h, unit=None, targets=(), **extra):
    defaults = {"unit": unit} if unit else {}
    defaults.update(extra.pop("defaults", {}))
    return {"id": pid, "type": kind, "title": title, "gridPos": {"x": x, "y": y, "w": w, "h": h},
            "fieldConfig": {"defaults": defaults, "overrides": extra.pop("overrides", [])},
            "targets": list(targets), **extra}


def instant(value, **labels):
    return {"metric": labels, "value": [T0 + 60, str(value)]}


def series(values, **labels):
    return {"metric": labels, "values": [[T0 + i, str(v)] for i, v in enumerate(values)]}


THRESHOLDS = {"mode": "absolute", "steps": [{"color": "green", "value": None}, {"color": "red", "value": 0.9}]}
DASHBOARD = {
    "title": "Tiny", "templating": {"list": []},
    "panels": [  # deliberately not in gridPos order
        panel(9, "timeseries", "Used % over time", 12, 5, 12, 9, "percentunit", [target("A", "{{datastore}} @ {{node}}")],
              defaults={"min": 0, "max": 1, "thresholds": THRESHOLDS, "custom": {"thresholdsStyle": {"mode": "dashed"}}},
              options={"legend": {"placement": "right", "displayMode": "table", "calcs": ["lastNotNull"]}}),
        {"id": 1, "type": "row", "title": "Overview", "collapsed": False, "gridPos": {"x": 0, "y": 0, "w": 24, "h": 1},
         "panels": []},
        panel(2, "stat", "Capacity", 0, 1, 6, 4, "bytes", [target("A", "{{instance}}")], defaults={"decimals": 1}),
        panel(3, "gauge", "Used %", 6, 1, 6, 4, "percentunit", [target("A")],
              defaults={"min": 0, "max": 1, "decimals": 1, "thresholds": THRESHOLDS}),
        panel(4, "stat", "Last refresh", 12, 1, 6, 4, None, [target("A")],
              defaults={"mappings": [{"type": "value", "options": {"1": {"text": "OK", "color": "green"}}}]},
              options={"colorMode": "background"}),
        panel(5, "stat", "Empty", 18, 1, 6, 4, "s", [target("A")]),
        panel(6, "table", "Datastores", 0, 5, 12, 4, None, [target("A"), target("B")],
              overrides=[{"matcher": {"id": "byName", "options": "Size"},
                          "properties": [{"id": "unit", "value": "bytes"}, {"id": "decimals", "value": 1}]}],
              transformations=[{"id": "merge", "options": {}}, {"id": "organize", "options": {
                  "excludeByName": {"job": True}, "indexByName": {"datastore": 0, "Value #A": 1, "Value #B": 2},
                  "renameByName": {"datastore": "Datastore", "Value #A": "Size", "Value #B": "Nodes"}}}],
              options={"sortBy": [{"displayName": "Size", "desc": True}]}),
        panel(7, "bargauge", "Used % per datastore", 0, 9, 12, 5, "percentunit", [target("A", "{{datastore}}")],
              defaults={"min": 0, "max": 1, "decimals": 1, "thresholds": THRESHOLDS}),
    ],
}
RESULTS = {
    "2": [{"refId": "A", "result": [instant(1.5 * TIB, instance="pve:9221")]}],
    "3": [{"refId": "A", "result": [instant(0.456)]}],
    "4": [{"refId": "A", "result": [instant(1)]}],
    "5": [{"refId": "A", "result": []}],
    "6": [{"refId": "A", "result": [instant(2 * TIB, job="j", datastore="local-lvm"),
                                    instant(100 * TIB, job="j", datastore="ceph-vm")]},
          {"refId": "B", "result": [instant(3, job="j", datastore="local-lvm"), instant(1, job="j", datastore="ceph-vm")]}],
    "7": [{"refId": "A", "result": [instant(0.93, datastore="local-lvm"), instant(0.2, datastore="ceph-vm")]}],
    "9": [{"refId": "A", "result": [series([0.5, 0.6, "NaN", 0.7], datastore="local-lvm", node="pve1"),
                                    series([0.2, 0.2, 0.2, 0.2], datastore="ceph-vm", node="shared")]}],
}


def section(page, title):
    """The HTML of one panel."""
    start = page.index(f'data-title="{title}"')
    return page[start:page.index("</section>", start)]


def boxes(page):
    """{title: (gridPos, (left, top, width, height))} of every panel and row of the page."""
    return {m[0]: (tuple(map(int, m[1:5])), tuple(map(int, m[5:9]))) for m in BOX.findall(page)}


@pytest.fixture(scope="module")
def page():
    return render_html(DASHBOARD, RESULTS, window=(T0, T0 + 60), notes=["a note"], width=WIDTH)


def test_caption_says_what_the_picture_is_and_is_not(page):
    assert CAPTION in page
    assert "not a Grafana screenshot" in page and "a note" in page


def test_every_panel_is_placed_from_its_gridpos(page):
    placed = boxes(page)
    assert set(placed) == {p["title"] for p in DASHBOARD["panels"]}
    # 40 px columns with 8 px gaps; 30 px per height unit plus 8 px gaps, like Grafana's grid.
    assert placed["Overview"][1] == (0, 0, WIDTH, 30)
    assert placed["Capacity"] == ((0, 1, 6, 4), (0, 38, 232, 144))
    assert placed["Used %"][1] == (240, 38, 232, 144)
    assert placed["Used % over time"] == ((12, 5, 12, 9), (480, 190, 472, 334))
    assert placed["Used % per datastore"][1] == (0, 342, 472, 182)
    for title, (pos, box) in placed.items():
        assert box == grid_box(dict(zip("xywh", pos, strict=True)), WIDTH), title
    # In gridPos order in the document: rows first, then left to right.
    assert [m[0] for m in BOX.findall(page)][:5] == ["Overview", "Capacity", "Used %", "Last refresh", "Empty"]


def test_panels_show_their_data_formatted_per_unit(page):
    assert "1.5 TiB" in page  # stat, bytes, 1 decimal
    assert "45.6%" in page  # gauge, percentunit
    assert ">OK<" in page and "background:#73bf69" in page  # value mapping, background colour mode
    assert "No data" in section(page, "Empty")  # the stat without a result
    assert "timeseries · percentunit" in page and "stat · bytes" in page  # type and unit in the title bar


def test_table_merges_organizes_and_sorts(page):
    table = section(page, "Datastores")
    assert re.search(r"<th[^>]*>Datastore</th><th[^>]*>Size</th><th[^>]*>Nodes</th>", table)
    assert ">j<" not in table  # job excluded
    assert table.index("ceph-vm") < table.index("local-lvm")  # sorted by size, descending
    assert "100.0 TiB" in table and "2.0 TiB" in table


def test_bargauge_bars_are_sized_and_coloured(page):
    bars = section(page, "Used % per datastore")
    assert "width:93.0%" in bars and "width:20.0%" in bars
    assert "#f2495c" in bars  # 93 % is over the red threshold
    assert "93.0%" in bars and "local-lvm" in bars


def test_timeseries_draws_lines_legend_and_thresholds(page):
    chart = section(page, "Used % over time")
    assert chart.count("<polyline") == 3  # the NaN splits local-lvm's line in two
    assert "local-lvm @ pve1" in chart and "ceph-vm @ shared" in chart
    assert ">70%<" in chart  # lastNotNull in the legend table
    assert 'stroke-dasharray="6 4"' in chart  # the 90 % threshold, dashed


def test_page_is_self_contained(page):
    assert "<script" not in page and "http://" not in page and "https://" not in page and "url(" not in page


def test_the_real_dashboard_lays_out_without_overlaps():
    dashboard = gq.load()
    page = render_html(dashboard, {})
    placed = boxes(page)
    assert set(placed) == {p["title"] for p in dashboard["panels"]}
    for (a, (_, (ax, ay, aw, ah))), (b, (_, (bx, by, bw, bh))) in itertools.combinations(placed.items(), 2):
        assert ax + aw <= bx or bx + bw <= ax or ay + ah <= by or by + bh <= ay, (a, b)
    assert max(x + w for _, (x, _, w, _) in placed.values()) == GRID_WIDTH


@pytest.mark.parametrize("value, unit, decimals, text", [
    (0, "bytes", None, "0 B"),
    (1536, "bytes", 1, "1.5 KiB"),
    (3 * 1024**3, "binBps", None, "3 GiB/s"),
    (-2 * 1024**2, "binBps", 1, "-2.0 MiB/s"),
    (0.8766, "percentunit", 1, "87.7%"),
    (0.0123, "s", None, "12.3 ms"),
    (510, "s", 1, "8.5 min"),
    (9000, "s", 1, "2.5 hour"),
    (2, "short", 0, "2"),
    (1.2834, "suffix:\u00d7", 2, "1.28\u00d7"),
    (float("nan"), "bytes", 1, "NaN"),
    (None, "bytes", 1, "No data"),
])
def test_format_value(value, unit, decimals, text):
    assert format_value(value, unit, decimals) == text
