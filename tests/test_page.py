"""The web page in a real browser (Debian's Chromium via Playwright) against a real exporter
process and the simulated cluster: the table is the API's data, the actions change what the API
and the DB hold, and failures leave the page truthful."""

from __future__ import annotations

import re
import sqlite3

import jinja2
import pytest
import requests

from pve_datastore_exporter.simulator import Simulator

from .browser import CHROMIUM, ExporterProcess, iec, launch_chromium, percent
from .tools import in_ci, require_tool

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
    with Simulator(nodes=3, datastores=6, seed=1, drift=False, state_dir=sim_state, auth_delay=0.1) as s:
        yield s


@pytest.fixture
def exporter(sim, tmp_path):
    with ExporterProcess(sim.env(), tmp_path, api_token=TOKEN) as e:
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


def level(used, size) -> str:
    if not size or used is None:
        return "unknown"
    return "critical" if used * 100 >= size * 90 else "high" if used * 100 >= size * 80 else "ok"


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
    local = answer["datastores"][1]
    assert nodes.locator("tbody tr").evaluate_all("rs => rs.map(r => r.dataset.node)") == [n["node"] for n in local["nodes"]]
    for n in local["nodes"]:
        cells = nodes.locator(f'tr[data-node="{n["node"]}"] td.num')
        assert cells.all_inner_texts() == [iec(n["size"]), iec(n["used"]), iec(n["available"])]
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
    assert_table_matches(page, answer)  # re-rendered by page.js from the API
    page.reload()
    assert_table_matches(page, answer)  # rendered by the template
    expect(page.locator("#token-set")).to_be_visible()  # asked once per tab...
    assert page.evaluate("sessionStorage.getItem('pve-datastore-exporter.api-token')") == TOKEN
    assert page.context.cookies() == [] and TOKEN not in page.url  # ...and kept nowhere else


def test_refresh_shows_the_new_figures(exporter, sim, page):
    page.goto(exporter.url + "/")
    before = exporter.api()
    sim.cluster.set_usage("local-lvm", fraction=0.95)
    sim.cluster.set_usage("tank", fraction=0.85)
    enter_token(page)
    page.click("#refresh")
    expect(page.locator("#messages")).to_have_text("Refreshed 5 datastores from Proxmox.")
    after = exporter.api()
    assert after["datastores"] != before["datastores"]
    assert_table_matches(page, after)
    expect(page.locator('tr.ds[data-id="local-lvm"] .usage')).to_have_class("usage usage-critical")
    expect(page.locator('tr.ds[data-id="tank"] .usage')).to_have_class("usage usage-high")
    expect(page.locator("#status-age")).to_have_text(re.compile(r"just now|\d+ seconds? ago"))


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
    refreshed = requests.post(exporter.url + "/api/datastores/refresh", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
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
    requests.post(exporter.url + "/api/datastores/refresh", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
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


SIZES = [None, 0, 1, 1023, 1024, 1536, 1_048_575, 9 * GIB // 8, 1_073_741_824 * 1000 - 1, 5 * (1 << 40) + 1, 2**53 - 1]
USAGE = [(None, 100), (5, 0), (0, 10), (1, 3), (1, 8), (3, 8), (79, 100), (80, 100), (899, 1000), (9, 10), (10, 10)]
AGES = [None, 0, 9.99, 10, 59.9, 60, 61, 3599, 3600, 7200, 86399, 86400, 3 * 86400]


def ago(seconds) -> str:
    if seconds is None:
        return "never"
    s = int(seconds)
    if s < 10:
        return "just now"
    n, unit = next((s // d, u) for limit, d, u in ((60, 1, "second"), (3600, 60, "minute"), (86400, 3600, "hour"),
                                                     (float("inf"), 86400, "day")) if s < limit)
    return f"{n} {unit}{'' if n == 1 else 's'} ago"


def template_macros():
    """The template's macros, callable from Python."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("pve_datastore_exporter", "templates"), autoescape=True)
    env.globals["url_for"] = lambda *args, **kw: ""
    answer = {"datastores": [], "default_hdd": None, "default_ssd": None, "source": "db", "warnings": [],
              "last_refresh": {"ok": None, "age_seconds": None, "error": None, "last_success": None}}
    return env.get_template("index.html").make_module({"answer": answer, "token_required": False})


def test_the_template_and_page_js_format_alike(exporter, page):
    page.goto(exporter.url + "/")
    js = page.evaluate("""([sizes, usage, ages]) => ({
        iec: sizes.map(v => datastorePage.iec(v)),
        percent: usage.map(([u, s]) => datastorePage.percent(u, s)),
        level: usage.map(([u, s]) => datastorePage.level(u, s)),
        ago: ages.map(a => datastorePage.ago(a))})""", [SIZES, USAGE, AGES])
    macros = template_macros()
    expected = {"iec": [iec(v) for v in SIZES], "percent": [percent(u, s) for u, s in USAGE],
                "level": [level(u, s) for u, s in USAGE], "ago": [ago(a) for a in AGES]}
    assert js == expected
    assert {"iec": [str(macros.iec(v)) for v in SIZES], "percent": [str(macros.percent(u, s)) for u, s in USAGE],
            "level": [str(macros.level(u, s)) for u, s in USAGE], "ago": [str(macros.ago(a)) for a in AGES]} == expected
    assert expected["iec"][7] == "1.13 GiB" and expected["percent"][4] == "12.5 %"  # halves round up
    assert expected["level"][6:10] == ["ok", "high", "high", "critical"]  # 80 % and 90 % are the marks
