"""README.ko.md, the README in Korean, stays in step with README.md and config.SETTINGS.

README.ko.md is translated by hand and nothing regenerates it, so these tests fail as soon as
README.md (or config.SETTINGS) says something README.ko.md does not. Each message names what is
missing, where it is in README.md, and where it goes in README.ko.md.

How the two files are matched:

- Sections. Every `##`/`###` heading of README.ko.md sits on the line right under a marker
  `<!-- en: ## <the README.md heading, verbatim> -->`. The marked headings are README.md's, at the same
  level and in the same order: a section added to, renamed in or removed from README.md fails here
  until README.ko.md follows. The text before the first `##` is the introduction.
- In each section (README.md's against the Korean one carrying its marker), both ways: the fenced
  code blocks, copied verbatim (commands, JSON, PromQL, YAML and their comments are never
  translated); the `inline code` spans; the link targets; the number of list items and of paragraphs
  that open in bold (the troubleshooting entries).
- Settings: the table between `<!-- settings-ko:start ... -->` and `<!-- settings-ko:end -->` lists
  config.SETTINGS' keys, in order, with their defaults; its meaning column is config.SETTINGS' help,
  translated, and keeps the help's literals (paths, ports, names in capitals). `make docs` writes
  README.md's table only, never this one.
- Every configuration key (config.SETTINGS and every PROXMOX_*, EXPORTER_*, ANSIBLE_*, DATABASE_URL
  of README.md) and every metric name of README.md appears in README.ko.md, and none that has gone.
- README.ko.md is Korean (most prose letters are Hangul, no paragraph left in English), every link
  in it resolves to a file of the repository (and to a heading, for `file.md#anchor`), and the two
  files link each other at the top.

To bring README.ko.md in step after a change to README.md or config.SETTINGS, run
`.venv/bin/pytest tests/test_readme_ko.py` and do what each message says: add a marker and a Korean
heading for a new section, copy a changed code block unchanged, translate a new sentence keeping its
`code` and links, add a settings row (the message spells the row out, with the English help to
translate). The test_the_checks_catch_* tests at the end prove the checks on edited copies.
"""

from __future__ import annotations

import dataclasses
import re
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from pve_datastore_exporter.config import SETTINGS, Setting

ROOT = Path(__file__).resolve().parent.parent
EN_PATH = ROOT / "README.md"
KO_PATH = ROOT / "README.ko.md"

INTRO = "(introduction)"
UNMARKED = "(unmarked) "
MARKER = re.compile(r"^<!-- en: (#{2,3} \S.*?) -->\s*$")
HEADING = re.compile(r"^(#{1,6}) +(\S.*?)\s*$")
SECTION_LEVELS = (2, 3)
KO_SETTINGS_START = re.compile(r"^<!-- settings-ko:start\b.*-->[ \t]*$", re.M)
KO_SETTINGS_END = "<!-- settings-ko:end -->"
SETTINGS_ROW = re.compile(r"^\| `([A-Z0-9_]+)` \|([^|]*)\|(.*)\|\s*$")
CODE_SPAN = re.compile(r"`([^`]+)`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
URL = re.compile(r"\bhttps?://\S+")
CONFIG_KEY = re.compile(r"\b(?:(?:PROXMOX|EXPORTER|ANSIBLE)_[A-Z0-9_]*[A-Z0-9]|DATABASE_URL)\b")
METRIC = re.compile(r"\bpve_(?!datastore_exporter)[a-z0-9_]*[a-z0-9]\b")  # pve_datastore_exporter*: Ansible names
HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7a3]")
LATIN = re.compile(r"[A-Za-z]")
BULLET = re.compile(r"^\s*(?:[-*+]|\d+\.) \S")
MIN_HANGUL_SHARE = 0.45  # of the prose letters (Hangul + Latin) of README.ko.md; about 0.6 when written
MIN_PARAGRAPH_SHARE = 0.1  # a paragraph or table row with at least MIN_LATIN Latin letters
MIN_LATIN = 40
OWN_LINKS = ("README.md", "README.ko.md")  # the language links; README.ko.md may cite README.md#anchor


@dataclass
class Block:
    line: int  # of the opening fence
    text: str  # the fences included

    @property
    def fence(self) -> str:
        return self.text.split("\n", 1)[0]


