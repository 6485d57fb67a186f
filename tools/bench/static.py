"""The static-file baseline: one file's bytes with /metrics' headers, in the listener `serve` uses.

`python -m tools.bench.static --dir DIR --port PORT` serves DIR/metrics.gz to clients that accept
gzip and DIR/metrics.txt to the others, read from the file on every request as a file server would
(in a thread, as a WSGI file server does, so the event loop never waits on the disk).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pve_datastore_exporter.http.listener import HttpServer, listening_socket, wsgi_pool
from pve_datastore_exporter.metrics import CONTENT_TYPE

PLAIN, GZIP = "metrics.txt", "metrics.gz"


def make_app(directory: Path):
    """A WSGI app answering every GET with the file, headers as the exporter's front sends them."""
    plain, zipped = directory / PLAIN, directory / GZIP

    def app(environ, start_response):
        accepted = environ.get("HTTP_ACCEPT_ENCODING", "")
        use_gzip = "gzip" in accepted and "gzip;q=0" not in accepted.replace(" ", "")
        body = (zipped if use_gzip else plain).read_bytes()
        headers = [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(body))), ("Vary", "Accept-Encoding")]
        if use_gzip:
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [body]

    return app


def write(directory: Path, plain: bytes, zipped: bytes) -> None:
    """Put the two bodies where make_app reads them."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / PLAIN).write_bytes(plain)
    (directory / GZIP).write_bytes(zipped)


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM, in the listener and thread pool server.serve uses (8 threads)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    HttpServer(wsgi_pool(make_app(args.dir)), listening_socket("127.0.0.1", args.port)).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
