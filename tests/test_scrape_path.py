"""A plain `GET /metrics` answered in the listener's callback (issue 21): the same bytes as the ASGI path,
taken only when nothing but the exposition decides the answer, and in order behind a queued request."""

import base64
import gzip
import socket

import bcrypt
import pytest

from pve_datastore_exporter.http import webconfig
from pve_datastore_exporter.http.front import Front

from .factories import FakeReader, config
from .servers import Exporter

PASSWORD = "scrape-pw"
USERS = {"alice": bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4))}


class CountingFront(Front):
    """The front, counting the requests that reached it (the ASGI path)."""

    asgi_calls = 0

    async def __call__(self, scope, receive, send):
        type(self).asgi_calls += 1
        return await super().__call__(scope, receive, send)


@pytest.fixture
def exporter(tmp_path):
    e = Exporter(config(tmp_path), FakeReader())
    e.service.refresh()
    e.server.front.__class__ = CountingFront
    CountingFront.asgi_calls = 0
    yield e
    e.close()


class Answers:
    """HTTP/1.1 answers with a Content-Length read one by one from a socket (pipelined ones included)."""

    def __init__(self, sock: socket.socket):
        self.sock, self.buffer = sock, b""

    def _more(self, what: str) -> None:
        data = self.sock.recv(65536)
        if not data:
            pytest.fail(f"closed {what}: {self.buffer[:200]!r}")
        self.buffer += data

    def next(self) -> tuple[str, dict[str, str], bytes]:
        """Status line, headers (lower-case names), body."""
        while b"\r\n\r\n" not in self.buffer:
            self._more("before the head")
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines)}
        length = 0 if status.startswith("HTTP/1.1 200") and self.head_only else int(headers["content-length"])
        while len(self.buffer) < length:
            self._more("in the body")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    head_only = False


def ask(port: int, *requests: bytes) -> list[tuple[str, dict[str, str], bytes]]:
    """Send `requests` in one write on one connection; their answers, in order."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"".join(requests))
        answers = Answers(sock)
        answers.head_only = requests[0].startswith(b"HEAD")
        return [answers.next() for _ in requests]


def get(path: str = "/metrics", version: str = "1.1", **headers: str) -> bytes:
    lines = [f"GET {path} HTTP/{version}", "Host: x", *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def text(headers: dict[str, str], body: bytes) -> bytes:
    return gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body


def same_answer(quick, slow) -> None:
    """Equal headers but the date; equal exposition (the self-metrics part may have been re-rendered)."""
    (status, headers, body), (slow_status, slow_headers, slow_body) = quick, slow
    assert status == slow_status == "HTTP/1.1 200 OK"
    drop = ("date", "content-length")
    assert {k: v for k, v in headers.items() if k not in drop} == {k: v for k, v in slow_headers.items() if k not in drop}
    datastores = [line for line in text(headers, body).splitlines() if line.startswith(b"pve_datastore_size_bytes{")]
    assert datastores and datastores == [line for line in text(slow_headers, slow_body).splitlines()
                                         if line.startswith(b"pve_datastore_size_bytes{")]
    assert int(headers["content-length"]) == len(body)


@pytest.mark.parametrize("encoding", ["gzip", "GZIP", "br, gzip", "*", "identity", None])
def test_a_plain_scrape_is_answered_without_the_asgi_path_with_the_same_answer(exporter, encoding):
    headers = {"Accept_Encoding": encoding} if encoding is not None else {}
    quick, quick_again = ask(exporter.server.port, get(**headers), get(**headers))  # kept alive: both quick
    assert CountingFront.asgi_calls == 0
    (slow,) = ask(exporter.server.port, get("/metrics?", **headers))  # a query: the ASGI path
    assert CountingFront.asgi_calls == 1
    same_answer(quick, slow)
    same_answer(quick_again, slow)
    assert ("content-encoding" in quick[1]) == (encoding not in ("identity", None))


@pytest.mark.parametrize("request_bytes", [
    get(Accept_Encoding="gzip;q=0"),  # weights: werkzeug decides (here: no gzip)
    get(version="1.0"),
    get(Connection="close"),
    b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab",
])
def test_what_the_front_or_uvicorn_must_decide_takes_the_asgi_path(exporter, request_bytes):
    ((status, headers, body),) = ask(exporter.server.port, request_bytes)
    assert status.endswith("200 OK") and CountingFront.asgi_calls == 1
    assert "content-encoding" not in headers
    if request_bytes.startswith(b"HEAD"):
        assert body == b""
    else:
        assert b"\npve_datastore_size_bytes{" in body


def test_a_scrape_pipelined_behind_an_api_read_is_answered_after_it(exporter):
    first, second, third = ask(exporter.server.port, get("/api/datastores"), get(), get(Accept_Encoding="gzip"))
    assert first[1]["content-type"].startswith("application/json") and b'"success"' in first[2]
    assert second[1]["content-type"].startswith("text/plain") and b"\npve_datastore_size_bytes{" in second[2]
    assert third[1]["content-encoding"] == "gzip" and b"\npve_datastore_size_bytes{" in gzip.decompress(third[2])


def test_basic_auth_takes_the_quick_path_only_for_a_password_verified_before(exporter):
    exporter.server.front.configure(webconfig.WebConfig(path="x", users=USERS))
    good = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    bad = "Basic " + base64.b64encode(b"alice:wrong").decode()
    port = exporter.server.port
    assert ask(port, get())[0][0].endswith("401 Unauthorized")
    assert ask(port, get(Authorization=bad))[0][0].endswith("401 Unauthorized")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        answers = Answers(sock)
        sock.sendall(get(Authorization=good))
        first = answers.next()
        sock.sendall(get(Authorization=good))  # after the first answer: pipelined, it would queue behind bcrypt
        again = answers.next()
    assert first[0].endswith("200 OK") and again[0].endswith("200 OK")
    assert CountingFront.asgi_calls == 3  # the verified password's second scrape was answered at once
    assert ask(port, get(Authorization=bad))[0][0].endswith("401 Unauthorized")
    assert CountingFront.asgi_calls == 4


@pytest.mark.parametrize("web", [webconfig.WebConfig(path="x", rate_limit=(60.0, 2)),
                                 webconfig.WebConfig(path="x", headers=[("X-Frame-Options", "deny")])])
def test_a_rate_limit_or_configured_headers_keep_every_scrape_on_the_asgi_path(exporter, web):
    exporter.server.front.configure(web)
    answers = ask(exporter.server.port, get(), get(), get())
    assert CountingFront.asgi_calls == 3
    if web.rate_limit:
        assert [a[0].split(" ", 1)[1] for a in answers] == ["200 OK", "200 OK", "429 Too Many Requests"]
    else:
        assert all(a[1]["x-frame-options"] == "deny" for a in answers)
