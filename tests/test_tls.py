"""TLS and basic auth the Prometheus way (issue 11): a real `serve` with a web config, over HTTPS on
loopback, against a throw-away CA; a real Prometheus scraping it; testssl.sh against the listener."""

import base64
import json
import os
import socket
import ssl
import subprocess

import bcrypt
import pytest
import requests

from pve_datastore_exporter.simulator import Simulator
from tools.certs import PrivateCA
from tools.processes import ExporterProcess
from tools.stack import Prometheus, wait_for

from .needs import require_tool

pytestmark = pytest.mark.slow

SCRAPER, WRITER = ("prometheus", "scrape-Pw-1"), ("admin", "write-Pw-2")


@pytest.fixture(scope="module")
def ca():
    return PrivateCA()


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    s = Simulator(nodes=2, datastores=3, random_seed=3, state_dir=str(tmp_path_factory.mktemp("sim")),
                  auth_delay=0.0, drift=False)
    s.start()
    yield s
    s.stop()


def issue(ca, folder, name="server", organisation="pvedx tests"):
    ca.issue(folder / f"{name}.crt", folder / f"{name}.key", organisation)


def web_config(folder, ca, extra_tls: str = "") -> str:
    issue(ca, folder)
    ca.write_ca(folder / "ca.crt")
    users = "\n".join(f"  {user}: {bcrypt.hashpw(pw.encode(), bcrypt.gensalt(4)).decode()}"
                      for user, pw in (SCRAPER, WRITER))
    path = folder / "web.yml"
    path.write_text(f"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{extra_tls}"
                    f"http_server_config:\n  headers:\n    Strict-Transport-Security: max-age=31536000\n"
                    f"basic_auth_users:\n{users}\n")
    return str(path)


@pytest.fixture
def exporter(tmp_path, sim, ca):
    config = web_config(tmp_path, ca)
    e = ExporterProcess(tmp_path, {**sim.env(), "EXPORTER_WEB_CONFIG_FILE": config, "EXPORTER_WRITE_USERS": "admin",
                                   "EXPORTER_API_TOKEN": "unused-token-0123456789"},
                        ca=str(tmp_path / "ca.crt"), auth=SCRAPER)
    e.start()
    assert e.get("/api/datastores").json()["datastores"]  # the first fetch: figures from here on
    yield e
    e.stop()
    assert "scrape-Pw-1" not in e.logs() and "write-Pw-2" not in e.logs()


def served_certificate(port: int, ca_file: str) -> dict:
    context = ssl.create_default_context(cafile=ca_file)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        return tls.getpeercert()


def test_https_with_the_right_user_and_401_otherwise(exporter):
    assert exporter.get("/api/datastores").json()["success"]
    metrics = exporter.get("/metrics")
    assert metrics.status_code == 200 and b"pve_datastore_up 1" in metrics.content
    assert metrics.headers["Strict-Transport-Security"] == "max-age=31536000"
    for auth in (None, ("prometheus", "wrong"), ("nobody", "scrape-Pw-1")):
        answer = exporter.get("/metrics", auth=auth)
        assert answer.status_code == 401 and answer.headers["WWW-Authenticate"].startswith("Basic realm=")
        assert answer.json()["error"] == "unauthorized"
    assert exporter.get("/", auth=None).status_code == 401  # every route, the page included


def test_plain_http_on_the_tls_port_gets_nothing_useful(exporter):
    try:
        answer = requests.get(f"http://127.0.0.1:{exporter.port}/metrics", auth=SCRAPER, timeout=5)
    except requests.ConnectionError:
        return  # refused outright
    assert answer.status_code >= 400 and b"pve_datastore" not in answer.content


