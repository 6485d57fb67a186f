"""`make bench`: our exporter against prometheus-pve-exporter and a static file, on the simulated cluster.

Run on demand with `python -m tools.bench.run` (never part of `make test`); it writes
tools/bench/results.md and tools/bench/results.json.
"""
