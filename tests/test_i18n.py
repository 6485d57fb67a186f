"""Korean and English: the catalogue against the code, the negotiation, the API's messages and the
page as the server renders it (tests/test_page_i18n.py drives it in Chromium)."""

from __future__ import annotations

import html.parser
import json
import re
from pathlib import Path

import pytest
import requests
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from werkzeug import exceptions

from pve_datastore_exporter import i18n
from pve_datastore_exporter.answers import WARNINGS, DefaultWarning, default_warnings
from pve_datastore_exporter.records import FAILURE_REASONS, Datastore, RefreshFailed, View

from .factories import FakeReader, config
from .servers import Exporter

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "exporter" / "pve_datastore_exporter"
KO = {"Accept-Language": "ko-KR,ko;q=0.9,en-US;q=0.8,en;q=0.7"}  # what a Korean Chromium sends
HANGUL = re.compile(r"[\uac00-\ud7a3]")
PLACEHOLDERS = re.compile(r"%\((\w+)\)[sd]|\{(\w+)\}")
TOKEN = "i18n-test-token"


def catalogue(language: str = "ko"):
    with (i18n.LOCALES / language / "LC_MESSAGES" / "messages.po").open("rb") as po:
        return read_po(po, locale=language)


def extracted() -> set:
    """Every message the code and the templates ask to translate, found as `make messages` finds them."""
    with (ROOT / "babel.cfg").open() as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    return {message for _, _, message, _, _ in extract_from_dir(PACKAGE, method_map, options_map)}


def placeholders(texts) -> set[str]:
    texts = texts if isinstance(texts, (tuple, list)) else (texts,)
    return {a or b for text in texts for a, b in PLACEHOLDERS.findall(text)}


@pytest.fixture
def speaking():
    """Run a test in a language, outside any request."""
    yield i18n.use
    i18n.use(i18n.DEFAULT)


@pytest.fixture
def exporter(tmp_path):
    e = Exporter(config(tmp_path), FakeReader())
    yield e
    e.close()


# -- the catalogue ---------------------------------------------------------------------------

def test_every_text_of_the_code_and_the_templates_is_translated_and_nothing_else():
    po = catalogue()
    wanted = extracted()
    held = {m.id for m in po if m.id}
    assert len(wanted) > 80  # the extraction found the templates and http/app.py, not nothing
    assert sorted(map(str, wanted - held)) == [], "untranslated: run `make messages`, then translate"
    assert sorted(map(str, held - wanted)) == [], "no longer used: run `make messages`"
    assert [m.id for m in po if m.id and m.fuzzy] == [], "fuzzy: check the translation, drop the flag"
    empty = [m.id for m in po if m.id and not all(m.string if isinstance(m.string, tuple) else (m.string,))]
    assert empty == []
    assert not po.obsolete


def test_every_translation_keeps_the_placeholders_of_its_text():
    po = catalogue()
    assert list(po.check()) == []  # Babel's own checks of python-format texts
    wrong = [(m.id, m.string) for m in po if m.id and placeholders(m.id) != placeholders(m.string)]
    assert wrong == []
    assert po.plural_forms == "nplurals=1; plural=0;"  # Korean has one form: "3개 datastore"


def test_the_catalogue_is_package_data_and_compiles_in_memory():
    setup = (ROOT / "setup.cfg").read_text()
    assert "locales/*/LC_MESSAGES/*.po" in setup and re.search(r"^\s+Babel[>=<]", setup, re.M)
    assert not list(PACKAGE.rglob("*.mo")), "the .mo is built when the catalogue is first used, never committed"
    assert i18n.translations("ko").gettext("Refresh") == "새로고침"


def test_every_refresh_failure_reason_and_werkzeug_error_has_its_sentence():
    assert set(i18n.REFRESH_FAILED) == set(FAILURE_REASONS)
    for code, message in i18n.HTTP_MESSAGES.items():
        assert exceptions.default_exceptions[code].description == message  # English stays werkzeug's, word for word


# -- which language --------------------------------------------------------------------------

@pytest.mark.parametrize("header,language", [
    (None, "en"), ("", "en"), ("ko", "ko"), ("ko-KR", "ko"), ("KO-kr", "ko"), ("ko_KR", "ko"),
    ("ko-KR,ko;q=0.9,en-US;q=0.8,en;q=0.7", "ko"), ("en-US,en;q=0.9,ko;q=0.8", "en"),
    ("en;q=0.5, ko;q=0.9", "ko"), ("ko;q=0.9, en;q=0.95", "en"), ("ko, en", "ko"), ("en, ko", "en"),
    ("ko;q=0", "en"), ("ko;q=0, en", "en"), ("fr, ko;q=0.5", "ko"), ("fr, *;q=0.8, ko;q=0.5", "en"),
    ("*", "en"), ("ko;q=nonsense", "en"), ("ko;q=2", "en"), ("de-CH", "en"), (",,;q=1", "en"),
])
def test_accept_language_is_negotiated_with_its_q_values(header, language):
    assert i18n.negotiate(header) == language