def test_a_scraper_may_read_but_only_a_writer_may_change(exporter):
    refused = exporter.post("/api/datastores/default", json={"hdd_datastore_id": "local"})
    assert refused.status_code == 403 and "EXPORTER_WRITE_USERS" in refused.json()["message"]
    bearer = exporter.post("/api/datastores/default", json={"hdd_datastore_id": "local"}, auth=None,
                           headers={"Authorization": "Bearer unused-token-0123456789"})
    assert bearer.status_code == 401  # the token alone is no credential while basic auth is on
    done = exporter.post("/api/datastores/default", json={"hdd_datastore_id": "local"}, auth=WRITER)
    assert done.status_code == 200 and done.json()["hdd_datastore"] == "local"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_before_1_2_is_refused(exporter, version):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_ciphers("ALL:@SECLEVEL=0")  # let the client offer it at all
    context.minimum_version = context.maximum_version = version
    with socket.create_connection(("127.0.0.1", exporter.port), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            context.wrap_socket(raw).do_handshake()


def test_a_body_of_10_mb_is_413_in_the_envelope_without_being_read(exporter):
    context = ssl.create_default_context(cafile=exporter.verify)
    with socket.create_connection(("127.0.0.1", exporter.port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        credentials = "Basic " + base64.b64encode(f"{WRITER[0]}:{WRITER[1]}".encode()).decode()
        tls.sendall(b"POST /api/datastores/default HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                    b"Authorization: " + credentials.encode() + b"\r\nContent-Length: 10485760\r\n\r\n" + b"{" * 65536)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = tls.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert json.loads(body)["error"] == "payload_too_large"


def test_a_renewed_certificate_is_served_without_a_restart(exporter, ca, tmp_path):
    ca_file = exporter.verify
    before = served_certificate(exporter.port, ca_file)
    session = requests.Session()
    assert session.get(exporter.url + "/metrics", verify=ca_file, auth=SCRAPER).ok  # kept alive across
    issue(ca, tmp_path, "next", organisation="renewed")
    for part in ("key", "crt"):
        os.replace(tmp_path / f"next.{part}", tmp_path / f"server.{part}")  # as certbot: replaced in place
    wait_for("the renewed certificate", lambda: served_certificate(exporter.port, ca_file) != before, timeout=10)
    assert (("organizationName", "renewed"),) in served_certificate(exporter.port, ca_file)["subject"]
    assert session.get(exporter.url + "/metrics", verify=ca_file, auth=SCRAPER).ok
    assert exporter.proc.poll() is None and "reloaded: TLS" in exporter.logs()


def test_mutual_tls_requires_a_client_certificate_from_the_ca(tmp_path, sim, ca):
    config = web_config(tmp_path, ca, "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n")
    issue(ca, tmp_path, "client")
    issue(PrivateCA(), tmp_path, "stranger")
    pair = {name: (str(tmp_path / f"{name}.crt"), str(tmp_path / f"{name}.key")) for name in ("client", "stranger")}
    with ExporterProcess(tmp_path, {**sim.env(), "EXPORTER_WEB_CONFIG_FILE": config},
                         ca=str(tmp_path / "ca.crt"), auth=SCRAPER, cert=pair["client"]) as e:
        assert e.get("/metrics").status_code == 200
        for cert in (None, pair["stranger"]):
            # TLS 1.3: the refusal arrives after the handshake, as an alert or a closed connection.
            with pytest.raises(requests.exceptions.ConnectionError):
                e.get("/metrics", cert=cert)


def test_prometheus_scrapes_over_tls_with_basic_auth(exporter, tmp_path):
    require_tool("prometheus")
    extra = ("    scheme: https\n"
             f"    tls_config: {{ca_file: '{exporter.verify}', server_name: localhost}}\n"
             f"    basic_auth: {{username: {SCRAPER[0]}, password: {SCRAPER[1]}}}\n")
    (tmp_path / "prom").mkdir()
    prometheus = Prometheus(tmp_path / "prom", f"localhost:{exporter.port}", scrape_extra=extra)
    try:
        wait_for("up == 1 over TLS", lambda: prometheus.query('up{job="pve-datastore"} == 1'), timeout=30)
        assert prometheus.query("pve_datastore_up == 1")
    finally:
        prometheus.stop()


def test_testssl_finds_nothing_high_or_critical(exporter, tmp_path):
    require_tool("testssl")
    report = tmp_path / "testssl.json"
    # Protocols, server defaults (the certificate included), vulnerabilities, ciphers per protocol.
    done = subprocess.run(["testssl", "--quiet", "--warnings", "off", "--color", "0", "--jsonfile", str(report),
                           "--add-ca", exporter.verify, "-p", "-S", "-U", "-E", f"127.0.0.1:{exporter.port}"],
                          capture_output=True, text=True, timeout=600)
    findings = json.loads(report.read_text())
    assert any(f["id"] == "TLS1_3" and f["finding"] == "offered with final" for f in findings), done.stdout[-2000:]
    assert any(f["id"] == "TLS1_1" and f["finding"] == "not offered" for f in findings)
    bad = [(f["id"], f["severity"], f["finding"]) for f in findings if f.get("severity") in ("HIGH", "CRITICAL")]
    assert not bad, bad


def test_the_page_over_https_with_basic_auth_changes_a_default_as_a_writer(exporter):
    playwright_api = pytest.importorskip("playwright.sync_api")
    from tools.browser import CHROMIUM, launch_chromium

    require_tool(CHROMIUM)
    with playwright_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            for (user, password), allowed in ((SCRAPER, False), (WRITER, True)):
                context = browser.new_context(ignore_https_errors=True,
                                              http_credentials={"username": user, "password": password,
                                                                "send": "always"})
                page = context.new_page()
                page.goto(exporter.url + "/")
                assert page.locator("#token-input").count() == 0  # basic auth: no token to type
                choices = page.eval_on_selector_all("#hdd-select option", "os => os.map(o => o.value)")
                current = page.input_value("#hdd-select")
                chosen = next(c for c in choices if c and c != current)
                page.select_option("#hdd-select", chosen)
                with page.expect_response("**/api/datastores/default") as posted:
                    page.click("#save-defaults")
                assert posted.value.status == (200 if allowed else 403)
                expected = "Default datastores changed." if allowed else "EXPORTER_WRITE_USERS"
                playwright_api.expect(page.locator("#messages")).to_contain_text(expected)
                context.close()
                assert (exporter.api()["default_hdd"] == chosen) is allowed
        finally:
            browser.close()