@dataclass
class Section:
    key: str  # README.md's heading ("## Quick start"), or INTRO
    heading: str  # the heading as written in this file
    line: int  # of the heading (README.md) or of the marker (README.ko.md)
    prose: list[tuple[int, str]] = field(default_factory=list)  # outside code blocks and comments
    blocks: list[Block] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.prose)

    def line_at(self, offset: int) -> int:
        """The file's line number of a character offset into self.text."""
        starts, pos = [], 0
        for _, line in self.prose:
            starts.append(pos)
            pos += len(line) + 1
        return self.prose[bisect_right(starts, offset) - 1][0] if self.prose else self.line


@dataclass
class Doc:
    name: str
    sections: list[Section]
    problems: list[str]  # markers without headings, headings without markers

    def section(self, key: str) -> Section | None:
        return next((s for s in self.sections if s.key == key), None)


@lru_cache(maxsize=32)
def parse(text: str, name: str, marked: bool) -> Doc:
    """Split a README into sections; README.ko.md's (marked) are keyed by their `<!-- en: -->` lines."""
    sections = [Section(INTRO, "", 0)]
    problems: list[str] = []
    fence: list[str] | None = None
    fence_line = 0
    in_comment = after_marker = False
    for no, line in enumerate(text.split("\n"), 1):
        follows_marker, after_marker = after_marker, False
        if fence is not None:
            fence.append(line)
            if line.startswith("```"):
                sections[-1].blocks.append(Block(fence_line, "\n".join(fence)))
                fence = None
            continue
        if in_comment:
            in_comment = "-->" not in line
            continue
        heading = HEADING.match(line)
        is_section = bool(heading) and len(heading.group(1)) in SECTION_LEVELS
        if follows_marker and not is_section:
            problems.append(f"{name} line {no - 1}: the marker `<!-- en: {sections[-1].key} -->` is not followed on the "
                            f"next line by its Korean `##`/`###` heading; put the heading right under it")
        if line.startswith("```"):
            fence, fence_line = [line], no
            continue
        marker = MARKER.match(line) if marked else None
        if marker:
            sections.append(Section(marker.group(1), "", no))
            after_marker = True
            continue
        if line.lstrip().startswith("<!--"):
            in_comment = "-->" not in line
            continue
        if is_section:
            written = f"{heading.group(1)} {heading.group(2)}"
            if not marked:
                sections.append(Section(written, written, no))
            elif follows_marker:
                sections[-1].heading = written
                if written.split(" ", 1)[0] != sections[-1].key.split(" ", 1)[0]:
                    problems.append(f"{name} line {no}: `{written}` is marked `{sections[-1].key}`: give the Korean heading "
                                    f"the level of README.md's ({sections[-1].key.split(' ', 1)[0]})")
            else:
                problems.append(f"{name} line {no}: the heading `{written}` has no marker on the line above it; put "
                                f"`<!-- en: <the README.md heading it translates, verbatim> -->` there (a section README.md "
                                f"does not have does not belong in {name})")
                sections.append(Section(UNMARKED + written, written, no))
            continue
        sections[-1].prose.append((no, line))
    if fence is not None:
        problems.append(f"{name} line {fence_line}: a code block that is never closed")
    return Doc(name, sections, problems)


def en_doc(text: str | None = None) -> Doc:
    return parse(EN_PATH.read_text() if text is None else text, "README.md", False)


def ko_doc(text: str | None = None) -> Doc:
    return parse(KO_PATH.read_text() if text is None else text, "README.ko.md", True)


def _where(en: Section, ko: Section) -> str:
    if en.key == INTRO:
        return "the introduction (before the first `##`)"
    return f"section `{en.key}` (README.md line {en.line}; README.ko.md `{ko.heading or '?'}`, line {ko.line})"


def _pairs(en: Doc, ko: Doc) -> list[tuple[Section, Section]]:
    """README.md's sections with their Korean counterparts (the missing ones are check_sections' job)."""
    return [(s, ko.section(s.key)) for s in en.sections if ko.section(s.key) is not None]


def _excerpt(section: Section, line: int) -> str:
    text = next((t for n, t in section.prose if n == line), "").strip()
    return text if len(text) <= 100 else text[:97] + "..."


