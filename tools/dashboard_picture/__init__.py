"""A picture of the Grafana dashboard's layout and data: `python -m tools.dashboard_picture` (make dashboard-picture).

There is no Grafana here, and the picture is *not* a Grafana screenshot. The script starts the
simulated cluster, the exporter and a real Prometheus (scraping every second) as
tests/test_prometheus_integration.py does, lets ~30 s of samples accumulate, runs every panel's
queries through Prometheus' HTTP API with the variables resolved as that test does (*All* = `.*`),
lays the panels out on Grafana's 24-column grid from their gridPos, draws their data in plain
HTML/CSS/SVG (no JavaScript, nothing from the network) and saves a full-page PNG from headless
Chromium.

`page.render_html()` is a pure function (dashboard + query results -> HTML); tests/test_dashboard_picture.py
checks it without a browser or Prometheus.

Modules: grafana_units (Grafana's units and colours), layout (the grid, a panel's series), panels
(stat, gauge, bar gauge, table), timeseries, page (every panel in its box, the whole page) and run
(the stack, the queries, the PNG).
"""
