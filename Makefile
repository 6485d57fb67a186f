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
BENCH_VENV     := .venv-bench
BENCH_STAMP    := $(BENCH_VENV)/.installed
# `make dist`: build (PEP 517 front end) and twine, locked in a virtualenv of their own.
DIST_VENV      := .venv-dist
DIST_STAMP     := $(DIST_VENV)/.installed
DIST_LOCK      := requirements/dist.txt
# The one version number (issue 20): the package's __version__; the image's label, the chart's appVersion
# and the Ansible collection's version are checked against it (tests/test_release.py).
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' exporter/pve_datastore_exporter/__init__.py)
# `make image`: podman or docker, the Dockerfile's BASE (a registry image by default), and optionally a
# directory of the locked wheels for a build that reaches no index (WHEELHOUSE=dir, mounted at /wheels).
ENGINE     ?= $(shell command -v podman || command -v docker)
IMAGE      ?= pve-datastore-exporter:$(VERSION)
BASE       ?= python:3.11-slim-bookworm
WHEELHOUSE ?=

# Each virtualenv installs from its lock, requirements/*.txt: every package pinned with its hashes,
# written by `make lock` (uv pip compile) from the ranges in setup.cfg, ansible/requirements-test.txt
# and requirements/*.in. A new machine gets the versions the repository was tested with, not what PyPI
# released since (issue 18). A stamp depends on its lock, so a changed lock rebuilds the venv (--clear:
# nothing of the old one stays). --no-deps: the lock is the whole set; `pip check` after it fails when a
# range was changed without `make lock`. --only-binary: no sdist build, so no unpinned build dependency.
# The machine's pip configuration (an index mirror, find-links) still applies: hash checking refuses a
# file that is not byte-for-byte the one locked, and pip prefers a candidate whose hash it knows.
# The venv's own pip (from ensurepip) is left as it is: no unpinned upgrade.
PIP_LOCKED := --quiet --disable-pip-version-check install --require-hashes --no-deps --only-binary :all: -r
VENV_LOCK    := requirements/venv.txt
ANSIBLE_LOCK := requirements/ansible.txt
BENCH_LOCK   := requirements/bench.txt
# The Ansible tests' wheelhouse (tests/ansible_helpers.py): the package's runtime dependencies and build
# backend, at .venv's versions, downloaded by hash for every install the role makes in the tests.
WHEELHOUSE_LOCK := requirements/wheelhouse.txt
# The image's virtualenv (Dockerfile): the runtime dependencies with the postgres extra, and the build
# backend that builds the exporter's wheel in the image's first stage, at .venv's versions.
IMAGE_LOCK := requirements/image.txt
# The locking tool, pinned, in a throw-away venv of its own; PyPI is the index the locks are written from.
UV_VERSION := 0.13.9
LOCK_VENV  := .venv-lock
LOCK_STAMP := $(LOCK_VENV)/.uv-$(UV_VERSION)
LOCK_INDEX ?= https://pypi.org/simple
# --universal: one lock for every Python from --python-version up and every platform (markers where they
# differ); .venv is built by python3 (>= 3.11), .venv-ansible by a Python >= 3.12 (3.12 or 3.13).
# Without UPGRADE=1 the pins of the current lock are kept where the ranges still allow them.
UV_COMPILE = $(LOCK_VENV)/bin/uv pip compile --quiet --no-config --default-index $(LOCK_INDEX) --universal \
	--generate-hashes --custom-compile-command 'make lock' $(if $(UPGRADE),--upgrade)

.PHONY: help venv lock demo test lint bench golden docs messages screenshot dashboard-picture clean image dist

help:
	@echo "make demo   - run the exporter against the simulated Proxmox cluster"
	@echo "make test   - run the test suite"
	@echo "make lint   - ruff"
	@echo "make lock   - regenerate the virtualenvs' locks (requirements/*.txt); UPGRADE=1 takes the newest releases"
	@echo "make bench  - benchmark against prometheus-pve-exporter (writes tools/bench/results.md)"
	@echo "make golden - regenerate golden files (exposition, seed JSON)"
	@echo "make docs   - regenerate .env.example and the README settings table from config.SETTINGS"
	@echo "make messages - extract the page's and the API's texts into the catalogues (locales/*/messages.po)"
	@echo "make screenshot - docs/screenshot*.png of the page from a real browser run"
	@echo "make dashboard-picture - docs/dashboard.png: the dashboard's layout and data from a real Prometheus run"
	@echo "make image  - the OCI image from the Dockerfile (podman or docker; BASE=, IMAGE=, WHEELHOUSE=)"
	@echo "make dist   - the sdist and the wheel in dist/, checked by twine"

# The project itself goes in editable, without its dependencies (the lock brought them) and with the
# lock's setuptools/wheel as build backend (no isolated build env downloading an unpinned one).
$(STAMP): $(VENV_LOCK) setup.cfg pyproject.toml
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/pip $(PIP_LOCKED) $(VENV_LOCK)
	$(BIN)/pip --quiet --disable-pip-version-check install --no-deps --no-build-isolation -e .
	$(BIN)/pip --disable-pip-version-check check
	touch $(STAMP)