def _spans(section: Section) -> dict[str, int]:
    """The inline code spans of a section (whitespace normalised), each with the line it first occurs on."""
    found: dict[str, int] = {}
    for m in CODE_SPAN.finditer(section.text):
        found.setdefault(" ".join(m.group(1).split()), section.line_at(m.start()))
    return found


def _blank_code(text: str) -> str:
    return CODE_SPAN.sub(lambda m: "`" + " " * (len(m.group(0)) - 2) + "`", text)


def _links(section: Section) -> dict[str, int]:
    """The link and image targets of a section, each with the line it first occurs on."""
    found: dict[str, int] = {}
    for m in LINK.finditer(_blank_code(section.text)):
        found.setdefault(m.group(1), section.line_at(m.start()))
    return found


def _compared_link(target: str) -> bool:
    return target.split("#", 1)[0] not in OWN_LINKS


def _counts(section: Section) -> tuple[int, int]:
    """(list items, paragraphs opening in bold) of a section."""
    bullets = bold = 0
    previous = ""
    for _, line in section.prose:
        bullets += bool(BULLET.match(line))
        bold += line.startswith("**") and not previous.strip()
        previous = line
    return bullets, bold


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"<[^>]*>", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(text: str) -> set[str]:
    anchors: set[str] = set()
    seen: Counter[str] = Counter()
    in_fence = False
    for line in text.split("\n"):
        if line.startswith("```"):
            in_fence = not in_fence
        elif not in_fence and (m := HEADING.match(line)):
            slug = _slug(m.group(2))
            anchors.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
            seen[slug] += 1
    return anchors


def _report(problems: list[str], what: str) -> str:
    return (f"README.ko.md is out of step with README.md ({what}); the docstring of tests/test_readme_ko.py "
            f"says how the two are matched:\n- " + "\n- ".join(problems))


# The checks: pure functions of the texts, so that the tests at the end can run them on edited copies.


def check_language_links(en: Doc, ko: Doc) -> list[str]:
    problems = []
    if "](README.ko.md)" not in en.sections[0].text:
        problems.append("README.md's introduction has no link to the Korean README: add the line "
                        "`한국어: [README.ko.md](README.ko.md)` under the title")
    if "English: [README.md](README.md)" not in ko.sections[0].text:
        problems.append("README.ko.md's introduction has no link back: add the line `English: [README.md](README.md)` "
                        "under the title")
    return problems


def check_sections(en: Doc, ko: Doc) -> list[str]:
    """Every `##`/`###` of README.md has one Korean section, in README.md's order, and no other."""
    en_keys = [s.key for s in en.sections[1:]]
    marked = [s for s in ko.sections[1:] if not s.key.startswith(UNMARKED)]
    ko_keys = [s.key for s in marked]
    problems = []
    for i, s in enumerate(en.sections[1:]):
        if s.key not in ko_keys:
            after = f"after the section marked `<!-- en: {en_keys[i - 1]} -->`" if i else "after the introduction"
            problems.append(f"README.md line {s.line}: `{s.key}` has no Korean section. In README.ko.md, {after}, add "
                            f"the line `<!-- en: {s.key} -->` with the Korean heading `{s.key.split(' ', 1)[0]} ...` "
                            f"right under it, and translate the section")
    for s in marked:
        if s.key not in en_keys:
            problems.append(f"README.ko.md line {s.line}: the marker `<!-- en: {s.key} -->` names a heading README.md "
                            f"does not have (any more). If README.md renamed it, put the new English heading in the "
                            f"marker and review the section; if README.md dropped the section, drop it here too")
    for key, n in Counter(ko_keys).items():
        if n > 1:
            problems.append(f"README.ko.md marks `{key}` {n} times; one Korean section per README.md section")
    common_en = [k for k in en_keys if k in ko_keys]
    common_ko = list(dict.fromkeys(k for k in ko_keys if k in en_keys))
    if common_en != common_ko:
        first = next(i for i, (a, b) in enumerate(zip(common_en, common_ko, strict=False)) if a != b)
        problems.append(f"README.ko.md's sections are not in README.md's order: README.md has `{common_en[first]}` "
                        f"where README.ko.md has `{common_ko[first]}`; move the Korean sections to follow README.md")
    return problems


