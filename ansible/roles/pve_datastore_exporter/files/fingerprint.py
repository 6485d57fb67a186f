"""Fingerprint a local package (wheel, sdist or source directory) and compare with a marker.

Usage: fingerprint.py PACKAGE_PATH MARKER_PATH -> JSON {"changed", "record"} on stdout.
Read-only; directories skip hidden entries and build output, so building the package in
place does not change its fingerprint.
"""
import hashlib
import json
import os
import sys

SKIP_DIRS = ("build", "dist", "__pycache__", "node_modules")
SKIP_SUFFIXES = (".egg-info", ".pyc", ".pyo")


def _files(root):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and d not in SKIP_DIRS and not d.endswith(SKIP_SUFFIXES))
        for name in sorted(filenames):
            if not name.startswith(".") and not name.endswith(SKIP_SUFFIXES):
                yield os.path.join(dirpath, name)


def fingerprint(path):
    """sha256 over a file's bytes, or over a directory's relative paths and file bytes."""
    digest = hashlib.sha256()
    paths = [path] if os.path.isfile(path) else list(_files(path))
    for name in paths:
        digest.update(os.path.relpath(name, path).encode() + b"\0")
        with open(name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 16), b""):
                digest.update(block)
    return digest.hexdigest()


def main(package, marker):
    """Print whether the package differs from what the marker says is installed."""
    package = os.path.abspath(os.path.expanduser(package))
    if not os.path.exists(package):
        sys.stderr.write("package path %s does not exist on the target\n" % package)
        return 2
    record = {"package": package, "sha256": fingerprint(package)}
    try:
        with open(marker) as handle:
            installed = json.load(handle)
    except (OSError, ValueError):
        installed = None
    json.dump({"changed": installed != record, "record": record}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
