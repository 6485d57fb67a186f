"""The web page in a real browser (Debian's Chromium via Playwright) against a real exporter
process and the simulated cluster: the table is the API's data, the actions change what the API
and the DB hold, the page stays current, and failures leave the page truthful."""

from __future__ import annotations

import re
import sqlite3

import pytest
import requests

from pve_datastore_exporter.formatting import iec, level, percent
from pve_datastore_exporter.simulator import Simulator
from tools.browser import CHROMIUM, ExporterProcess, launch_chromium

from .needs import in_ci, require_tool

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the rule of tools.require_tool: a skip locally, a failure in CI
    expect = sync_playwright = None

pytestmark = pytest.mark.slow

TOKEN = "page-test-token-1"
GIB = 1 << 30
DS_IDS = ["ceph-vm", "local", "local-lvm", "nas-backup", "tank"]  # enabled ones of the default mix
IMAGES = ["ceph-vm", "local-lvm", "tank"]  # enabled with "images" content: the defaults on offer


@pytest.fixture(scope="module")
def browser():
    if sync_playwright is None:
        message = "playwright is not installed (pip install 'playwright>=1.45,<2')"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    require_tool(CHROMIUM)
    expect.set_options(timeout=10_000)
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def sim_state(tmp_path_factory):
    return tmp_path_factory.mktemp("sim")  # the simulator's CA and certificate, made once


@pytest.fixture
def sim(sim_state):
    with Simulator(nodes=3, datastores=6, random_seed=1, drift=False, state_dir=sim_state, auth_delay=0.1) as s:
        yield s


@pytest.fixture
def exporter(sim, tmp_path):
    # No pools read in the background: the tests below know when the rows change (test_risk_answers shows the risks).
    with ExporterProcess(sim.env(), tmp_path, api_token=TOKEN, extra_env={"EXPORTER_POOLS_INTERVAL": "0"}) as e:
        yield e


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    errors = []
    tab.on("pageerror", lambda error: errors.append(error))
    # Console errors catch CSP refusals too; a 4xx/5xx answer the page expects is logged as well.
    tab.on("console", lambda m: m.type == "error" and not m.text.startswith("Failed to load resource")
           and errors.append(m.text))
    yield tab
    context.close()
    assert not errors, f"JavaScript or console errors: {errors}"


def db_defaults(e: ExporterProcess) -> list[tuple]:
    with sqlite3.connect(e.db_path) as conn:
        return conn.execute("SELECT id, enabled, is_default_hdd, is_default_ssd FROM datastores ORDER BY id").fetchall()


def enter_token(page, token: str = TOKEN) -> None:
    page.fill("#token-input", token)
    page.press("#token-input", "Enter")
    expect(page.locator("#token-set")).to_be_visible()


def assert_table_matches(page, answer: dict) -> None:
    """Every row, figure, mark and option on the page is the API's."""
    rows = page.locator("#datastores tr.ds")
    expect(rows).to_have_count(len(answer["datastores"]))
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.id)") == [d["id"] for d in answer["datastores"]]
    for d in answer["datastores"]:
        row = page.locator(f'#datastores tr.ds[data-id="{d["id"]}"]')
        assert row.locator("td.type").inner_text() == d["type"]
        assert row.locator("td.shared").inner_text() == ("yes" if d["shared"] else "no")
        assert row.locator("td.content").inner_text() == d["content"].replace(",", ", ")
        for key in ("size", "used", "available"):
            cell = row.locator(f"td.{key}")
            assert cell.get_attribute("data-bytes") == str(d[key])
            assert cell.inner_text() == iec(d[key])
            assert cell.evaluate("c => getComputedStyle(c).textAlign") == "right"
        assert row.locator(".pct").inner_text() == percent(d["used"], d["size"])
        assert row.locator(".usage").get_attribute("class") == f"usage usage-{level(d['used'], d['size'])}"
        marks = row.locator("td.default .badge").all_inner_texts()
        assert marks == [m for m, on in (("HDD", d["is_default_hdd"]), ("SSD", d["is_default_ssd"])) if on]
    expect(page.locator("#hdd-select")).to_have_value(answer["default_hdd"])
    expect(page.locator("#ssd-select")).to_have_value(answer["default_ssd"])


def assert_nodes_match(page, d: dict) -> None:
    """The per-node figures of datastore `d` on the page are the API's."""
    nodes = page.locator(f"#nodes-{d['id']}")
    assert nodes.locator("tbody tr").evaluate_all("rs => rs.map(r => r.dataset.node)") == [n["node"] for n in d["nodes"]]
    for n in d["nodes"]:
        cells = nodes.locator(f'tr[data-node="{n["node"]}"] td.num')
        assert cells.all_inner_texts() == [iec(n["size"]), iec(n["used"]), iec(n["available"])]


