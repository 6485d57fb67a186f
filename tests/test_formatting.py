"""The one formatter of the page and the `list` command, against exact strings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jinja2
import pytest

from pve_datastore_exporter.formatting import format_table, iec, level, percent, printable
from pve_datastore_exporter.records import Datastore, View

KIB, MIB, GIB, TIB, PIB, EIB = (1 << (10 * n) for n in range(1, 7))


@pytest.mark.parametrize(("value", "text"), [
    (None, "–"),
    (0, "0 B"),
    (1, "1 B"),
    (1023, "1023 B"),
    (1024, "1.00 KiB"),
    (1536, "1.50 KiB"),
    (1151, "1.12 KiB"),  # 1.1240 KiB
    (1152, "1.13 KiB"),  # 1.125 KiB exactly: a half rounds up
    (1_441_791, "1.37 MiB"),  # one byte under 1.375 MiB
    (1_441_792, "1.38 MiB"),
    (9 * GIB // 8, "1.13 GiB"),  # where f"{1.125:.2f}" says 1.12
    (MIB - 1, "1024.00 KiB"),  # the unit is chosen before rounding: under 1 MiB stays KiB
    (1000 * GIB - 1, "1000.00 GiB"),
    (5 * TIB + 1, "5.00 TiB"),
    (PIB, "1.00 PiB"),
    (2**53 + 1, "8.00 PiB"),  # past a float's exact integers
    (EIB, "1.00 EiB"),
    (2**64 - 1, "16.00 EiB"),
    (1024 * EIB, "1024.00 EiB"),  # EiB is the largest unit
    (10**30, "867361737988.40 EiB"),
])
def test_iec(value, text):
    assert iec(value) == text


@pytest.mark.parametrize(("used", "size", "text"), [
    (None, 100, "–"),
    (5, 0, "–"),
    (5, None, "–"),
    (0, 10, "0.0 %"),
    (1, 3, "33.3 %"),
    (2, 3, "66.7 %"),
    (1, 8, "12.5 %"),
    (1, 16, "6.3 %"),  # 6.25: a half rounds up
    (9994, 10000, "99.9 %"),
    (9995, 10000, "100.0 %"),
    (10, 10, "100.0 %"),
    (11, 10, "110.0 %"),  # thin pools can be over-committed
    (2**80, 3 * 2**80, "33.3 %"),
])
def test_percent(used, size, text):
    assert percent(used, size) == text


@pytest.mark.parametrize(("used", "size", "text"), [
    (None, 100, "unknown"),
    (5, 0, "unknown"),
    (5, None, "unknown"),
    (0, 10, "ok"),
    (79, 100, "ok"),
    (7999, 10000, "ok"),
    (80, 100, "high"),  # 80 % and 90 % are the marks
    (899, 1000, "high"),
    (9, 10, "critical"),
    (11, 10, "critical"),
    (2**80 * 9, 2**80 * 10, "critical"),
])
def test_level(used, size, text):
    assert level(used, size) == text




def test_list_writes_the_figures_as_the_page_does():
    rows = (Datastore("tank", "zfspool", size=10 * GIB, used=9 * GIB // 8, available=10 * GIB - 9 * GIB // 8,
                      content="images", enabled=True, active=True, is_default_hdd=True),
            Datastore("gone", "dir", enabled=False))
    lines = format_table(View(rows=rows, default_hdd="tank")).splitlines()
    assert lines[1].split() == ["tank", "zfspool", "active", "10.00", "GiB", "1.13", "GiB", "8.88", "GiB", "11.3", "%", "hdd"]
    assert lines[1] == (f"{'tank':<20} {'zfspool':<10} {'active':<9} {iec(10 * GIB):>12} {iec(9 * GIB // 8):>12} "
                        f"{iec(10 * GIB - 9 * GIB // 8):>12} {percent(9 * GIB // 8, 10 * GIB):>7}  hdd")
    assert lines[2:] == ["default HDD: tank  default SSD: None  (source: db)"]


@pytest.mark.parametrize(("text", "shown"), [
    ("local-lvm", "local-lvm"),
    ("데이터 저장소 – ü", "데이터 저장소 – ü"),  # printable non-ASCII stays as it is
    ("dir\x1b[2J\x1b]0;T\x07", "dir\\x1b[2J\\x1b]0;T\\x07"),  # ESC, OSC, BEL
    ("a\nb\rc\td", "a\\nb\\rc\\td"),  # a forged line, a carriage return over the row
    ("csi\x9b2J del\x7f", "csi\\x9b2J del\\x7f"),  # C1's one-byte CSI, DEL
    ("evil\u202egnp.exe", "evil\\u202egnp.exe"),  # a bidi override reorders what follows
    ("pve\ud800x", "pve\\ud800x"),  # a lone surrogate: print() itself would fail on it
])
def test_printable_escapes_what_a_terminal_would_obey(text, shown):
    assert printable(text) == shown
    printable(text).encode("ascii" if text.isascii() else "utf-8")


def test_list_shows_control_characters_escaped_and_never_an_extra_line():
    rows = (Datastore("loc\nforged   dir   active   1.00 TiB", "dir\x1b[2J\x1b]0;T\x07", enabled=True,
                      is_default_hdd=True),
            Datastore("tank", "zfspool", enabled=True))
    table = format_table(View(rows=rows, default_hdd="loc\nforged", default_ssd="tank\x1b[8m", source="db"))
    lines = table.splitlines()
    assert len(lines) == 4 and not any(c in table for c in "\x1b\x07\r")
    assert lines[1].startswith("loc\\nforged") and "dir\\x1b[2J\\x1b]0;T\\x07" in lines[1]
    assert lines[3] == "default HDD: loc\\nforged  default SSD: tank\\x1b[8m  (source: db)"


# -- one renderer: the server's. static/page.js swaps the server's page in and formats nothing. --

PACKAGE = Path(__file__).resolve().parent.parent / "exporter" / "pve_datastore_exporter"
# A comment, or a string literal of any of JavaScript's three quotes.
JS_TOKENS = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|`(?:\\.|[^`\\])*`', re.S)
RENDERERS = re.compile(r"\b(iec|percent|level|ago|usage|qualifies|render\w*|datastoreRows|nodesRow|tickAge|BigInt)\b"
                       r"|[KMGTPE]iB|1024")
SENTENCE = re.compile(r"\b[A-Z][a-z]*\s+[A-Za-z]|[^\x00-\x7f]")  # "Saving the…", "Refresh failed", "…"


def page_js() -> str:
    return (PACKAGE / "static" / "page.js").read_text()


def code_and_strings(js: str) -> tuple[str, list[str]]:
    """page.js without its comments, and its string literals."""
    code = JS_TOKENS.sub(lambda m: "" if m[0].startswith("/") else m[0], js)
    return code, [m[0][1:-1] for m in JS_TOKENS.finditer(js) if not m[0].startswith("/")]


def page_texts() -> dict[str, str]:
    """The sentences the template hands to page.js."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(PACKAGE / "templates"), autoescape=True,
                             extensions=["jinja2.ext.i18n"])
    env.install_null_translations(newstyle=True)  # the English texts; tests/test_i18n.py checks the others
    env.globals["url_for"] = lambda endpoint, **values: f"/{endpoint}"
    html = env.get_template("_page_data.html").render(token_required=True)
    return json.loads(re.search(r'<script type="application/json" id="page-data">(.*)</script>', html, re.S)[1])["texts"]


def test_page_js_formats_nothing():
    code, _ = code_and_strings(page_js())
    assert not RENDERERS.findall(code), "page.js formats: the template and formatting.py do that"


def test_page_js_holds_no_sentences():
    _, strings = code_and_strings(page_js())
    assert strings and not [s for s in strings if SENTENCE.search(s)], "sentences belong in templates/_page_data.html"


def test_every_text_page_js_shows_is_in_the_template_and_used():
    js = page_js()
    used = set(re.findall(r'\btext\("(\w+)"', js)) | set(re.findall(r'\bfailed\(result, "(\w+)"\)', js))
    assert used == set(page_texts())
