# One command per habit: make demo, make test, make lint, make bench.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help venv demo test lint bench golden screenshot clean

help:
	@echo "make demo   - run the exporter against the simulated Proxmox cluster"
	@echo "make test   - run the test suite"
	@echo "make lint   - ruff"
	@echo "make bench  - benchmark against prometheus-pve-exporter (writes tests/bench/results.md)"
	@echo "make golden - regenerate golden files (exposition, seed JSON)"
	@echo "make screenshot - docs/screenshot*.png of the page from a real browser run"

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/pve-datastore-exporter demo

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check exporter tests

golden: $(STAMP)
	UPDATE_GOLDEN=1 $(BIN)/pytest tests/test_golden.py

bench: $(STAMP)
	$(BIN)/python -m tests.bench.run

screenshot: $(STAMP)
	$(BIN)/python -m tests.screenshot

clean:
	rm -rf $(VENV) build *.egg-info exporter/*.egg-info .pytest_cache