def check_structure(ko: Doc) -> list[str]:
    return list(ko.problems)


def check_blocks(en: Doc, ko: Doc) -> list[str]:
    """Each code block of a README.md section is in the Korean section verbatim, and no other block is."""
    problems = []
    for e, k in _pairs(en, ko):
        theirs = [b.text for b in k.blocks]
        ours = [b.text for b in e.blocks]
        korean_lines = {line for b in k.blocks for line in b.text.split("\n")}
        for b in e.blocks:
            if b.text not in theirs:
                differ = [line for line in b.text.split("\n") if line not in korean_lines]
                hint = ("; the lines no Korean block of the section has:\n      " + "\n      ".join(differ)) if differ else ""
                problems.append(f"{_where(e, k)}: README.md's {b.fence} block at README.md line {b.line} is not in the "
                                f"Korean section verbatim; copy it unchanged (code is never translated){hint}")
        for b in k.blocks:
            if b.text not in ours:
                problems.append(f"{_where(e, k)}: README.ko.md's {b.fence} block at README.ko.md line {b.line} is not in "
                                f"README.md's section (changed or removed there?): replace it with README.md's or remove it")
    return problems


def check_spans(en: Doc, ko: Doc) -> list[str]:
    """Each section's `inline code` is the same in both files."""
    problems = []
    for e, k in _pairs(en, ko):
        ours, theirs = _spans(e), _spans(k)
        for span, line in ours.items():
            if span not in theirs:
                problems.append(f"{_where(e, k)}: README.md line {line} has `{span}`, the Korean section does not; "
                                f"translate that sentence keeping `{span}` as it is (README.md: \"{_excerpt(e, line)}\")")
        for span, line in theirs.items():
            if span not in ours:
                problems.append(f"{_where(e, k)}: README.ko.md line {line} has `{span}`, which README.md's section no longer "
                                f"has: update that sentence to README.md's (README.ko.md: \"{_excerpt(k, line)}\")")
    return problems


def check_links_match(en: Doc, ko: Doc) -> list[str]:
    """Each section links the same targets in both files (README.ko.md may also cite README.md#...)."""
    problems = []
    for e, k in _pairs(en, ko):
        ours = {t: n for t, n in _links(e).items() if _compared_link(t)}
        theirs = {t: n for t, n in _links(k).items() if _compared_link(t)}
        for target, line in ours.items():
            if target not in theirs:
                problems.append(f"{_where(e, k)}: README.md line {line} links `{target}`, the Korean section does not; "
                                f"add the link `[...]({target})` (README.md: \"{_excerpt(e, line)}\")")
        for target, line in theirs.items():
            if target not in ours:
                problems.append(f"{_where(e, k)}: README.ko.md line {line} links `{target}`, which README.md's section "
                                f"does not (any more): change or remove that link")
    return problems


def check_counts(en: Doc, ko: Doc) -> list[str]:
    """Each section has as many list items and bold-led paragraphs (troubleshooting entries) in both files."""
    problems = []
    for e, k in _pairs(en, ko):
        (eb, ebold), (kb, kbold) = _counts(e), _counts(k)
        if eb != kb:
            problems.append(f"{_where(e, k)}: README.md has {eb} list items, README.ko.md {kb}; translate each item as one")
        if ebold != kbold:
            problems.append(f"{_where(e, k)}: README.md has {ebold} paragraphs opening in **bold** (such as the "
                            f"troubleshooting entries), README.ko.md {kbold}; translate each as a paragraph opening in bold")
    return problems


def _help_literals(help_text: str) -> list[str]:
    """The words of a setting's help a translation keeps: paths, ports, names, values in capitals."""
    words = (w.rstrip(".:") for w in re.findall(r"[^\s,;()]+", help_text))
    return [w for w in words if re.search(r"[A-Za-z0-9]", w)
            and (re.search(r"[0-9/:@!=\[]", w) or re.search(r"[A-Z]", w[1:]) or (w.isupper() and len(w) > 1))]


