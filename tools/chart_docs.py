"""Write the Helm chart's README values table from values.yaml's `# --` comments (`make docs`), as
helm-docs does: one row per documented key, its type and default taken from the value itself."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "pve-datastore-exporter"
START = "<!-- values:start (generated from values.yaml by `make docs`; edit there) -->"
END = "<!-- values:end -->"
KEY = re.compile(r"^(\s*)([A-Za-z][A-Za-z0-9]*):")


def rows(text: str | None = None) -> list[dict]:
    """{key, type, default, description} for every key with a `# --` comment, in the file's order."""
    text = (CHART / "values.yaml").read_text() if text is None else text
    values, path, pending, found = yaml.safe_load(text), [], None, []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = stripped[4:].strip()
        elif stripped.startswith("#") and pending is not None:
            pending += " " + stripped[1:].strip()
        elif match := KEY.match(line):
            depth = len(match[1]) // 2
            path = path[:depth] + [match[2]]
            if pending is not None:
                value = values
                for part in path:
                    value = value[part]
                found.append({"key": ".".join(path), "type": _type(value), "default": json.dumps(value),
                              "description": pending})
            pending = None
    return found


def _type(value) -> str:
    return {bool: "bool", int: "int", str: "string", list: "list", dict: "object"}.get(type(value), "string")


def table() -> str:
    """The README's `| key | type | default | description |` table."""
    lines = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for row in rows():
        default, description = (row[column].replace("|", "\\|") for column in ("default", "description"))
        lines.append(f"| `{row['key']}` | {row['type']} | `{default}` | {description} |")
    return "\n".join(lines)


def with_table(readme: str) -> str:
    """The README text with the part between the markers replaced by the table."""
    if START not in readme or END not in readme:
        raise SystemExit(f"{CHART / 'README.md'}: the markers {START} and {END} are missing")
    head, rest = readme.split(START, 1)
    return f"{head}{START}\n{table()}\n{END}{rest.split(END, 1)[1]}"


def main() -> None:
    """Rewrite the chart's README where its table differs from values.yaml."""
    readme = CHART / "README.md"
    text = with_table(readme.read_text())
    if readme.read_text() != text:
        readme.write_text(text)
        print(f"wrote {readme.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
