"""The web configuration file: exporter-toolkit's keys, one-line errors, basic auth, headers, rate limit."""

import asyncio
import base64
import json
import ssl

import bcrypt
import pytest

from pve_datastore_exporter.answers import error_body
from pve_datastore_exporter.config import ConfigError
from pve_datastore_exporter.http import webconfig
from pve_datastore_exporter.http.front import Front
from pve_datastore_exporter.http.guard import BasicAuth, TokenBucket
from pve_datastore_exporter.http.tls import CertificateWatcher, server_context
from tools.certs import PrivateCA

HASH = bcrypt.hashpw(b"scrape-pw", bcrypt.gensalt(4)).decode()


@pytest.fixture(scope="module")
def ca():
    return PrivateCA()


@pytest.fixture
def pem(tmp_path, ca):
    ca.issue(tmp_path / "server.crt", tmp_path / "server.key")
    ca.write_ca(tmp_path / "ca.crt")
    return tmp_path


def write(tmp_path, text: str) -> str:
    path = tmp_path / "web.yml"
    path.write_text(text)
    return str(path)


def test_the_documented_example_loads_with_files_relative_to_the_config(pem):
    web = webconfig.load(write(pem, f"""
tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.crt
  min_version: TLS13
  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
  curve_preferences: [CurveP384, X25519]
http_server_config:
  headers:
    Strict-Transport-Security: max-age=31536000
    X-Frame-Options: sameorigin
basic_auth_users:
  alice: {HASH}
rate_limit:
  interval: 200ms
  burst: 20
"""))
    assert web.tls.cert_file == str(pem / "server.crt") and web.tls.ca_file == str(pem / "ca.crt")
    assert web.tls.verify_mode == ssl.CERT_REQUIRED and web.tls.min_version == ssl.TLSVersion.TLSv1_3
    assert web.tls.ciphers == "ECDHE-RSA-AES128-GCM-SHA256" and web.tls.curve == "secp384r1"
    assert web.users == {"alice": HASH.encode()} and web.rate_limit == (0.2, 20)
    assert dict(web.headers) == {"Strict-Transport-Security": "max-age=31536000", "X-Frame-Options": "sameorigin"}
    assert "TLS TLSv1_3..TLSv1_3, client certificates required, basic auth for 1 user(s)" in web.summary()
    context = server_context(web.tls)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3 and context.verify_mode == ssl.CERT_REQUIRED


def test_defaults_are_tls12_and_no_client_certificate(pem):
    web = webconfig.load(write(pem, "tls_server_config: {cert_file: server.crt, key_file: server.key}\n"))
    assert web.tls.min_version == ssl.TLSVersion.TLSv1_2 and web.tls.verify_mode == ssl.CERT_NONE
    assert web.users == {} and web.headers == () and web.rate_limit is None


@pytest.mark.parametrize("text,expected", [
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, colour: red}\n",
     "unknown key 'colour' in tls_server_config"),
    ("basic_auth_user: {}\n", "unknown key 'basic_auth_user'"),
    ("basic_auth_users: {alice: secret}\n", "basic_auth_users.alice: not a bcrypt hash"),
    ("tls_server_config: {cert_file: nope.crt, key_file: server.key}\n", "cert_file: "),
    ("tls_server_config: {key_file: server.key}\n", "needs cert_file"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, min_version: TLS14}\n",
     "min_version 'TLS14' is not one of"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, min_version: TLS13, max_version: TLS12}\n",
     "min_version is above max_version"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, client_auth_type: RequireAnyClientCert}\n",
     "RequireAnyClientCert is not supported"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, client_auth_type: RequireAndVerifyClientCert}\n",
     "needs client_ca_file"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, cipher_suites: [RC4]}\n", "unknown suite 'RC4'"),
    ("http_server_config: {headers: {X-Frame-Options: allow}}\n", "X-Frame-Options: invalid value 'allow'"),
    ("http_server_config: {headers: {Server: me}}\n", "unknown header 'Server'"),
    ("rate_limit: {interval: soon, burst: 2}\n", "rate_limit.interval 'soon'"),
    ("tls_server_config: [1, 2]\n", "tls_server_config must be a mapping"),
    ("key: [unclosed\n", "not YAML"),
])
def test_a_wrong_file_stops_start_up_with_one_line_naming_it(pem, text, expected):
    path = write(pem, text)
    with pytest.raises(ConfigError) as info:
        webconfig.load(path)
    message = str(info.value)
    assert message.startswith(f"web config {path}: ") and expected in message and "\n" not in message


def test_a_missing_or_unreadable_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"web config .*/missing.yml: cannot read it \(No such file"):
        webconfig.load(str(tmp_path / "missing.yml"))


def test_inline_pem_is_accepted(pem):
    cert, key = (pem / "server.crt").read_text(), (pem / "server.key").read_text()
    indent = lambda text: "\n".join("    " + line for line in text.splitlines())  # noqa: E731
    web = webconfig.load(write(pem, f"tls_server_config:\n  cert: |\n{indent(cert)}\n  key: |\n{indent(key)}\n"))
    assert open(web.tls.cert_file).read() == cert
    server_context(web.tls)  # loads


