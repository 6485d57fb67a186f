"""The ASGI front of every request: the web config's rate limit, basic auth and headers, then
`/metrics` from the cached bytes in the event loop, everything else to the Flask app's threads.

A scrape therefore never queues behind requests that wait (a refresh, a slow database) in the pool.
"""

from __future__ import annotations

import asyncio

from werkzeug.http import parse_accept_header

from .. import i18n
from ..answers import N_, encoded, error_body
from ..metrics import CONTENT_TYPE, Exposition
from . import SECURITY_HEADERS as HEADERS
from .guard import REALM, BasicAuth, TokenBucket
from .webconfig import WebConfig

# The app's own security headers (http/__init__.py), as ASGI wants them: one declaration for both paths.
SECURITY_HEADERS = tuple((name.lower().encode(), value.encode()) for name, value in HEADERS)
ONE_WRITE = 64 * 1024  # bytes: a body up to this size is joined (a copy) rather than written in parts
TOO_MANY = N_("Too many requests (rate_limit in the web config); retry later.")
UNAUTHENTICATED = N_("Basic authentication with a user of the web config is required.")


def _header(scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return ""


async def _error(scope, send, status: int, code: str, message: str, extra=()) -> None:
    """The one error envelope (answers.error_body), its sentence in the client's language as the app's are."""
    language = i18n.negotiate(_header(scope, b"accept-language"))
    body = encoded(error_body(code, i18n.translate(language, message)))
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"), (b"content-language", language.encode()), (b"vary", b"Accept-Language"),
        *SECURITY_HEADERS, *extra]})
    await send({"type": "http.response.body", "body": body})


class Front:
    """ASGI app: guard, then /metrics here, the rest to `app` (the Flask app behind a2wsgi)."""

    def __init__(self, app, exposition: Exposition, web_config: WebConfig | None = None):
        self.app, self.exposition = app, exposition
        web_config = web_config or WebConfig(path="")
        self.auth = BasicAuth(web_config.users) if web_config.users else None
        self.bucket = TokenBucket(*web_config.rate_limit) if web_config.rate_limit else None
        self.extra = [(name.lower().encode(), value.encode()) for name, value in web_config.headers]
        self._replaced = {name for name, _ in self.extra}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        if self.extra:
            send = self._with_headers(send)
        if self.bucket and not self.bucket.take():
            return await _error(scope, send, 429, "too_many_requests", TOO_MANY, [(b"retry-after", b"1")])
        if self.auth and not await self._authenticated(scope):
            return await _error(scope, send, 401, "unauthorized", UNAUTHENTICATED,
                                [(b"www-authenticate", REALM.encode())])
        if scope["path"] == "/metrics" and scope["method"] in ("GET", "HEAD"):
            return await self._metrics(scope, send)
        await self.app(scope, receive, send)

    async def _authenticated(self, scope) -> bool:
        header = _header(scope, b"authorization")
        user = self.auth.remembered(header)
        if user is None:
            # bcrypt takes ~70 ms: never in the event loop, which serves every other client meanwhile.
            user = await asyncio.get_running_loop().run_in_executor(None, self.auth.user, header)
        if user is None:
            return False
        scope["pvedx.user"] = user  # a scope key no client can send; the app's policy reads it
        return True

    async def _metrics(self, scope, send) -> None:
        use_gzip = parse_accept_header(_header(scope, b"accept-encoding")).quality("gzip") > 0
        chunks = self.exposition.scrape(use_gzip)  # sent as they are: a 2.6 MB body is never copied
        if sum(map(len, chunks)) <= ONE_WRITE:  # a small body as one write: one send() less per scrape
            chunks = [b"".join(chunks)]
        headers = [(b"content-type", CONTENT_TYPE.encode()), (b"vary", b"Accept-Encoding"),
                   (b"content-length", str(sum(map(len, chunks))).encode()), *SECURITY_HEADERS]
        if use_gzip:
            headers.append((b"content-encoding", b"gzip"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if scope["method"] == "HEAD":
            chunks = []
        for i, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1})
        if not chunks:
            await send({"type": "http.response.body", "body": b""})

    def _with_headers(self, send):
        async def sending(message):
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in self._replaced]
                message = {**message, "headers": kept + self.extra}
            await send(message)
        return sending


def with_user(app):
    """WSGI: the user the front authenticated, as REMOTE_USER (a2wsgi keeps the scope in the environ)."""
    def wsgi(environ, start_response):
        user = environ.get("asgi.scope", {}).get("pvedx.user")
        environ.pop("REMOTE_USER", None)
        if user is not None:
            environ["REMOTE_USER"], environ["pvedx.basic_auth"] = user, True
        return app(environ, start_response)
    return wsgi