def test_the_page_prefers_the_switch_then_its_cookie_then_the_header():
    assert i18n.page_language("ko", "en", "en") == "ko"
    assert i18n.page_language(None, "ko", "en") == "ko"
    assert i18n.page_language("fr", "nonsense", "ko") == "ko"


# -- figures and sentences -------------------------------------------------------------------

def test_figures_follow_the_locale(speaking):
    gib = 1 << 30
    assert i18n.iec(3 * gib // 2) == "1.50 GiB" and i18n.iec(3 * gib // 2, locale="de") == "1,50 GiB"
    assert i18n.percent(454, 1000, locale="de") == "45,4 %" and i18n.percent(1, None) == "–"
    assert i18n.number(12345, locale="de") == "12.345" and i18n.iec(1023) == "1023 B"
    assert i18n.ago(300) == "5 minutes ago" and i18n.ago(59) == "59 seconds ago" and i18n.ago(5) == "just now"
    assert i18n.moment("2023-11-14T22:13:20Z") == "November 14, 2023, 10:13:20\u202fPM UTC"  # CLDR's narrow space
    speaking("ko")
    assert i18n.iec(3 * gib // 2) == "1.50 GiB"  # Korean writes a decimal point too
    assert (i18n.ago(300), i18n.ago(3 * 3600 + 59), i18n.ago(5), i18n.ago(None)) == ("5분 전", "3시간 전", "방금", "없음")
    assert i18n.moment("2023-11-14T22:13:20Z") == "2023년 11월 14일 오후 10시 13분 20초 UTC"


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "never"),
    (-3.5, "just now"),  # a clock stepped back
    (0, "just now"),
    (9.99, "just now"),
    (10, "10 seconds ago"),
    (59.9, "59 seconds ago"),
    (60, "1 minute ago"),
    (119, "1 minute ago"),
    (120, "2 minutes ago"),
    (3599, "59 minutes ago"),
    (3600, "1 hour ago"),
    (7200, "2 hours ago"),
    (86399, "23 hours ago"),
    (86400, "1 day ago"),
    (3 * 86400 + 5, "3 days ago"),
])
def test_an_age_in_english_whole_units_floored(seconds, text):  # formatting.ago's table, kept for i18n.ago
    assert i18n.ago(seconds) == text


def test_every_warning_is_translated_by_its_code_with_its_datastore(speaking):
    rows = (Datastore("off", "dir", enabled=False), Datastore("idle", "dir", enabled=True, active=False))
    views = [View(rows=rows, default_hdd=None, default_ssd="gone-ds"), View(rows=rows, default_hdd="off", default_ssd="idle")]
    found = [w for v in views for w in default_warnings(v)]
    assert found == [DefaultWarning("no_default", "HDD"), DefaultWarning("missing", "SSD", "gone-ds"),
                     DefaultWarning("disabled", "HDD", "off"), DefaultWarning("inactive", "SSD", "idle")]
    assert {w.code for w in found} == set(WARNINGS)  # every code is met
    sentences = [w.english() for w in found]
    assert sentences == ["no default HDD datastore is set", "default SSD datastore 'gone-ds' does not exist in the cluster",
                         "default HDD datastore 'off' is disabled or gone from the cluster",
                         "default SSD datastore 'idle' is not active on any node"]
    assert [i18n.warning(w) for w in found] == sentences  # English: the JSON's own words
    speaking("ko")
    for warning, sentence in zip(found, sentences, strict=True):
        korean = i18n.warning(warning)
        assert HANGUL.search(korean) and not re.search(r"\b(default|datastore is|does not|is not)\b", korean), korean
        assert re.findall(r"'[^']+'|HDD|SSD", korean) == re.findall(r"'[^']+'|HDD|SSD", sentence)


# -- the API ---------------------------------------------------------------------------------