def datastore(answer: dict, datastore_id: str) -> dict:
    return next(d for d in answer["datastores"] if d["id"] == datastore_id)


def refresh_behind_the_page(e: ExporterProcess) -> requests.Response:
    return requests.post(e.url + "/api/datastores/refresh", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)


def options(page, select: str) -> list[str]:
    return page.locator(f"{select} option").evaluate_all("os => os.map(o => o.value)")


def test_the_table_is_the_api_data(exporter, page):
    page.goto(exporter.url + "/")
    answer = exporter.api()
    assert [d["id"] for d in answer["datastores"]] == DS_IDS
    assert_table_matches(page, answer)
    assert page.locator(".num").first.evaluate("c => getComputedStyle(c).fontVariantNumeric") == "tabular-nums"
    # The default SSD `local` holds no images: offered anyway as the current default, and marked so.
    assert options(page, "#hdd-select") == IMAGES
    assert options(page, "#ssd-select") == ["ceph-vm", "local", "local-lvm", "tank"]
    expect(page.locator("#ssd-select option:checked")).to_have_text("local (current; no “images” content)")
    expect(page.locator("#status-source")).to_have_text("database cache")
    expect(page.locator("#status-age")).to_have_text(re.compile(r"just now|\d+ seconds? ago"))
    expect(page.locator("#status-error")).to_be_hidden()
    expect(page.locator("#warnings")).to_be_hidden()
    # Per-node figures on demand, by keyboard.
    nodes = page.locator("#nodes-local")
    expect(nodes).to_be_hidden()
    page.focus('tr.ds[data-id="local"] button.toggle')
    page.keyboard.press("Enter")
    expect(nodes).to_be_visible()
    expect(page.locator('tr.ds[data-id="local"] button.toggle')).to_have_attribute("aria-expanded", "true")
    assert_nodes_match(page, datastore(answer, "local"))
    page.keyboard.press("Space")
    expect(nodes).to_be_hidden()


def test_every_control_is_labelled_and_the_messages_are_live(exporter, page):
    page.goto(exporter.url + "/")
    for control in page.locator("input, select").all():
        label = page.locator(f'label[for="{control.get_attribute("id")}"]')
        expect(label).to_have_count(1)
        assert label.inner_text().strip()
    for button in page.locator("button:visible").all():
        assert button.inner_text().strip()
    expect(page.locator("#messages")).to_have_attribute("aria-live", "polite")
    region = page.locator(".table-wrap")
    assert region.get_attribute("tabindex") == "0" and region.get_attribute("role") == "region"


def test_a_default_changed_on_the_page_is_in_the_api_and_survives_a_reload(exporter, page):
    page.goto(exporter.url + "/")
    enter_token(page)
    page.focus("#hdd-select")  # by keyboard: local-lvm -> ceph-vm, then Tab to Save
    page.keyboard.press("ArrowUp")
    expect(page.locator("#hdd-select")).to_have_value("ceph-vm")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    expect(page.locator("#save-defaults")).to_be_focused()
    with page.expect_request("**/api/datastores/default") as posted:
        page.keyboard.press("Enter")
    assert posted.value.headers["authorization"] == f"Bearer {TOKEN}"
    assert posted.value.post_data_json == {"hdd_datastore_id": "ceph-vm"}  # only what changed
    expect(page.locator("#messages")).to_contain_text("Default datastores changed.")
    expect(page.locator("#save-defaults")).to_be_focused()  # the keyboard user keeps their place
    answer = exporter.api()
    assert (answer["default_hdd"], answer["default_ssd"]) == ("ceph-vm", "local")
    assert ("ceph-vm", 1, 1, 0) in db_defaults(exporter)
    assert_table_matches(page, answer)  # swapped in by page.js from the page the server renders again
    page.reload()
    assert_table_matches(page, answer)  # the same, loaded whole
    expect(page.locator("#token-set")).to_be_visible()  # asked once per tab...
    assert page.evaluate("sessionStorage.getItem('pve-datastore-exporter.api-token')") == TOKEN
    assert page.context.cookies() == [] and TOKEN not in page.url  # ...and kept nowhere else


