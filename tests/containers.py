"""podman for the image tests: the engine's settings for this kind of machine, and the exporter's image
built once per test session from the root Dockerfile on a base made from Debian packages."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from tools import image_bases

from .needs import require_tool

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "localhost/pve-datastore-exporter:test"
# Two settings CI machines need and a user's machine does not, kept here and never in the Dockerfile
# (docs/architecture.md#the-image): runc, as Debian's crun refuses a hybrid cgroup layout, and
# ulimits below the ones podman asks for by default, which a container may not raise here.
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"
"""


@functools.cache
def engine_env() -> dict[str, str]:
    """The environment podman runs with in the tests: CONTAINERS_CONF pointing at the settings above."""
    for tool in ("podman", "runc", "mmdebstrap"):
        require_tool(tool)
    conf = Path(tempfile.mkdtemp(prefix="pvedx-podman-")) / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run podman with the tests' settings; output captured as text."""
    return image_bases.podman(*args, check=check, timeout=timeout, env=engine_env())


@functools.cache
def wheelhouse() -> Path:
    """The image's locked wheels, downloaded on this side by their hashes (the machine's pip settings
    apply here; inside a build they would not: its mirror or proxy CA is not the container's)."""
    out = Path(tempfile.mkdtemp(prefix="pvedx-image-wheels-"))
    subprocess.run([sys.executable, "-m", "pip", "--quiet", "download", "--no-deps", "--require-hashes",
                    "--only-binary", ":all:", "-d", str(out), "-r", str(ROOT / "requirements" / "image.txt")],
                   check=True, capture_output=True, text=True, timeout=300)
    return out


@functools.cache
def exporter_image() -> str:
    """The image of the root Dockerfile, built once per session (podman's layer cache keeps the rest)."""
    base = image_bases.ensure("python", env=engine_env())
    before = podman("image", "inspect", "--format", "{{.Id}}", IMAGE, check=False).stdout.strip()
    podman("build", "--format", "docker", "--build-arg", f"BASE={base}",
           "--volume", f"{wheelhouse()}:/wheels:ro", "--build-arg", "PIP_NO_INDEX=1",
           "--build-arg", "PIP_FIND_LINKS=/wheels", "--tag", IMAGE, str(ROOT), timeout=600)
    if before and before != podman("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip():
        podman("rmi", before, check=False)  # the last session's image, untagged now: not kept
    return IMAGE


def wait_for(url: str, until: float, check=lambda response: response.ok, **kw) -> requests.Response:
    """GET `url` until `check` passes, or fail at the monotonic time `until` with the last answer seen."""
    last = None
    while time.monotonic() < until:
        try:
            last = requests.get(url, timeout=2, **kw)
            if check(last):
                return last
        except requests.RequestException as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"{url}: not ready in time; last: {last!r}")
