"""One version number (the package's) for the image, the chart and the Ansible collection; `make dist`."""

from __future__ import annotations

import re
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from pve_datastore_exporter import __version__

from .needs import load_yaml, require_tool

ROOT = Path(__file__).resolve().parent.parent


def test_the_image_label_the_chart_and_the_ansible_collection_carry_the_package_version():
    assert re.search(r"^ARG VERSION=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M)[1] == __version__
    assert load_yaml(ROOT / "ansible" / "galaxy.yml")["version"] == __version__
    chart = load_yaml(ROOT / "deploy" / "helm" / "pve-datastore-exporter" / "Chart.yaml")
    assert chart["appVersion"] == chart["version"] == __version__
    role_defaults = load_yaml(ROOT / "ansible/roles/pve_datastore_exporter/defaults/main.yml")
    assert role_defaults["pve_datastore_exporter_package"] == f"pve-datastore-exporter=={__version__}"


def test_the_makefile_reads_the_version_from_the_package():
    make = subprocess.run([require_tool("make"), "-s", "-n", "image", "ENGINE=podman"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    assert f"--build-arg VERSION={__version__}" in make.stdout
    assert f"--tag pve-datastore-exporter:{__version__}" in make.stdout


@pytest.mark.slow
def test_make_dist_builds_an_sdist_and_a_wheel_that_twine_accepts(tmp_path):
    out = tmp_path / "dist"
    done = subprocess.run([require_tool("make"), "-s", "dist", f"DIST_DIR={out}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("PASSED") == 2, done.stdout
    sdist = out / f"pve_datastore_exporter-{__version__}.tar.gz"
    wheel = out / f"pve_datastore_exporter-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
    # The page, its texts and the Korean catalogue travel in the wheel; nothing of the repository's own.
    for needed in ("templates/index.html", "static/page.js", "locales/ko/LC_MESSAGES/messages.po", "simulator/facade.py"):
        assert f"pve_datastore_exporter/{needed}" in names, needed
    assert not [n for n in names if n.startswith(("tests/", "tools/"))]
    with tarfile.open(sdist) as tar:
        members = set(tar.getnames())
    assert f"pve_datastore_exporter-{__version__}/exporter/pve_datastore_exporter/templates/index.html" in members