def test_refresh_shows_the_new_figures(exporter, sim, page):
    page.goto(exporter.url + "/")
    before = exporter.api()
    sim.cluster.set_usage("local-lvm", fraction=0.95)
    sim.cluster.set_usage("tank", fraction=0.85)
    enter_token(page)
    toggle = page.locator('tr.ds[data-id="local-lvm"] button.toggle')
    toggle.click()
    page.click("#refresh")
    expect(page.locator("#messages")).to_have_text("Refreshed 5 datastores from Proxmox.")
    after = exporter.api()
    assert after["datastores"] != before["datastores"]
    assert_table_matches(page, after)
    expect(page.locator('tr.ds[data-id="local-lvm"] .usage')).to_have_class("usage usage-critical")
    expect(page.locator('tr.ds[data-id="tank"] .usage')).to_have_class("usage usage-high")
    expect(page.locator("#status-age")).to_have_text(re.compile(r"just now|\d+ seconds? ago"))
    # The per-node rows the user opened stay open, with the new figures.
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(page.locator("#nodes-local-lvm")).to_be_visible()
    assert_nodes_match(page, datastore(after, "local-lvm"))
    expect(page.locator("#nodes-tank")).to_be_hidden()


def test_the_page_keeps_itself_current_without_a_click(exporter, sim, page):
    page.clock.install()  # the page's 15-second timer, fast-forwarded
    page.goto(exporter.url + "/")
    page.select_option("#hdd-select", "tank")  # chosen, not saved yet
    toggle = page.locator('tr.ds[data-id="local-lvm"] button.toggle')
    toggle.click()  # open, and focused
    sim.cluster.set_usage("local-lvm", fraction=0.95)
    assert refresh_behind_the_page(exporter).ok
    requests.post(exporter.url + "/api/datastores/default", json={"ssd_datastore_id": "tank"},
                  headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).raise_for_status()
    answer = exporter.api()
    lvm = datastore(answer, "local-lvm")
    used = page.locator('tr.ds[data-id="local-lvm"] td.used')
    expect(used).not_to_have_text(iec(lvm["used"]))  # nobody told the page yet
    page.clock.run_for(15_000)
    expect(used).to_have_text(iec(lvm["used"]))
    expect(page.locator('tr.ds[data-id="local-lvm"] .pct')).to_have_text(percent(lvm["used"], lvm["size"]))
    expect(page.locator('tr.ds[data-id="local-lvm"] .usage')).to_have_class("usage usage-critical")
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(toggle).to_be_focused()
    assert_nodes_match(page, lvm)
    # The user's unsaved choice is left alone, and so are the options it is made from.
    expect(page.locator("#hdd-select")).to_have_value("tank")
    expect(page.locator("#ssd-select")).to_have_value("local")
    page.select_option("#hdd-select", "local-lvm")  # back to the default: nothing to keep
    page.focus("#refresh")
    page.clock.run_for(15_000)
    expect(page.locator("#ssd-select")).to_have_value("tank")
    assert_table_matches(page, exporter.api())
    # The status line follows too; the rows, unchanged, are left alone.
    page.evaluate("document.getElementById('datastore-rows').kept = true")
    sim.set_faults(status=500)
    assert refresh_behind_the_page(exporter).status_code == 502
    page.clock.run_for(15_000)
    expect(page.locator("#status-error")).to_be_visible()
    expect(page.locator("#status-error-text")).to_have_text(exporter.api()["last_refresh"]["error"])
    assert page.evaluate("document.getElementById('datastore-rows').kept") is True
    expect(toggle).to_have_attribute("aria-expanded", "true")


def next_poll(page, answer):
    """One tick of the page's 15-second timer, waited for until the page has put `answer` in place.

    The status section is busy from the tick until the poll's answer is read and applied; a tick meanwhile
    is skipped. The answer arriving is not enough, then: the next tick could come while it is being read.
    """
    with page.expect_response(answer):
        page.clock.run_for(15_000)
    expect(page.locator("#status")).not_to_have_attribute("aria-busy", "true")


def test_polls_fetch_the_status_alone_until_the_data_changes_and_say_when_they_fail(exporter, page):
    page.clock.install()
    page.goto(exporter.url + "/")
    asked = []
    page.on("request", lambda request: asked.append(request.url))
    for _ in range(2):
        next_poll(page, lambda response: "part=status" in response.url)
    assert asked and all("part=status" in url for url in asked), asked  # nothing changed: no whole page
    status = lambda url: "part=status" in url  # noqa: E731
    page.route(status, lambda route: route.abort())
    page.clock.run_for(15_000)
    message = page.locator("#messages")
    expect(message).to_contain_text("Cannot reach the exporter")
    expect(message).to_contain_text("may be out of date")
    page.unroute(status)
    page.clock.run_for(15_000)
    expect(message).to_have_text("")


