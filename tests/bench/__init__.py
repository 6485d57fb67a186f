"""`make bench`: our exporter against prometheus-pve-exporter and a static file, on the simulated cluster.

Run on demand with `python -m tests.bench.run` (never part of `make test`); it writes
tests/bench/results.md and tests/bench/results.json.
"""
