"""Conditional GETs over real HTTP: an ETag on the API's reads, the page and its status part, 304 for If-None-Match."""

import gzip

import pytest

from .factories import FakeReader, config
from .servers import Exporter

READS = ["/api/datastores", "/api/datastores/default", "/", "/?part=status"]


class Clock:
    """A settable time.time for the service: the data's age is what the status part says."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def exporter(tmp_path, clock):
    e = Exporter(config(tmp_path), FakeReader(), clock=clock)
    e.service.refresh()
    yield e
    e.close()


def again(exporter, path, tag, **headers):
    return exporter.get(path, headers={"If-None-Match": tag, **headers})


@pytest.mark.parametrize("path", READS)
def test_an_unchanged_read_is_304_without_a_body(exporter, path):
    first = exporter.get(path)
    tag = first.headers["ETag"]
    assert first.status_code == 200 and tag.startswith('W/"') and first.content
    unchanged = again(exporter, path, tag)
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert unchanged.headers["ETag"] == tag
    assert again(exporter, path, f'"other", {tag}').status_code == 304  # a list of tags, as browsers send
    assert again(exporter, path, '"other"').status_code == 200


@pytest.mark.parametrize("path", READS)
def test_a_default_change_or_a_refresh_changes_every_tag(exporter, path):
    tag = exporter.get(path).headers["ETag"]
    chosen = {"hdd_datastore_id": "ceph-vm", "ssd_datastore_id": "local"}
    assert exporter.post("/api/datastores/default", json=chosen).json()["changed"] is True
    changed = again(exporter, path, tag)
    assert changed.status_code == 200 and changed.headers["ETag"] != tag
    tag = changed.headers["ETag"]
    exporter.service.refresh()  # the same figures from the fake reader, a new refresh all the same
    refreshed = again(exporter, path, tag)
    assert refreshed.status_code == 200 and refreshed.headers["ETag"] != tag


@pytest.mark.parametrize("path", READS)
def test_the_tag_depends_on_the_language(exporter, path):
    english = exporter.get(path).headers["ETag"]
    korean = again(exporter, path, english, **{"Accept-Language": "ko"})
    assert korean.status_code == 200 and korean.headers["ETag"] != english


def test_the_status_part_is_new_when_its_age_reads_otherwise_and_the_page_is_not(exporter, clock):
    clock.now += 20
    status, page = exporter.get("/?part=status"), exporter.get("/")
    assert "20 seconds ago" in status.text
    clock.now += 0.4  # still "20 seconds ago"
    assert again(exporter, "/?part=status", status.headers["ETag"]).status_code == 304
    clock.now += 40  # "1 minute ago"
    aged = again(exporter, "/?part=status", status.headers["ETag"])
    assert aged.status_code == 200 and "1 minute ago" in aged.text
    assert again(exporter, "/", page.headers["ETag"]).status_code == 304  # page.js keeps its age from the status


def test_a_304_keeps_the_headers_of_its_answer(exporter):
    tag = exporter.get("/").headers["ETag"]
    unchanged = again(exporter, "/", tag)
    assert unchanged.status_code == 304
    assert unchanged.headers["Cache-Control"] == "no-store" and "Cookie" in unchanged.headers["Vary"]
    assert unchanged.headers["X-Frame-Options"] == "DENY" and "Accept-Encoding" in unchanged.headers["Vary"]


@pytest.mark.parametrize("path", ["/api/datastores", "/"])
def test_the_page_and_the_api_are_gzipped_for_clients_that_ask(exporter, path):
    zipped = exporter.get(path, headers={"Accept-Encoding": "gzip"}, stream=True)
    raw = zipped.raw.read(decode_content=False)
    plain = exporter.get(path, headers={"Accept-Encoding": "identity"})
    assert zipped.headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in zipped.headers["Vary"]
    assert gzip.decompress(raw) == plain.content and len(raw) < len(plain.content)
    assert "Content-Encoding" not in plain.headers and "Accept-Encoding" in plain.headers["Vary"]
    assert zipped.headers["ETag"] == plain.headers["ETag"]  # weak: the same data in either coding