def check_settings(ko_text: str, settings: tuple[Setting, ...] = SETTINGS) -> list[str]:
    """The Korean settings table: config.SETTINGS' keys in order, their defaults, a Korean meaning each."""
    start = KO_SETTINGS_START.search(ko_text)
    end = ko_text.find(KO_SETTINGS_END, start.end()) if start else -1
    if not start or end < 0:
        return ["README.ko.md has no settings table: the section marked `<!-- en: ## Configuration -->` holds the "
                "config.SETTINGS table between the lines `<!-- settings-ko:start (...) -->` and `<!-- settings-ko:end -->`"]
    line0 = ko_text.count("\n", 0, start.start()) + 1
    rows: dict[str, tuple[int, str, str]] = {}
    problems = []
    for i, line in enumerate(ko_text[start.end():end].split("\n")):
        if m := SETTINGS_ROW.match(line):
            if m.group(1) in rows:
                problems.append(f"README.ko.md line {line0 + i}: a second settings row for {m.group(1)}; remove one")
            rows[m.group(1)] = (line0 + i, m.group(2).strip(), m.group(3).strip())
    known = [s.env for s in settings]
    for i, s in enumerate(settings):
        default = f"`{s.default}`" if s.default else ""
        if s.env not in rows:
            where = f"after the row of {known[i - 1]}" if i else "as the first row"
            problems.append(f"README.ko.md's settings table has no row for {s.env} (config.SETTINGS); add, {where}:\n"
                            f"      | `{s.env}` | {default + ' ' if default else ''}| <in Korean: {s.help}> |")
            continue
        line, cell, meaning = rows[s.env]
        if cell != default:
            problems.append(f"README.ko.md line {line}: the settings row for {s.env} shows the default {cell or '(none)'}, "
                            f"config.SETTINGS has {default or '(none)'}")
        if not HANGUL.search(meaning):
            problems.append(f"README.ko.md line {line}: the settings row for {s.env} has no Korean meaning; translate "
                            f"config.SETTINGS' help: {s.help}")
        elif lost := [w for w in _help_literals(s.help) if w not in meaning]:
            problems.append(f"README.ko.md line {line}: the meaning of {s.env} lacks {', '.join(lost)} of config.SETTINGS' "
                            f"help (changed?); translate it again: {s.help}")
    for env, (line, _, _) in rows.items():
        if env not in known:
            problems.append(f"README.ko.md line {line}: a settings row for {env}, which config.SETTINGS does not have "
                            f"(any more); remove the row")
    present = [env for env in rows if env in known]
    if present != [env for env in known if env in rows]:
        problems.append(f"README.ko.md's settings rows are not in config.SETTINGS' order; order them: {', '.join(known)}")
    return problems


def check_keys(en_text: str, ko_text: str, settings: tuple[Setting, ...] = SETTINGS) -> list[str]:
    """Every configuration key README.md or config.SETTINGS names is in README.ko.md, and no other."""
    ours: dict[str, str] = {s.env: "config.SETTINGS" for s in settings}
    for m in CONFIG_KEY.finditer(en_text):
        ours.setdefault(m.group(0), f"README.md line {en_text.count(chr(10), 0, m.start()) + 1}")
    theirs = {m.group(0): ko_text.count("\n", 0, m.start()) + 1 for m in reversed(list(CONFIG_KEY.finditer(ko_text)))}
    problems = [f"README.ko.md never names the configuration key {key} ({origin}); translate the sentence or "
                f"settings row that names it" for key, origin in ours.items() if key not in theirs]
    problems += [f"README.ko.md line {line} names {key}, which neither README.md nor config.SETTINGS has (renamed or "
                 f"removed?)" for key, line in sorted(theirs.items()) if key not in ours]
    return problems


def metric_names(en_text: str) -> dict[str, int]:
    """README.md's metric names: the first column of its metrics table, and every pve_* name it writes."""
    names: dict[str, int] = {}
    in_table = False
    for no, line in enumerate(en_text.split("\n"), 1):
        if re.match(r"^\|\s*name\s*\|", line):
            in_table = True
        elif in_table and line.startswith("|"):
            for span in CODE_SPAN.findall(line.split("|")[1]):
                names.setdefault(span, no)
        else:
            in_table = False
        for m in METRIC.finditer(line):
            names.setdefault(m.group(0), no)
    return names