def test_a_wrong_token_is_refused_and_changes_nothing(exporter, sim, page):
    page.goto(exporter.url + "/")
    before, rows = exporter.api(), db_defaults(exporter)
    sim.reset_stats()
    page.click("#refresh")  # no token yet: asked for, nothing sent
    expect(page.locator("#messages")).to_have_text("Enter the API token first: changes need it.")
    expect(page.locator("#token-input")).to_be_focused()
    enter_token(page, "not-the-token")
    page.select_option("#hdd-select", "tank")
    page.click("#save-defaults")
    message = page.locator("#messages")
    expect(message).to_contain_text("the API token is wrong")
    expect(message).to_have_class(re.compile("messages-error"))
    expect(page.locator("#token-input")).to_be_visible()
    expect(page.locator("#token-input")).to_be_focused()
    expect(page.locator("#hdd-select")).to_have_value("local-lvm")  # back to the real default
    assert page.evaluate("sessionStorage.getItem('pve-datastore-exporter.api-token')") is None
    enter_token(page, "still-not-it")
    page.click("#refresh")
    expect(message).to_contain_text("Refresh failed: the API token is wrong")
    after = exporter.api()
    assert after["datastores"] == before["datastores"] and after["default_hdd"] == "local-lvm"
    assert db_defaults(exporter) == rows
    assert sim.request_count == 0  # the refused refresh never reached Proxmox
    assert_table_matches(page, after)
    # Re-entered correctly, it works.
    enter_token(page)
    page.select_option("#hdd-select", "tank")
    page.click("#save-defaults")
    expect(message).to_contain_text("Default datastores changed.")
    assert exporter.api()["default_hdd"] == "tank"


def test_a_failing_cluster_leaves_the_cached_data_and_shows_the_error(exporter, sim, page):
    page.goto(exporter.url + "/")
    before = exporter.api()
    sim.set_faults(status=500)
    enter_token(page)
    with page.expect_response("**/api/datastores/refresh") as refreshed:
        page.click("#refresh")
    envelope = refreshed.value.json()
    assert refreshed.value.status == 502 and envelope["error"] == "proxmox_error"
    assert envelope["message"].startswith("Refresh failed")  # said once, not "Refresh failed: Refresh failed"
    expect(page.locator("#messages")).to_have_text(envelope["message"])
    after = exporter.api()
    assert after["last_refresh"]["ok"] is False and after["datastores"] == before["datastores"]
    error = page.locator("#status-error")
    expect(error).to_be_visible()
    expect(page.locator("#status-error-text")).to_have_text(after["last_refresh"]["error"])
    assert_table_matches(page, after)
    page.reload()  # the template says the same
    expect(error).to_be_visible()
    expect(error).to_contain_text("Proxmox is failing")
    expect(page.locator("#status-error-text")).to_have_text(after["last_refresh"]["error"])
    assert_table_matches(page, exporter.api())


def test_a_refused_save_shows_the_server_message_and_the_real_defaults(exporter, sim, page):
    page.goto(exporter.url + "/")
    sim.cluster.vanish("tank")  # gone behind the page's back
    refreshed = refresh_behind_the_page(exporter)
    assert refreshed.json()["count"] == 4
    enter_token(page)
    page.select_option("#hdd-select", "tank")
    with page.expect_response("**/api/datastores/default") as answered:
        page.click("#save-defaults")
    envelope = answered.value.json()
    assert (answered.value.status, envelope["error"]) == (404, "unknown_datastore")
    expect(page.locator("#messages")).to_have_text(f"Saving the defaults failed: {envelope['message']}")
    expect(page.locator("#hdd-select")).to_have_value("local-lvm")
    answer = exporter.api()
    assert answer["default_hdd"] == "local-lvm"
    assert_table_matches(page, answer)  # and the page now knows tank is gone
    assert "tank" not in options(page, "#hdd-select")


