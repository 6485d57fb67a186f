"""`make bench`: our exporter against prometheus-pve-exporter and a static file, on the simulated cluster.

Run on demand with `make bench` (never part of `make test`), which first builds .venv-bench (the peer)
from requirements/bench.txt and then runs `python -m tools.bench.run`; it writes tools/bench/results.md
and tools/bench/results.json.
"""