def check_metrics(en_text: str, ko_text: str) -> list[str]:
    ours, theirs = metric_names(en_text), metric_names(ko_text)
    problems = [f"README.ko.md never names the metric {name} (README.md line {line})"
                for name, line in ours.items() if name not in ko_text]
    problems += [f"README.ko.md line {line} names the metric {name}, which README.md does not (any more)"
                 for name, line in theirs.items() if name not in ours and METRIC.fullmatch(name)]
    return problems


def _prose_units(doc: Doc) -> list[tuple[int, str]]:
    """Paragraphs and table rows of a document's prose, each with its first line."""
    units: list[tuple[int, str]] = []
    current: list[tuple[int, str]] = []
    for section in doc.sections:
        for no, line in [*section.prose, (0, "")]:
            if line.startswith("|") or not line.strip():
                if current:
                    units.append((current[0][0], " ".join(t for _, t in current)))
                    current = []
                if line.startswith("|") and not re.fullmatch(r"[|\-: ]+", line):
                    units.append((no, line))
            else:
                current.append((no, line))
    return units


def _letters(text: str) -> tuple[int, int]:
    text = URL.sub(" ", LINK.sub(lambda m: m.group(0).split("](", 1)[0], CODE_SPAN.sub(" ", text)))
    return len(HANGUL.findall(text)), len(LATIN.findall(text))


def check_korean(ko: Doc) -> list[str]:
    """Most prose letters are Hangul, and no paragraph or table row is left in English."""
    problems = []
    total_hangul = total_latin = 0
    for line, unit in _prose_units(ko):
        hangul, latin = _letters(unit)
        total_hangul, total_latin = total_hangul + hangul, total_latin + latin
        if latin >= MIN_LATIN and hangul / (hangul + latin) < MIN_PARAGRAPH_SHARE:
            problems.append(f"README.ko.md line {line} reads as English, not Korean; translate it: "
                            f"\"{unit[:100]}{'...' if len(unit) > 100 else ''}\"")
    share = total_hangul / max(1, total_hangul + total_latin)
    if share < MIN_HANGUL_SHARE:
        problems.append(f"only {share:.0%} of README.ko.md's prose letters are Hangul (at least {MIN_HANGUL_SHARE:.0%} "
                        f"expected): translate the English parts")
    return problems


def check_links_resolve(ko: Doc, root: Path = ROOT) -> list[str]:
    """Every relative link of README.ko.md names a file of the repository, and a heading of it for .md#anchor."""
    problems = []
    for section in ko.sections:
        for target, line in _links(section).items():
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (root / path).resolve() if path else KO_PATH
            if path and (not file.exists() or not file.is_relative_to(root.resolve())):
                problems.append(f"README.ko.md line {line}: the link `{target}` points at {path}, which does not exist "
                                f"in the repository (moved? see where README.md's link points now)")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file.read_text()):
                problems.append(f"README.ko.md line {line}: the link `{target}` names the anchor #{anchor}, which no "
                                f"heading of {path or 'README.ko.md'} has")
    return problems


def _assert_none(problems: list[str], what: str) -> None:
    assert not problems, _report(problems, what)


def test_the_two_readmes_link_each_other_at_the_top():
    assert KO_PATH.is_file(), "README.ko.md, the README in Korean, is missing"
    _assert_none(check_language_links(en_doc(), ko_doc()), "language links")


def test_every_section_of_readme_has_its_korean_section_in_the_same_order():
    _assert_none(check_sections(en_doc(), ko_doc()), "sections")


def test_every_korean_heading_sits_under_the_marker_of_its_english_heading():
    _assert_none(check_structure(ko_doc()), "section markers")


def test_code_blocks_are_copied_verbatim_into_the_same_section():
    _assert_none(check_blocks(en_doc(), ko_doc()), "code blocks")


def test_inline_code_is_the_same_in_each_section():
    _assert_none(check_spans(en_doc(), ko_doc()), "inline code")


def test_each_section_links_the_same_files():
    _assert_none(check_links_match(en_doc(), ko_doc()), "links")


def test_each_section_has_as_many_list_items_and_bold_led_paragraphs():
    _assert_none(check_counts(en_doc(), ko_doc()), "list items and bold paragraphs")


def test_the_korean_settings_table_lists_every_setting_with_its_default():
    _assert_none(check_settings(KO_PATH.read_text()), "settings table")


def test_every_configuration_key_is_named():
    _assert_none(check_keys(EN_PATH.read_text(), KO_PATH.read_text()), "configuration keys")


