"""The ASGI front of every request: the web config's rate limit, basic auth and headers, then
`/metrics` from the cached bytes in the event loop, everything else to the Flask app's threads.

A scrape therefore never queues behind requests that wait (a refresh, a slow database) in the pool.
"""

from __future__ import annotations

from typing import NamedTuple

from werkzeug.http import parse_accept_header

from .. import i18n
from ..answers import N_, encoded, error_body
from ..metrics import CONTENT_TYPE, Exposition
from . import SECURITY_HEADERS as HEADERS
from .clients import Buckets, Busy, Turns, client_key
from .guard import REALM, BasicAuth
from .webconfig import WebConfig

# The app's own security headers (http/__init__.py), as ASGI wants them: one declaration for both paths.
SECURITY_HEADERS = tuple((name.lower().encode(), value.encode()) for name, value in HEADERS)
ONE_WRITE = 64 * 1024  # bytes: a body up to this size is joined (a copy) rather than written in parts
TOO_MANY = N_("Too many requests (rate_limit in the web config); retry later.")
TOO_MANY_LOGINS = N_("Too many password checks from your address are waiting; retry later.")
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


class Rules(NamedTuple):
    """What the web config asks of every request, swapped as one when the file is re-read."""

    auth: BasicAuth | None
    buckets: Buckets | None
    extra: list  # the configured headers, as ASGI wants them
    replaced: frozenset  # their names: the app's own values of these are dropped

    @classmethod
    def of(cls, web_config: WebConfig, before: Rules | None = None) -> Rules:
        """The rules of `web_config`; `before`'s remembered passwords kept where the hash is the same."""
        auth = BasicAuth(web_config.users, remembered_from=before.auth if before else None) if web_config.users else None
        extra = [(name.lower().encode(), value.encode()) for name, value in web_config.headers]
        return cls(auth, Buckets(*web_config.rate_limit) if web_config.rate_limit else None, extra,
                   frozenset(name for name, _ in extra))


class Front:
    """ASGI app: guard, then /metrics here, the rest to `app` (the Flask app behind a2wsgi)."""

    def __init__(self, app, exposition: Exposition, web_config: WebConfig | None = None, turns: Turns | None = None):
        self.app, self.exposition = app, exposition
        self.rules = Rules.of(web_config or WebConfig(path=""))
        # bcrypt (~70 ms of CPU) in turns per client: a crowd of wrong passwords never starves a first login.
        self.turns = turns or Turns()

    def configure(self, web_config: WebConfig) -> None:
        """Apply a re-read web config: users, rate limit and headers change for the next request at once."""
        self.rules = Rules.of(web_config, self.rules)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        rules = self.rules  # one web config for the whole request, whatever a reload does meanwhile
        if rules.extra:
            send = self._with_headers(send, rules)
        client = client_key(scope.get("client")) if rules.buckets or rules.auth else ""  # ~5 µs: only when used
        if rules.buckets and not rules.buckets.take(client):
            return await _error(scope, send, 429, "too_many_requests", TOO_MANY, [(b"retry-after", b"1")])
        if rules.auth:
            try:
                authenticated = await self._authenticated(scope, rules.auth, client)
            except Busy:
                return await _error(scope, send, 429, "too_many_requests", TOO_MANY_LOGINS, [(b"retry-after", b"1")])
            if not authenticated:
                return await _error(scope, send, 401, "unauthorized", UNAUTHENTICATED,
                                    [(b"www-authenticate", REALM.encode())])
        if scope["path"] == "/metrics" and scope["method"] in ("GET", "HEAD"):
            return await self._metrics(scope, send)
        await self.app(scope, receive, send)

    async def _authenticated(self, scope, auth: BasicAuth, client: str) -> bool:
        header = _header(scope, b"authorization")
        user = auth.remembered(header)
        if user is None:
            # bcrypt is never run in the event loop, which serves every other client meanwhile.
            user = await self.turns(client, auth.user, header)
        if user is None:
            return False
        scope["pvedx.user"] = user  # a scope key no client can send; the app's policy reads it
        return True

    async def _metrics(self, scope, send) -> None:
        use_gzip = parse_accept_header(_header(scope, b"accept-encoding")).quality("gzip") > 0
        headers, chunks = self.metrics_answer(use_gzip)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if scope["method"] == "HEAD":
            chunks = []
        for i, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1})
        if not chunks:
            await send({"type": "http.response.body", "body": b""})

    def metrics_answer(self, use_gzip: bool) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
        """The headers and body chunks of a 200 to GET /metrics, for the ASGI path and the listener's alike."""
        chunks = self.exposition.scrape(use_gzip)  # sent as they are: a 2.6 MB body is never copied
        if sum(map(len, chunks)) <= ONE_WRITE:  # a small body as one write: one send() less per scrape
            chunks = [b"".join(chunks)]
        headers = [(b"content-type", CONTENT_TYPE.encode()), (b"vary", b"Accept-Encoding"),
                   (b"content-length", str(sum(map(len, chunks))).encode()), *SECURITY_HEADERS]
        if use_gzip:
            headers.append((b"content-encoding", b"gzip"))
        return headers, chunks

    def plain_metrics(self, accept_encoding: bytes, authorization: bytes):
        """`metrics_answer` for a GET /metrics the listener may answer in its own callback, or None when
        the request needs the ASGI path: a rate limit or configured headers, a password not verified
        before (bcrypt), an Accept-Encoding with weights or quotes (werkzeug reads those)."""
        rules = self.rules
        if rules.buckets or rules.extra or b";" in accept_encoding or b'"' in accept_encoding:
            return None
        if rules.auth and rules.auth.remembered(authorization.decode("latin-1")) is None:
            return None
        codings = {coding.strip().lower() for coding in accept_encoding.split(b",")}
        return self.metrics_answer(b"gzip" in codings or b"*" in codings)

    @staticmethod
    def _with_headers(send, rules: Rules):
        async def sending(message):
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in rules.replaced]
                message = {**message, "headers": kept + rules.extra}
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