def basic(user: bytes, password: bytes) -> str:
    return "Basic " + base64.b64encode(user + b":" + password).decode()


def test_basic_auth_verifies_once_then_remembers_and_refuses_the_rest():
    auth = BasicAuth({"alice": HASH.encode()})
    assert auth.user(basic(b"alice", b"scrape-pw")) == "alice"
    assert auth._verified["alice"]  # remembered as a digest, not the password
    assert b"scrape-pw" not in auth._verified["alice"]
    for header in (basic(b"alice", b"wrong"), basic(b"bob", b"scrape-pw"), "Bearer x", "Basic !!!", "Basic " +
                   base64.b64encode(b"no-colon").decode(), ""):
        assert auth.user(header) is None, header
    assert auth.user(basic(b"alice", b"scrape-pw")) == "alice"
    auth.users = {"alice": bcrypt.hashpw(b"new-pw", bcrypt.gensalt(4))}  # the password changed
    assert auth.user(basic(b"alice", b"new-pw")) == "alice"


def test_the_token_bucket_allows_a_burst_then_one_per_interval():
    now = [0.0]
    bucket = TokenBucket(1.0, 3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] = 1.0
    assert bucket.take() and not bucket.take()


def call(app, headers=()):
    """One ASGI request to `app`: (status, headers, body, scope)."""
    scope = {"type": "http", "method": "GET", "path": "/api/datastores", "headers": list(headers)}
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)
    asyncio.run(app(scope, receive, send))
    start = sent[0]
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:]), scope


async def inner(scope, receive, send):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"x-frame-options", b"DENY")]})
    await send({"type": "http.response.body", "body": b"ok"})


def test_the_front_asks_for_a_user_on_every_route_and_sets_the_configured_headers():
    web = webconfig.WebConfig(path="x", users={"alice": HASH.encode()},
                              headers=(("X-Frame-Options", "sameorigin"), ("Strict-Transport-Security", "max-age=1")))
    front = Front(inner, exposition=None, web_config=web)
    status, headers, body, _ = call(front)
    assert status == 401 and headers[b"www-authenticate"].startswith(b"Basic realm=")
    assert body.startswith(b'{"success":false,"error":"unauthorized","message":') and body.endswith(b'}\n')  # as the app's
    status, headers, body, scope = call(front, [(b"authorization", basic(b"alice", b"scrape-pw").encode())])
    assert status == 200 and body == b"ok" and scope["pvedx.user"] == "alice"
    assert headers[b"x-frame-options"] == b"sameorigin" and headers[b"strict-transport-security"] == b"max-age=1"
    status, _, _, scope = call(front, [(b"authorization", basic(b"alice", b"nope").encode())])
    assert status == 401 and "pvedx.user" not in scope


def test_the_rate_limit_answers_429_in_the_envelope():
    front = Front(inner, exposition=None, web_config=webconfig.WebConfig(path="x", rate_limit=(60.0, 2)))
    statuses = [call(front)[0] for _ in range(3)]
    assert statuses == [200, 200, 429]


KO = [(b"accept-language", b"ko-KR,ko;q=0.9,en;q=0.8")]


def test_the_fronts_refusals_are_the_one_envelope_in_the_clients_language():
    guarded = Front(inner, exposition=None, web_config=webconfig.WebConfig(path="x", users={"alice": HASH.encode()}))
    limited = Front(inner, exposition=None, web_config=webconfig.WebConfig(path="x", rate_limit=(60.0, 1)))
    call(limited)
    for front, status, code, english, korean in (
            (guarded, 401, "unauthorized", "Basic authentication with a user of the web config is required.",
             "web config에 등록된 사용자의 Basic 인증이 필요합니다."),
            (limited, 429, "too_many_requests", "Too many requests (rate_limit in the web config); retry later.",
             "요청이 너무 많습니다 (web config의 rate_limit). 잠시 뒤에 다시 시도하세요.")):
        got, headers, body, _ = call(front)
        assert (got, json.loads(body)) == (status, error_body(code, english))
        assert headers[b"content-language"] == b"en" and headers[b"vary"] == b"Accept-Language"
        got, headers, body, _ = call(front, KO)
        assert (got, json.loads(body)) == (status, error_body(code, korean)) and headers[b"content-language"] == b"ko"


def test_a_renewed_certificate_is_loaded_into_the_same_context_and_a_broken_one_is_not(pem, ca):
    web = webconfig.load(write(pem, "tls_server_config: {cert_file: server.crt, key_file: server.key}\n"))
    context = server_context(web.tls)
    watcher = CertificateWatcher(context, web.tls)
    assert not watcher.check()
    (pem / "server.crt").write_text("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    assert not watcher.check() and watcher.reloads == 0  # half-written: the old pair stays
    ca.issue(pem / "server.crt", pem / "server.key", "renewed")
    assert watcher.check() and watcher.reloads == 1