def test_the_seeds_messages_in_korean_and_english_unchanged(exporter):
    ko = exporter.post("/api/datastores/refresh", headers=KO)
    assert ko.json() == {"success": True, "message": "3개 datastore 정보를 새로고침했습니다.", "count": 3, "role": "leader"}
    assert ko.headers["Content-Language"] == "ko" and "Accept-Language" in ko.headers["Vary"]
    en = exporter.post("/api/datastores/refresh", headers={"Accept-Language": "en-US,ko;q=0.5"}).json()
    assert en["message"] == "Refreshed 3 datastores from Proxmox."
    body = {"hdd_datastore_id": "ceph-vm", "ssd_datastore_id": "local"}
    changed = exporter.post("/api/datastores/default", json=body, headers=KO).json()
    assert changed["message"] == "기본 datastore 설정이 변경되었습니다."
    assert list(changed) == ["success", "message", "hdd_datastore", "ssd_datastore", "changed"]
    assert exporter.post("/api/datastores/default", json=body).json()["message"] == "Default datastores already set."
    assert HANGUL.search(exporter.post("/api/datastores/default", json=body, headers=KO).json()["message"])


@pytest.mark.parametrize("kwargs,code,kept", [
    ({"data": "{not json"}, "invalid_json", ""),
    ({"json": []}, "invalid_json", "hdd_datastore_id"),
    ({"json": {"hdd": "x", "extra": 1}}, "invalid_field", "extra, hdd"),
    ({"json": {"ssd_datastore_id": "bad id!"}}, "invalid_field", "ssd_datastore_id"),
    ({"json": {}}, "invalid_field", "hdd_datastore_id"),
    ({"json": {"hdd_datastore_id": "HDD-Storage"}}, "unknown_datastore", "'HDD-Storage'"),
    ({"data": b"x" * 40000}, "payload_too_large", ""),
])
def test_error_messages_are_korean_when_asked_and_codes_never_are(exporter, kwargs, code, kept):
    exporter.get("/api/datastores")
    en = exporter.post("/api/datastores/default", **kwargs)
    ko = exporter.post("/api/datastores/default", headers=KO, **kwargs)
    assert ko.status_code == en.status_code and ko.json()["error"] == en.json()["error"] == code
    assert set(ko.json()) == set(en.json()) == {"success", "error", "message"}
    assert HANGUL.search(ko.json()["message"]) and not HANGUL.search(en.json()["message"])
    assert kept in ko.json()["message"] and kept in en.json()["message"]


@pytest.mark.parametrize("method,path", [("GET", "/api/nope"), ("PUT", "/api/datastores/default"), ("GET", "/?part=x")])
def test_routing_errors_are_korean_when_asked(exporter, method, path):
    en = exporter.http.request(method, exporter.url + path, timeout=5).json()
    ko = exporter.http.request(method, exporter.url + path, headers=KO, timeout=5).json()
    assert en["error"] == ko["error"] and HANGUL.search(ko["message"]) and not HANGUL.search(en["message"])


@pytest.mark.parametrize("reason", ["http_5xx", "auth", "connection", "something_new"])
def test_a_failed_refresh_says_its_reason_in_korean_and_keeps_the_detail(exporter, reason):
    detail = "Proxmox API call failed: 500 Internal Server Error"
    exporter.service._reader.error = RefreshFailed(reason, detail)
    en = exporter.post("/api/datastores/refresh").json()
    ko = exporter.post("/api/datastores/refresh", headers=KO).json()
    assert en["message"] == f"Refresh failed ({reason}): {detail}" and en["error"] == ko["error"] == "proxmox_error"
    assert ko["message"].startswith(f"새로고침에 실패했습니다 ({reason}") and ko["message"].endswith(f"): {detail}")


def test_a_database_error_keeps_its_detail_inside_the_korean_sentence(tmp_path):
    (tmp_path / "db.sqlite").write_bytes(b"garbage" * 1000)
    e = Exporter(config(tmp_path), FakeReader())
    try:
        body = {"hdd_datastore_id": "ceph-vm"}
        en = e.post("/api/datastores/default", json=body).json()["message"]
        ko = e.post("/api/datastores/default", json=body, headers=KO).json()["message"]
        detail = en.removeprefix("The database cannot be written: ")
        assert detail != en and ko == f"데이터베이스에 쓸 수 없습니다: {detail}"
        assert e.post("/api/datastores/refresh", headers=KO).json()["message"].startswith("새로고침에 실패했습니다 (db")
    finally:
        e.close()


def test_metrics_and_json_data_are_never_translated(exporter):
    exporter.service.refresh()
    plain = {"Accept-Encoding": "identity"}
    assert exporter.get("/metrics", headers={**plain, **KO}).content == exporter.get("/metrics", headers=plain).content
    ko, en = exporter.get("/api/datastores", headers=KO).json(), exporter.get("/api/datastores").json()
    assert {**ko, "last_refresh": None} == {**en, "last_refresh": None}  # the age moves on between the two
    assert ko["warnings"] == en["warnings"]


