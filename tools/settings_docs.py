"""Write .env.example and the README's configuration table from config.SETTINGS (`make docs`)."""

from __future__ import annotations

from pathlib import Path

from pve_datastore_exporter.config import SETTINGS, Setting

ROOT = Path(__file__).resolve().parent.parent
ENV_EXAMPLE = ROOT / ".env.example"
README = ROOT / "README.md"
START = "<!-- settings:start (generated from config.SETTINGS by `make docs`; edit there) -->"
END = "<!-- settings:end -->"
ENV_HEADER = """\
# pve-datastore-exporter configuration. Copy to .env and edit; real environment variables win.
# Every key is optional except PROXMOX_HOST, PROXMOX_USER and a credential (token or password).
# A commented-out key keeps its default. Generated from config.SETTINGS by `make docs`.
"""


def env_example(settings: tuple[Setting, ...] = SETTINGS) -> str:
    """.env.example: a help comment, then `KEY=default` (commented out when empty or secret)."""
    blocks = [ENV_HEADER]
    for s in settings:
        commented = s.secret or not s.default  # a copied .env then holds no empty or placeholder secret
        line = f"{'# ' if commented else ''}{s.env}={'' if s.secret else s.default}"
        blocks.append(f"# {s.help}\n{line}\n")
    return "\n".join(blocks)


def readme_table(settings: tuple[Setting, ...] = SETTINGS) -> str:
    """The README's `| variable | default | meaning |` table."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for s in settings:
        default = f" `{s.default}` " if s.default else " "
        meaning = s.help.replace("|", "\\|")
        rows.append(f"| `{s.env}` |{default}| {meaning} |")
    return "\n".join(rows)


def with_readme_table(readme: str, table: str | None = None) -> str:
    """The README text with the part between the settings markers replaced by the table."""
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md: the markers {START} and {END} are missing")
    head, rest = readme.split(START, 1)
    tail = rest.split(END, 1)[1]
    return f"{head}{START}\n{readme_table() if table is None else table}\n{END}{tail}"


def _write(path: Path, text: str) -> None:
    if path.read_text() != text:
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")


def main() -> None:
    """Rewrite both files where they differ from SETTINGS."""
    _write(ENV_EXAMPLE, env_example())
    _write(README, with_readme_table(README.read_text()))


if __name__ == "__main__":
    main()