def test_every_metric_name_is_named():
    assert len(metric_names(EN_PATH.read_text())) >= 10, "README.md's metrics table (| name | ...) was not found"
    _assert_none(check_metrics(EN_PATH.read_text(), KO_PATH.read_text()), "metric names")


def test_the_korean_readme_is_written_in_korean():
    _assert_none(check_korean(ko_doc()), "language")


def test_every_link_of_the_korean_readme_resolves():
    _assert_none(check_links_resolve(ko_doc()), "broken links")


# The checks catch drift: each runs on a copy of the files with one change a colleague might make.


def _en() -> str:
    return EN_PATH.read_text()


def _ko() -> str:
    return KO_PATH.read_text()


def test_the_checks_catch_a_new_section_and_its_code():
    en = _en().replace("## Troubleshooting\n", "## Replicas\n\nRun `EXPORTER_REPLICA_MODE=1` twice:\n\n```sh\n"
                       "pve-datastore-exporter serve --replica\n```\n\n## Troubleshooting\n", 1)
    problems = check_sections(en_doc(en), ko_doc())
    assert any("`## Replicas` has no Korean section" in p and "<!-- en: ## Replicas -->" in p for p in problems), problems
    assert any("EXPORTER_REPLICA_MODE" in p for p in check_keys(en, _ko()))


def test_the_checks_catch_a_changed_command_and_new_inline_code():
    en = _en().replace("make test    # the whole test suite", "make test    # the whole test suite (CI=true: no skips)", 1)
    en = en.replace("Ctrl-C stops\nboth processes.", "Ctrl-C stops\nboth processes; `make demo TLS=1` serves HTTPS.", 1)
    blocks = check_blocks(en_doc(en), ko_doc())
    assert any("`## Quick start`" in p and "(CI=true: no skips)" in p for p in blocks), blocks
    spans = check_spans(en_doc(en), ko_doc())
    assert any("`make demo TLS=1`" in p and "`## Quick start`" in p for p in spans), spans


def test_the_checks_catch_a_new_setting_and_a_lost_row():
    new = Setting("EXPORTER_SOMETHING_NEW", "something_new", "false",
                  "also read /nodes/{node}/storage for Proxmox's own avail", str)
    problems = check_settings(_ko(), (*SETTINGS, new))
    assert any("no row for EXPORTER_SOMETHING_NEW" in p and "/nodes/{node}/storage" in p for p in problems), problems
    assert any("EXPORTER_SOMETHING_NEW (config.SETTINGS)" in p for p in check_keys(_en(), _ko(), (*SETTINGS, new)))
    ko = "\n".join(line for line in _ko().split("\n") if not line.startswith("| `EXPORTER_LOG_LEVEL`"))
    assert any("no row for EXPORTER_LOG_LEVEL" in p for p in check_settings(ko))
    changed = tuple(dataclasses.replace(s, default="9000") if s.env == "PROXMOX_TIMEOUT" else s for s in SETTINGS)
    assert any("PROXMOX_TIMEOUT shows the default `10`" in p for p in check_settings(_ko(), changed))


def test_the_checks_catch_english_left_in_the_korean_readme_and_a_broken_link():
    paragraph = ("When the DB cannot be read the answers use the defaults of the environment file and say so in "
                 "every answer.")
    ko = _ko().replace("<!-- en: ## Metrics -->", f"{paragraph} [runbook](docs/missing.md)\n\n<!-- en: ## Metrics -->", 1)
    assert any("reads as English" in p and "When the DB cannot be read" in p for p in check_korean(ko_doc(ko)))
    assert any("docs/missing.md" in p and "does not exist" in p for p in check_links_resolve(ko_doc(ko)))


def test_the_checks_catch_an_unmarked_korean_heading_and_a_new_metric():
    ko = _ko().replace("<!-- en: ### Alerts -->\n", "", 1)
    assert any("`### 알림` has no marker" in p for p in check_structure(ko_doc(ko)))
    en = _en().replace("| `pve_datastore_up` |", "| `pve_datastore_exact_available_bytes` | gauge | | new |\n| `pve_datastore_up` |", 1)
    assert any("pve_datastore_exact_available_bytes" in p for p in check_metrics(en, _ko()))