# -- the page, as the server renders it --------------------------------------------------------

class _Text(html.parser.HTMLParser):
    """The words a reader meets: text and the attributes that are read out, minus foreign-language
    elements (the switch's "English") and the verbatim Proxmox error."""

    SKIPPED = ("script", "style")

    def __init__(self):
        super().__init__()
        self.words, self.stack = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("meta", "link", "input", "br"):
            return
        foreign = attrs.get("lang") not in (None, "ko") or attrs.get("id") == "status-error-text"
        self.stack.append(tag in self.SKIPPED or foreign or bool(self.stack and self.stack[-1]))
        if not self.stack[-1]:
            self.words += [attrs[a] for a in ("title", "aria-label", "placeholder") if attrs.get(a)]

    def handle_endtag(self, tag):
        if tag not in ("meta", "link", "input", "br") and self.stack:
            self.stack.pop()

    def handle_data(self, data):
        if not (self.stack and self.stack[-1]):
            self.words.append(data)


def english_words(page: str, answer: dict) -> list[str]:
    """Latin words on a Korean page that are neither names (Proxmox, datastore, HDD...) nor the data."""
    allowed = {"Proxmox", "datastore", "Datastore", "HDD", "SSD", "API", "EXPORTER", "TOKEN", "env", "exporter",
               "images", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "UTC", "ZFS", "SMART"}
    names = [answer["default_hdd"], answer["default_ssd"], *re.findall(r"'([^']+)'", " ".join(answer["warnings"]))]
    for d in answer["datastores"]:
        names += [d["id"], d["type"], d["content"], *(n["node"] for n in d["nodes"])]
    allowed |= set(re.findall(r"[A-Za-z]+", " ".join(names)))
    parser = _Text()
    parser.feed(page)
    return [w for w in re.findall(r"[A-Za-z]{2,}", " ".join(parser.words)) if w not in allowed]


def page_texts(page: str) -> dict:
    return json.loads(re.search(r'id="page-data">(.*?)</script>', page, re.S)[1])["texts"]


def test_the_korean_page_is_korean_throughout(tmp_path):
    e = Exporter(config(tmp_path, api_token=TOKEN, hdd_datastore="gone-ds"), FakeReader())
    try:
        e.service.refresh()
        e.service._reader.error = RefreshFailed("http_5xx", "Proxmox API call failed: 500 Internal Server Error")
        e.post("/api/datastores/refresh", headers={"Authorization": f"Bearer {TOKEN}"})
        page = e.get("/", headers=KO)
        answer = e.get("/api/datastores").json()
        assert answer["warnings"] and answer["last_refresh"]["ok"] is False  # every part of the page shows
        assert '<html lang="ko">' in page.text and page.headers["Content-Language"] == "ko"
        assert english_words(page.text, answer) == []
        texts = page_texts(page.text)
        assert [k for k, v in texts.items() if not HANGUL.search(v)] == []  # page.js's sentences too
        english = e.get("/", headers={"Accept-Language": "en"}).text.replace('<html lang="en">', "<html>")
        assert len(english_words(english, answer)) > 100  # the check can fail
    finally:
        e.close()


def test_an_empty_korean_page_is_korean_too(tmp_path):
    e = Exporter(config(tmp_path), FakeReader(error=RefreshFailed("connection", "cannot reach Proxmox")))
    try:
        page = e.get("/", headers=KO).text
        assert "아직 알려진 datastore가 없습니다" in page
        assert english_words(page, e.get("/api/datastores").json()) == []
    finally:
        e.close()


def test_the_switch_works_without_javascript_and_is_remembered(exporter):
    assert '<html lang="en">' in exporter.get("/").text
    chosen = exporter.get("/?lang=ko")
    assert '<html lang="ko">' in chosen.text and 'hreflang="en"' in chosen.text
    cookie = chosen.headers["Set-Cookie"]
    assert cookie.startswith("lang=ko;") and "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Cookie" in chosen.headers["Vary"] and chosen.headers["Cache-Control"] == "no-store"
    assert '<html lang="ko">' in exporter.get("/").text  # the session keeps the cookie
    assert '<html lang="en">' in exporter.get("/?lang=en", headers=KO).text
    assert '<html lang="en">' in exporter.get("/", headers=KO).text  # the cookie wins over the browser's header
    status = requests.get(exporter.url + "/?part=status", headers=KO, timeout=5)  # page.js's polls: no cookie
    assert 'aria-label="데이터 상태"' in status.text and status.headers["Content-Language"] == "ko"
    unknown = exporter.get("/?lang=fr")
    assert "Set-Cookie" not in unknown.headers
