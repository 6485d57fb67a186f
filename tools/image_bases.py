"""Base images built from Debian packages, for machines that reach no image registry (the tests, CI).

The Dockerfile and deploy/ name registry images (python:3.11-slim-bookworm, Prometheus, PostgreSQL); where
none can be pulled, these stand in for them, passed through the Dockerfile's BASE and the compose file's
*_IMAGE variables. Each is made by mmdebstrap and `podman import`, tagged with a hash of everything that
makes it (suite, packages, hooks, settings), and kept in podman's storage: a machine builds each once.

    python -m tools.image_bases python      # prints the image's name, building it when it is missing
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Documentation, manual pages and translations are left out of every base: nothing here reads them.
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*")

# The official postgres image's contract, as far as deploy/ uses it: POSTGRES_USER, POSTGRES_PASSWORD (or
# POSTGRES_PASSWORD_FILE) and POSTGRES_DB make the cluster on the first start into PGDATA; then the server
# listens on every address and asks for a password (scram-sha-256) from the network.
POSTGRES_ENTRYPOINT = r"""#!/bin/sh
set -eu
PGBIN=/usr/lib/postgresql/15/bin
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then POSTGRES_PASSWORD=$(cat "$POSTGRES_PASSWORD_FILE"); fi
: "${PGDATA:=/var/lib/postgresql/data}" "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
mkdir -p "$PGDATA" /run/postgresql && chown postgres:postgres "$PGDATA" /run/postgresql && chmod 0700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  printf '%s\n' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}" > /tmp/pwfile
  chown postgres /tmp/pwfile
  setpriv --reuid=postgres --regid=postgres --init-groups "$PGBIN/initdb" -D "$PGDATA" -U "$POSTGRES_USER" \
    --pwfile=/tmp/pwfile --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f /tmp/pwfile
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  if [ "$POSTGRES_DB" != "postgres" ]; then
    setpriv --reuid=postgres --regid=postgres --init-groups "$PGBIN/postgres" --single -D "$PGDATA" postgres \
      <<EOF >/dev/null
CREATE DATABASE "$POSTGRES_DB" OWNER "$POSTGRES_USER";
EOF
  fi
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups "$PGBIN/postgres" -D "$PGDATA" \
  -c listen_addresses='*' -c unix_socket_directories=/run/postgresql "$@"
"""


@dataclass(frozen=True)
class Base:
    """One base image: the Debian packages it holds and what its image config says."""

    name: str
    packages: tuple[str, ...]
    changes: tuple[str, ...] = (f"ENV=PATH={PATH}",)
    files: dict[str, str] = field(default_factory=dict)  # path inside -> content (mode 0755)
    hooks: tuple[str, ...] = ()  # mmdebstrap --customize-hook commands ("$1" is the new root)

    def key(self) -> str:
        """A hash of everything that makes the image: a change of any of it makes a new image."""
        made_of = asdict(self) | {"suite": SUITE, "mirror": MIRROR, "excludes": DPKG_EXCLUDES}
        return hashlib.sha256(json.dumps(made_of, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def image(self) -> str:
        """The local name and tag the image has in podman's storage."""
        return f"localhost/pvedx-base-{self.name}:{self.key()}"


BASES = {
    # The Dockerfile's BASE: Debian's Python 3.11 (like python:3.11-slim-bookworm), venv, CA certificates
    # (and, with them, the openssl command the demo's simulated cluster makes its certificates with).
    "python": Base("python", ("python3", "python3-venv", "ca-certificates")),
    # Stand-ins for the compose stack's Prometheus and PostgreSQL images.
    "prometheus": Base("prometheus", ("prometheus", "ca-certificates"),
                       changes=(f"ENV=PATH={PATH}", "USER=nobody", "WORKDIR=/prometheus",
                                "ENTRYPOINT=[\"/usr/bin/prometheus\"]", "EXPOSE=9090"),
                       hooks=('mkdir -p "$1/prometheus" && chown 65534:65534 "$1/prometheus"',)),
    "postgresql": Base("postgresql", ("postgresql-15", "util-linux"),
                       changes=(f"ENV=PATH={PATH}", "ENV=PGDATA=/var/lib/postgresql/data",
                                "ENTRYPOINT=[\"/usr/local/bin/docker-entrypoint.sh\"]", "EXPOSE=5432",
                                "STOPSIGNAL=SIGINT"),
                       files={"/usr/local/bin/docker-entrypoint.sh": POSTGRES_ENTRYPOINT}),
}


def podman(*args: str, check: bool = True, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run podman; the output is captured as text. With `check`, a failure raises with podman's stderr."""
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=env)
    if check and done.returncode:
        raise RuntimeError(f"podman {' '.join(args)}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return done


def ensure(name: str, env: dict | None = None) -> str:
    """The base image's name, built by mmdebstrap and imported first when podman does not have it."""
    base = BASES[name]
    if podman("image", "exists", base.image, check=False, env=env).returncode == 0:
        return base.image
    with tempfile.TemporaryDirectory(prefix=f"pvedx-base-{name}-") as tmp:
        tarball = Path(tmp) / "root.tar"
        hooks = []
        for index, (path, content) in enumerate(sorted(base.files.items())):
            source = Path(tmp) / f"file{index}"
            source.write_text(content)
            hooks.append(f'--customize-hook=install -D -m 0755 {source} "$1{path}"')
        hooks += [f"--customize-hook={hook}" for hook in base.hooks]
        subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(base.packages)}",
                        *(f"--dpkgopt=path-exclude={glob}" for glob in DPKG_EXCLUDES), *hooks,
                        SUITE, str(tarball), MIRROR], check=True, capture_output=True, text=True, timeout=900)
        podman("import", *(f"--change={change}" for change in base.changes), str(tarball), base.image, env=env)
    return base.image


if __name__ == "__main__":
    for wanted in sys.argv[1:] or ["python"]:
        print(ensure(wanted, env=dict(os.environ)))
