# The exporter's OCI image (docker and podman read this file alike): `make image`, or
#   docker build -t pve-datastore-exporter .
# One base for both stages, named by BASE: any Debian-like image with Python 3.11+ and python3 -m venv
# (the default is Docker's official slim Python; the tests pass one built from Debian packages).
ARG BASE=python:3.11-slim-bookworm

# Stage 1: the locked dependencies and the exporter's wheel, installed into a virtualenv (/opt/venv).
FROM ${BASE} AS build
# Where pip finds the locked wheels: PyPI by default; for a build without PyPI, a mirror
# (--build-arg PIP_INDEX_URL=...) or a wheelhouse mounted into the build (podman build
# -v "$PWD/wheels:/wheels:ro" --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/wheels).
ARG PIP_INDEX_URL
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# The lock first: its layer (the slow one) is reused while only the sources change.
COPY requirements/image.txt requirements/image.txt
# Binary wheels only, each checked against the lock's hashes: no compiler runs, nothing unpinned arrives.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps --only-binary :all: -r requirements/image.txt
COPY setup.cfg pyproject.toml README.md ./
COPY exporter exporter
# The wheel is built by the lock's setuptools (no isolated build env), then the build backend and pip
# leave the virtualenv: the runtime stage gets the exporter and its dependencies only. The page speaks
# Korean and English (i18n.py), so Babel's CLDR data for the other locales (34 of its 36 MB) goes too.
RUN /opt/venv/bin/pip wheel --no-deps --no-build-isolation -w /src/dist . \
 && /opt/venv/bin/pip install --no-deps /src/dist/*.whl \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/python -m pip uninstall --yes setuptools wheel packaging pip \
 && find /opt/venv/lib/python3*/site-packages/babel/locale-data -name '*.dat' \
      ! -name root.dat ! -name 'en.dat' ! -name 'en_*.dat' ! -name 'ko.dat' ! -name 'ko_*.dat' -delete \
 && /opt/venv/bin/python -c "import pve_datastore_exporter.server, pve_datastore_exporter.simulator, psycopg2" \
 && /opt/venv/bin/pve-datastore-exporter --version \
 && /opt/venv/bin/python -OO -X no_debug_ranges -m compileall -q -j 0 /opt/venv/lib \
 && find /opt/venv -name '*.pyc' ! -name '*.opt-2.pyc' -delete

# Stage 2: the base, the virtualenv and a numeric non-root user; nothing else.
FROM ${BASE}
ARG VERSION=1.2.0
ARG UID=10001
ARG GID=10001
LABEL org.opencontainers.image.title="pve-datastore-exporter" \
      org.opencontainers.image.description="Prometheus exporter, JSON API and page for the datastores of a Proxmox VE cluster" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/pve-datastore-exporter/pve-datastore-exporter" \
      org.opencontainers.image.url="https://github.com/pve-datastore-exporter/pve-datastore-exporter" \
      org.opencontainers.image.documentation="https://github.com/pve-datastore-exporter/pve-datastore-exporter#container-image" \
      org.opencontainers.image.licenses="MIT"
# /data holds the SQLite file (the volume); /tmp is the only other place written (a tmpfs with --read-only).
# /data is writable by any user (sticky, like /tmp), so that a runtime's own choice of user (--user,
# OpenShift's random UID) still finds a writable volume; nothing but the exporter runs in the container.
RUN groupadd --system --gid "${GID}" exporter \
 && useradd --system --uid "${UID}" --gid "${GID}" --home-dir /data --no-create-home --shell /usr/sbin/nologin exporter \
 && mkdir -p /data && chown "${UID}:${GID}" /data && chmod 1777 /data
COPY --from=build /opt/venv /opt/venv
# The exporter runs with PYTHONOPTIMIZE=2 and PYTHONNODEBUGRANGES=1 (below): code objects without docstrings
# nor column tables, ~3 MB less resident (docs/architecture.md#memory). Those flags read their own .pyc
# files (*.opt-2.pyc), written here once for the base's standard library modules the exporter imports
# (the virtualenv's were compiled in the build stage); the running user could not write them.
RUN PYTHONOPTIMIZE=2 PYTHONNODEBUGRANGES=1 /opt/venv/bin/python -c "import pve_datastore_exporter.cli, \
pve_datastore_exporter.server, pve_datastore_exporter.i18n, pve_datastore_exporter.http.tls, psycopg2, yaml, bcrypt, \
babel.numbers, babel.dates, babel.support, proxmoxer.backends.https, _strptime, encodings.unicode_escape, shlex"
COPY deploy/image/entrypoint.sh /usr/local/bin/pve-datastore-exporter-entrypoint
# No DATABASE_URL here (it would clash with a DATABASE_URL_FILE): the default, the relative
# sqlite:///instance/proxmox_manager.db, lands in the volume because the working directory is /data.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONOPTIMIZE=2 \
    PYTHONNODEBUGRANGES=1 \
    EXPORTER_LISTEN_ADDRESS=0.0.0.0:9863
WORKDIR /data
VOLUME ["/data"]
EXPOSE 9863
USER ${UID}:${GID}
# The exporter's own probe (Python's urllib, no curl): GET /healthz at EXPORTER_LISTEN_ADDRESS, over TLS
# when the web config sets it up. Kept in the image only when built with --format docker (podman).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["pve-datastore-exporter", "healthcheck"]
# The entrypoint execs the exporter (PID 1: SIGTERM reaches it; it reaps its children), and gives
# `demo` an address a published port reaches.
ENTRYPOINT ["pve-datastore-exporter-entrypoint"]
CMD ["serve"]
