# One command per habit: make demo, make test, make lint, make bench.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The Ansible tests drive ansible-core 2.20+, which needs Python >= 3.12 on the controller.
ANSIBLE_PYTHON ?= $(shell for p in python3.13 python3.12 $(wildcard $(HOME)/.pyenv/versions/3.1[2-9]*/bin/python3) python3; do \
	$$p -c 'import sys; assert sys.version_info >= (3, 12); print(sys.executable)' 2>/dev/null && break; done)
ANSIBLE_VENV   := .venv-ansible
ANSIBLE_STAMP  := $(ANSIBLE_VENV)/.installed

.PHONY: help venv demo test lint bench golden docs messages screenshot dashboard-picture clean

help:
	@echo "make demo   - run the exporter against the simulated Proxmox cluster"
	@echo "make test   - run the test suite"
	@echo "make lint   - ruff"
	@echo "make bench  - benchmark against prometheus-pve-exporter (writes tools/bench/results.md)"
	@echo "make golden - regenerate golden files (exposition, seed JSON)"
	@echo "make docs   - regenerate .env.example and the README settings table from config.SETTINGS"
	@echo "make messages - extract the page's and the API's texts into the catalogues (locales/*/messages.po)"
	@echo "make screenshot - docs/screenshot*.png of the page from a real browser run"
	@echo "make dashboard-picture - docs/dashboard.png: the dashboard's layout and data from a real Prometheus run"

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

$(ANSIBLE_STAMP): ansible/requirements-test.txt
	@test -n "$(ANSIBLE_PYTHON)" || { echo "make: Python >= 3.12 is needed for the Ansible tests (set ANSIBLE_PYTHON)"; exit 1; }
	$(ANSIBLE_PYTHON) -m venv $(ANSIBLE_VENV)
	$(ANSIBLE_VENV)/bin/pip install --quiet --upgrade pip
	$(ANSIBLE_VENV)/bin/pip install --quiet -r ansible/requirements-test.txt
	touch $(ANSIBLE_STAMP)

venv: $(STAMP) $(ANSIBLE_STAMP)

demo: $(STAMP)
	$(BIN)/pve-datastore-exporter demo

test: $(STAMP) $(ANSIBLE_STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check exporter tests tools

golden: $(STAMP)
	UPDATE_GOLDEN=1 $(BIN)/pytest tests/test_golden.py

docs: $(STAMP)
	$(BIN)/python -m tools.settings_docs

# The texts to translate, from the code and the templates (babel.cfg), merged into each catalogue;
# then translate the new entries (docs/architecture.md#languages). tests/test_i18n.py checks them.
LOCALES := exporter/pve_datastore_exporter/locales
messages: $(STAMP)
	mkdir -p build
	$(BIN)/pybabel extract -F babel.cfg -w 110 --add-location=file --sort-by-file -o build/messages.pot exporter/pve_datastore_exporter
	$(BIN)/pybabel update -i build/messages.pot -d $(LOCALES) -w 110 --ignore-obsolete

bench: $(STAMP)
	$(BIN)/python -m tools.bench.run

screenshot: $(STAMP)
	$(BIN)/python -m tools.screenshot

dashboard-picture: $(STAMP)
	$(BIN)/python -m tools.dashboard_picture

clean:
	rm -rf $(VENV) $(ANSIBLE_VENV) .venv-bench build *.egg-info exporter/*.egg-info .pytest_cache
