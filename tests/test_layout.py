"""The layout holds: the product alone in its package, tools out of tests/, docs cited by path."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "exporter" / "pve_datastore_exporter"
ANCHOR = re.compile(r"docs/proxmox-api\.md((?:#[a-z0-9-]+(?:,? (?:and )?)?)+)")


def tracked() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / name for name in names.splitlines() if (ROOT / name).is_file()]


def test_no_simulator_module_at_the_package_root():
    assert [p.name for p in PACKAGE.glob("sim*.py")] == []
    assert (PACKAGE / "simulator" / "__init__.py").is_file()


def test_tests_hold_tests_and_their_helpers_only():
    entry = re.compile(r"^if __name__ == .__main__.:|argparse\.ArgumentParser\(", re.MULTILINE)
    runnable = [p.name for p in (ROOT / "tests").rglob("*.py") if entry.search(p.read_text())]
    assert runnable == [], "a tool run by make belongs in tools/"
    assert not (ROOT / "tests" / "bench").exists()


def test_no_file_names_a_folder_of_the_machine_it_sits_on():
    # The folder holding this clone, and the project's notes beside it (shared/), exist on no
    # reader's machine: files cite the repository's own paths.
    here = {str(ROOT), str(ROOT.parent / "shared")}
    found = [f"{p.relative_to(ROOT)}: {folder}" for p in tracked() if p.suffix not in (".png",)
             for folder in here if folder in p.read_text(errors="replace")]
    assert found == []


def _anchors(markdown: str) -> set[str]:
    headings = re.findall(r"^#+ (.+)$", markdown, re.MULTILINE)
    return {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_cited_section_of_the_api_notes_exists():
    anchors = _anchors((ROOT / "docs" / "proxmox-api.md").read_text())
    cited = {(p.relative_to(ROOT), name) for p in PACKAGE.rglob("*.py")
             for match in ANCHOR.finditer(p.read_text()) for name in re.findall(r"#([a-z0-9-]+)", match.group(1))}
    assert cited, "the reader and the simulator cite docs/proxmox-api.md"
    assert sorted((str(p), name) for p, name in cited if name not in anchors) == []