$(ANSIBLE_STAMP): $(ANSIBLE_LOCK)
	@test -n "$(ANSIBLE_PYTHON)" || { echo "make: Python >= 3.12 is needed for the Ansible tests (set ANSIBLE_PYTHON)"; exit 1; }
	$(ANSIBLE_PYTHON) -m venv --clear $(ANSIBLE_VENV)
	$(ANSIBLE_VENV)/bin/pip $(PIP_LOCKED) $(ANSIBLE_LOCK)
	$(ANSIBLE_VENV)/bin/pip --disable-pip-version-check check
	touch $(ANSIBLE_STAMP)

# prometheus-pve-exporter for `make bench` (tools/bench/exporters.py runs it from here).
$(BENCH_STAMP): $(BENCH_LOCK)
	$(PYTHON) -m venv --clear $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip $(PIP_LOCKED) $(BENCH_LOCK)
	$(BENCH_VENV)/bin/pip --disable-pip-version-check check
	touch $(BENCH_STAMP)

$(DIST_STAMP): $(DIST_LOCK)
	$(PYTHON) -m venv --clear $(DIST_VENV)
	$(DIST_VENV)/bin/pip $(PIP_LOCKED) $(DIST_LOCK)
	$(DIST_VENV)/bin/pip --disable-pip-version-check check
	touch $(DIST_STAMP)

$(LOCK_STAMP):
	$(PYTHON) -m venv --clear $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip --quiet --disable-pip-version-check install uv==$(UV_VERSION)
	touch $(LOCK_STAMP)

# Run after changing a range (setup.cfg, ansible/requirements-test.txt, requirements/*.in), or with
# UPGRADE=1 to take newer releases on purpose; commit the locks it rewrites.
lock: $(LOCK_STAMP)
	$(UV_COMPILE) --python-version 3.11 --extra test pyproject.toml requirements/venv.in -o $(VENV_LOCK)
	$(UV_COMPILE) --python-version 3.11 --constraint $(VENV_LOCK) pyproject.toml requirements/venv.in -o $(WHEELHOUSE_LOCK)
	$(UV_COMPILE) --python-version 3.11 --extra postgres --constraint $(VENV_LOCK) pyproject.toml requirements/venv.in -o $(IMAGE_LOCK)
	$(UV_COMPILE) --python-version 3.12 ansible/requirements-test.txt -o $(ANSIBLE_LOCK)
	$(UV_COMPILE) --python-version 3.11 requirements/bench.in -o $(BENCH_LOCK)
	$(UV_COMPILE) --python-version 3.11 requirements/dist.in -o $(DIST_LOCK)
	$(UV_COMPILE) --python-version 3.11 --no-deps requirements/helm.in -o requirements/helm.txt

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
	$(BIN)/python -m tools.chart_docs

# The texts to translate, from the code and the templates (babel.cfg), merged into each catalogue;
# then translate the new entries (docs/architecture.md#languages). tests/test_i18n.py checks them.
LOCALES := exporter/pve_datastore_exporter/locales
messages: $(STAMP)
	mkdir -p build
	$(BIN)/pybabel extract -F babel.cfg -w 110 --add-location=file --sort-by-file -o build/messages.pot exporter/pve_datastore_exporter
	$(BIN)/pybabel update -i build/messages.pot -d $(LOCALES) -w 110 --ignore-obsolete

bench: $(STAMP) $(BENCH_STAMP)
	$(BIN)/python -m tools.bench.run

screenshot: $(STAMP)
	$(BIN)/python -m tools.screenshot

dashboard-picture: $(STAMP)
	$(BIN)/python -m tools.dashboard_picture

# --format docker keeps the HEALTHCHECK (podman's default OCI format has no field for it).
image:
	@test -n "$(ENGINE)" || { echo "make image: podman or docker is needed"; exit 1; }
	$(ENGINE) build $(if $(findstring podman,$(ENGINE)),--format docker) --build-arg BASE=$(BASE) \
		--build-arg VERSION=$(VERSION) $(if $(WHEELHOUSE),--volume $(abspath $(WHEELHOUSE)):/wheels:ro \
		--build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/wheels) --tag $(IMAGE) .

# The build backend comes from the dist lock too (--no-isolation: nothing unpinned is downloaded).
DIST_DIR ?= dist
dist: $(DIST_STAMP)
	rm -rf $(DIST_DIR)
	$(DIST_VENV)/bin/python -m build --no-isolation --sdist --wheel --outdir $(DIST_DIR) .
	$(DIST_VENV)/bin/twine check --strict $(DIST_DIR)/*

clean:
	rm -rf $(VENV) $(ANSIBLE_VENV) $(BENCH_VENV) $(DIST_VENV) $(LOCK_VENV) build dist *.egg-info exporter/*.egg-info .pytest_cache
