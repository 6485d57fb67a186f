"""The page in Korean and English in a real browser (Chromium via Playwright) against a real
exporter and the simulated cluster: a Korean browser (ko-KR) gets the Korean page and the API's
Korean messages, the switch changes the language and is remembered, with or without JavaScript."""

from __future__ import annotations

import re

import pytest

from pve_datastore_exporter import i18n

from .test_i18n import english_words

# browser, exporter, sim and sim_state are test_page's fixtures, imported to be shared.
from .test_page import browser, enter_token, exporter, refresh_behind_the_page, sim, sim_state  # noqa: F401

try:
    from playwright.sync_api import expect
except ImportError:  # test_page's browser fixture skips (or fails in CI) first
    expect = None

pytestmark = pytest.mark.slow

REFRESHED_KO = "5개 datastore 정보를 새로고침했습니다."  # the seed's sentence, for the 5 enabled datastores


@pytest.fixture
def tab(browser):  # noqa: F811
    """Open tabs in browsers of a given locale; no JavaScript or console error may occur in any."""
    contexts, errors = [], []

    def open_tab(locale: str, **options):
        context = browser.new_context(viewport={"width": 1280, "height": 900}, locale=locale, **options)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(error))
        page.on("console", lambda m: m.type == "error" and not m.text.startswith("Failed to load resource")
                and errors.append(m.text))
        return page

    yield open_tab
    for context in contexts:
        context.close()
    assert not errors, f"JavaScript or console errors: {errors}"


def language(page) -> str:
    return page.locator("html").get_attribute("lang")


def test_a_korean_browser_gets_the_korean_page_and_the_apis_korean_messages(exporter, sim, tab):  # noqa: F811
    page = tab("ko-KR")
    asked = []
    page.on("request", lambda r: r.resource_type == "fetch" and asked.append(r.headers.get("accept-language")))
    page.goto(exporter.url + "/")
    assert language(page) == "ko"
    answer = exporter.api()
    expect(page.locator("h1")).to_have_text("Proxmox datastore")
    expect(page.locator("#status-source")).to_have_text("데이터베이스 캐시")
    expect(page.locator("#status-age")).to_have_text(re.compile(r"^(방금|\d+초 전)$"))
    i18n.use("ko")
    try:
        for d in answer["datastores"]:
            row = page.locator(f'#datastores tr.ds[data-id="{d["id"]}"]')
            assert row.locator("td.shared").inner_text() == ("예" if d["shared"] else "아니요")
            assert row.locator("td.size").inner_text() == i18n.iec(d["size"])
            assert row.locator(".pct").inner_text() == i18n.percent(d["used"], d["size"])
    finally:
        i18n.use(i18n.DEFAULT)
    assert english_words(page.content(), answer) == []
    enter_token(page)
    messages = page.locator("#messages")
    page.click("#refresh")
    expect(messages).to_have_text(REFRESHED_KO)
    page.select_option("#hdd-select", "ceph-vm")
    page.click("#save-defaults")
    expect(messages).to_have_text("기본 datastore 설정이 변경되었습니다. 기본 HDD: ceph-vm, 기본 SSD: local.")
    assert english_words(page.content(), exporter.api()) == []  # the parts page.js swapped in are Korean too
    sim.set_faults(status=500)
    with page.expect_response("**/api/datastores/refresh") as refreshed:
        page.click("#refresh")
    envelope = refreshed.value.json()
    assert envelope["error"] == "proxmox_error" and envelope["message"].startswith("새로고침에 실패했습니다 (http_5xx")
    assert envelope["message"].endswith(exporter.api()["last_refresh"]["error"])  # Proxmox's detail, verbatim
    expect(messages).to_have_text(envelope["message"])  # said once: page.js knows the Korean prefix too
    expect(page.locator("#status-error")).to_contain_text("Proxmox 오류:")
    assert asked and set(asked) == {"ko"}  # page.js asks in the page's language


def test_the_switch_changes_the_language_and_the_page_keeps_it(exporter, sim, tab):  # noqa: F811
    page = tab("en-US")
    page.clock.install()
    page.goto(exporter.url + "/")
    assert language(page) == "en"
    expect(page.locator("nav.languages a[aria-current]")).to_have_text("English")
    page.click('nav.languages a[hreflang="ko"]')
    expect(page.locator("h1")).to_have_text("Proxmox datastore")
    assert language(page) == "ko" and "lang=ko" in page.url
    assert {c["name"]: c["value"] for c in page.context.cookies()}.get(i18n.COOKIE) == "ko"
    page.goto(exporter.url + "/")  # no parameter: the cookie remembers
    assert language(page) == "ko"
    # The browser says en-US; the page's actions and polls still come back in Korean.
    enter_token(page)
    page.click("#refresh")
    expect(page.locator("#messages")).to_have_text(REFRESHED_KO)
    sim.set_faults(status=500)
    assert refresh_behind_the_page(exporter).status_code == 502
    page.clock.run_for(15_000)
    expect(page.locator("#status-error")).to_be_visible()
    expect(page.locator("#status-error")).to_contain_text("Proxmox 오류:")
    expect(page.locator("#status-source")).to_have_text("데이터베이스 캐시")
    page.click('nav.languages a[hreflang="en"]')
    expect(page.locator("#status-error")).to_contain_text("Proxmox is failing:")
    assert language(page) == "en"
    assert {c["name"]: c["value"] for c in page.context.cookies()}.get(i18n.COOKIE) == "en"


def test_the_switch_works_without_javascript(exporter, tab):  # noqa: F811
    page = tab("en-US", java_script_enabled=False)
    page.goto(exporter.url + "/")
    expect(page.locator("#refresh")).to_have_text("Refresh from Proxmox")
    page.click('nav.languages a[hreflang="ko"]')
    expect(page.locator("#refresh")).to_have_text("Proxmox에서 새로고침")
    page.goto(exporter.url + "/")
    assert language(page) == "ko"
