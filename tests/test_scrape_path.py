"""A plain `GET /metrics` answered in the listener's callback (issue 21): the same bytes as the ASGI path,
taken only when nothing but the exposition decides the answer, and in order behind a queued request."""

import base64
import dataclasses
import gzip
import socket
import threading
import time

import bcrypt
import pytest

from pve_datastore_exporter.http import webconfig
from pve_datastore_exporter.http.front import Front

from .factories import FakeReader, config, record
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


class SlowAnswers(Answers):
    """Answers read 64 KiB every 100 ms: ~0.65 MB/s."""

    def _more(self, what: str) -> None:
        time.sleep(0.1)
        data = self.sock.recv(64 * 1024)
        if not data:
            pytest.fail(f"closed {what} after {len(self.buffer)} bytes of this answer")
        self.buffer += data


def small_send_buffer(exporter, size: int = 16 * 1024) -> None:
    """Shrink the kernel's send buffer of the server's side of the one connection just accepted."""
    connections = exporter.server.server.server_state.connections
    deadline = time.monotonic() + 5
    while not connections and time.monotonic() < deadline:
        time.sleep(0.01)
    (gate,) = list(connections)
    gate.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


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


def test_a_client_that_pipelines_scrapes_and_never_reads_is_closed_not_buffered(exporter):
    closed_reasons = []
    exporter.server.count = closed_reasons.append  # the listener's early closings, by reason
    # Each answer the socket cannot take waits in the transport: once output waits, the scrapes queue
    # like any request and MAX_PIPELINE closes the connection (before: 104 kB of requests, 1.1 GB held).
    sent = 20_000
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a window that fills at once
        sock.settimeout(5)
        sock.connect(("127.0.0.1", exporter.server.port))
        try:  # in small writes: a read of over 64 KiB ending in a partial head is refused as too large
            for _ in range(sent // 50):
                sock.sendall(get(Accept_Encoding="identity") * 50)
        except OSError:
            pass  # the server stopped reading, or closed: both end the flood
        answers, data = 0, b""
        try:
            while chunk := sock.recv(1 << 20):
                data += chunk
                answers += data.count(b"HTTP/1.1 200 OK")
                data = data[-16:]
        except ConnectionResetError:
            pass
        except TimeoutError:
            pytest.fail(f"the connection was still open after {answers} answers to {sent} scrapes")
    assert answers < sent and closed_reasons == ["pipeline_too_deep"]


def test_a_request_pipelined_behind_a_scrape_is_not_cut_by_the_idle_timer(tmp_path, monkeypatch):
    monkeypatch.setattr("pve_datastore_exporter.http.listener.IDLE_TIMEOUT", 1)
    gate = threading.Event()
    e = Exporter(config(tmp_path), FakeReader(gate=gate))
    try:
        with socket.create_connection(("127.0.0.1", e.server.port), timeout=15) as sock:
            sock.sendall(get() + b"POST /api/datastores/refresh HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
            answers = Answers(sock)
            assert answers.next()[0].endswith("200 OK")  # the scrape, answered at once
            threading.Timer(2.5, gate.set).start()  # the refresh takes longer than the idle timeout
            status, _, body = answers.next()
        assert status.endswith("200 OK") and b'"success":true' in body, body
        with socket.create_connection(("127.0.0.1", e.server.port), timeout=15) as sock:
            sock.sendall(get())
            assert Answers(sock).next()[0].endswith("200 OK")
            started = time.monotonic()
            assert sock.recv(1) == b""  # the scrape's answer armed the idle timer: closed after it
            assert time.monotonic() - started < 10
    finally:
        gate.set()
        e.close()


def test_a_body_after_a_scrape_reaches_the_app_and_http_1_0_keep_alive_takes_the_asgi_path(exporter):
    post = b"POST /api/datastores/refresh HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}"
    with socket.create_connection(("127.0.0.1", exporter.server.port), timeout=10) as sock:
        answers = Answers(sock)
        sock.sendall(get())
        assert answers.next()[0].endswith("200 OK") and CountingFront.asgi_calls == 0
        sock.sendall(post)  # its body must reach the app: the scrape's state ended with its message
        status, _, body = answers.next()
        assert status.endswith("200 OK") and b'"success":true' in body, body
    # HTTP/1.0 may ask to keep the connection; uvicorn closes it (its answer says so): the ASGI path.
    ((status, headers, body),) = ask(exporter.server.port, get(version="1.0", Connection="keep-alive"))
    assert headers["connection"] == "close" and b"\npve_datastore_size_bytes{" in body
    assert CountingFront.asgi_calls == 2


def test_the_first_of_two_accept_encoding_headers_decides_on_both_paths(exporter):
    twice = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\nAccept-Encoding: gzip\r\n\r\n"
    quick, slow = ask(exporter.server.port, twice, twice.replace(b"/metrics ", b"/metrics? "))
    assert "content-encoding" not in quick[1] and "content-encoding" not in slow[1]


def test_an_error_while_answering_a_scrape_is_the_fronts_500_not_a_parse_error(exporter, monkeypatch, caplog):
    def broken(use_gzip):
        raise RuntimeError("the exposition is broken")
    monkeypatch.setattr(exporter.server.front, "metrics_answer", broken)
    ((status, _, _),) = ask(exporter.server.port, get())
    assert status == "HTTP/1.1 500 Internal Server Error" and CountingFront.asgi_calls == 1
    assert "the exposition is broken" in caplog.text


def test_scrapes_pipelined_in_one_read_are_answered_at_once_only_up_to_the_pipeline_bound(exporter):
    # 40 in one write, never read: 8 answered from the callback, the rest queue and close the connection
    # (before: all 40 answered into the transport at once, 188 MB held at 5 MB each).
    closed_reasons = []
    exporter.server.count = closed_reasons.append
    with socket.socket() as sock:
        sock.settimeout(10)
        sock.connect(("127.0.0.1", exporter.server.port))
        sock.sendall(get(Accept_Encoding="identity") * 40)
        deadline = time.monotonic() + 10
        while not closed_reasons and time.monotonic() < deadline:
            time.sleep(0.05)
    assert closed_reasons == ["pipeline_too_deep"]


@pytest.mark.parametrize("encoding", ['"gzip"', '"*"', 'gzip,"', 'gzip,"deflate'])
def test_quoted_accept_encodings_are_read_by_werkzeug(exporter, encoding):
    fast, slow = ask(exporter.server.port, get(Accept_Encoding=encoding), get("/metrics?", Accept_Encoding=encoding))
    assert fast[1].get("content-encoding") == slow[1].get("content-encoding")
    assert CountingFront.asgi_calls == 2


def test_once_an_answer_waits_for_the_client_the_next_scrapes_wait_too(exporter):
    # One scrape per write, nothing read: once an answer waits in the listener's buffer, the next ones
    # queue behind it and MAX_PIPELINE closes the connection, instead of answer piling up on answer.
    closed_reasons = []
    exporter.server.count = closed_reasons.append
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(2)
        sock.connect(("127.0.0.1", exporter.server.port))
        try:
            for sent in range(1, 1001):  # noqa: B007 - read after the loop
                sock.sendall(get(Accept_Encoding="identity"))
                time.sleep(0.002)
        except OSError:
            pass
    assert closed_reasons == ["pipeline_too_deep"] and sent < 1000, (closed_reasons, sent)


def test_scrapes_pipelined_behind_a_large_answer_wait_for_it_and_a_slow_reader_gets_them_all(tmp_path):
    # Two plain scrapes of ~1 MB in one write, read at ~0.65 MB/s with a 0.5 s write timeout: the second
    # answer is written once the first has left (the ASGI path's queue), so the buffer shrinks while the
    # client reads; written at once, 2 MB would not shrink below the first's 1 MB in time: dropped.
    records = [record(f"ds{i:03d}", nodes=tuple(f"node{n:02d}" for n in range(40))) for i in range(60)]
    e = Exporter(config(tmp_path), FakeReader(records))
    try:
        e.service.refresh()
        e.server.limits = dataclasses.replace(e.server.limits, write_timeout=0.5)
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # the kernel holds little of it
            sock.settimeout(10)
            sock.connect(("127.0.0.1", e.server.port))
            small_send_buffer(e)  # and the server's kernel little: the answers wait in the listener
            sock.sendall(get(Accept_Encoding="identity") * 2)
            answers = SlowAnswers(sock)
            first, second = answers.next(), answers.next()
        assert len(first[2]) > 700_000 and len(second[2]) == len(first[2])
        assert first[2].endswith(b"\n") and second[2].endswith(b"\n")
    finally:
        e.close()