def test_without_a_token_loopback_saves_and_warnings_show(sim, tmp_path, page):
    env = {"PROXMOX_HDD_DATASTORE": "gone-ds"}  # a configured default the cluster does not have
    with ExporterProcess(sim.env(), tmp_path, extra_env=env) as e:
        page.goto(e.url + "/")
        answer = e.api()
        expect(page.locator("#token-panel")).to_have_count(0)
        expect(page.locator("#warnings li")).to_have_text(answer["warnings"])
        assert "default HDD datastore 'gone-ds' does not exist in the cluster" in answer["warnings"]
        expect(page.locator("#hdd-select option:checked")).to_have_text("gone-ds (current; not an enabled datastore)")
        page.select_option("#ssd-select", "tank")
        with page.expect_request("**/api/datastores/default") as posted:
            page.click("#save-defaults")
        assert "authorization" not in posted.value.headers
        assert posted.value.post_data_json == {"ssd_datastore_id": "tank"}  # the missing HDD is not sent back
        expect(page.locator("#messages")).to_contain_text("Default datastores changed.")
        assert (e.api()["default_hdd"], e.api()["default_ssd"]) == ("gone-ds", "tank")


def test_a_broken_database_says_env_fallback(sim, tmp_path, page):
    (tmp_path / "db").mkdir()  # DATABASE_URL names a directory: SQLite cannot open it
    with ExporterProcess(sim.env(), tmp_path, extra_env={"DATABASE_URL": f"sqlite:///{tmp_path / 'db'}"}) as e:
        assert e.api()["source"] == "env"
        page.goto(e.url + "/")
        expect(page.locator("#status-source")).to_have_text(".env fallback (the database is unavailable)")
        expect(page.locator("#hdd-select")).to_have_value("local-lvm")


def test_a_phone_wide_screen_scrolls_only_the_table(exporter, sim, page):
    sim.cluster.set_usage("nas-backup", fraction=0.95)  # the usage cell's hidden "(critical)" text too
    refresh_behind_the_page(exporter)
    page.set_viewport_size({"width": 375, "height": 812})
    page.goto(exporter.url + "/")
    widths = page.evaluate("""() => ({doc: document.documentElement.scrollWidth, body: document.body.scrollWidth,
        view: window.innerWidth, wrap: document.querySelector('.table-wrap').scrollWidth,
        wrapView: document.querySelector('.table-wrap').clientWidth})""")
    assert widths["doc"] <= widths["view"] == 375 and widths["body"] <= 375, widths
    assert widths["wrap"] > widths["wrapView"], "the table scrolls inside its wrapper"
    for selector in ("#token-input", "#token-save", "#hdd-select", "#ssd-select", "#save-defaults", "#refresh"):
        control = page.locator(selector)
        expect(control).to_be_visible()
        box = control.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 375, (selector, box)
    enter_token(page)
    page.click("#refresh")
    expect(page.locator("#messages")).to_contain_text("Refreshed 5 datastores")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375


def test_static_files_are_served_from_the_package_and_revalidated(exporter):
    for name, kind in (("page.js", "javascript"), ("page.css", "text/css")):
        response = requests.get(f"{exporter.url}/static/{name}", timeout=10)
        assert response.status_code == 200 and kind in response.headers["Content-Type"]
        # An upgraded exporter must never run against a browser's stale copy.
        assert response.headers["Cache-Control"] == "no-cache" and response.headers["ETag"]
        again = requests.get(f"{exporter.url}/static/{name}", headers={"If-None-Match": response.headers["ETag"]}, timeout=10)
        assert again.status_code == 304



def test_polls_while_a_select_is_edited_are_304s_of_the_status_alone(exporter, page):
    page.clock.install()
    page.goto(exporter.url + "/")
    page.select_option("#hdd-select", "tank")  # chosen, not saved
    requests.post(exporter.url + "/api/datastores/default", json={"ssd_datastore_id": "tank"},
                  headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).raise_for_status()
    # The status part says its age, and its tag holds it: from 10 s on ("10 seconds ago") it moves each
    # second, and a poll across a second brings it again (200), as it should. A refresh now keeps it at
    # "just now" through the polls below; counted from the exporter's start, a slow machine took over 10 s.
    assert refresh_behind_the_page(exporter).ok
    # The version moved: the whole page, once, its selects left behind.
    next_poll(page, lambda response: response.url == exporter.url + "/")
    answered = []
    page.on("response", lambda response: answered.append((response.url.removeprefix(exporter.url), response.status)))
    for _ in range(2):
        next_poll(page, lambda response: "part=status" in response.url)
    assert answered == [("/?part=status", 304)] * 2, answered  # headers only, and never the page again
    expect(page.locator("#hdd-select")).to_have_value("tank")  # still the user's
    page.select_option("#hdd-select", "local-lvm")  # back to the default: the page's defaults may come in
    next_poll(page, lambda response: "part=status" in response.url)
    expect(page.locator("#ssd-select")).to_have_value("tank")  # from the last page, which the 304 says is current
    assert [url for url, _ in answered] == ["/?part=status"] * 3
