"""Finding the real tools the tests drive: skip locally when one is missing, fail in CI."""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    """True when CI runs the suite; there a missing tool is a failure, never a skip."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def require_tool(name_or_path: str) -> str:
    """The tool's path; skip (locally) or fail (in CI) when it is not installed."""
    found = name_or_path if os.path.isabs(name_or_path) and os.access(name_or_path, os.X_OK) \
        else shutil.which(name_or_path)
    if found:
        return found
    message = f"{name_or_path} is not installed (.ci/run installs it)"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def load_yaml(path):
    """Parse a YAML file with PyYAML (a test dependency)."""
    try:
        import yaml
    except ImportError:
        if in_ci():
            pytest.fail("PyYAML is not installed", pytrace=False)
        pytest.skip("PyYAML is not installed")
    with open(path) as stream:
        return yaml.safe_load(stream)
