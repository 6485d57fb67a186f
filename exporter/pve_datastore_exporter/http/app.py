"""The Flask app: the routes of the seed's JSON API, /healthz and the page, every error in the one envelope.

The answers are built in answers.py, who may write is decided in policy.py, a body is checked in
bodies.py; here they meet a request.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import threading
from pathlib import Path

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from .. import answers, i18n, risk_answers
from ..answers import datastores_answer, defaults_answer, error_body, summary_answer
from ..config import Config
from ..records import RefreshFailed
from ..service import Service, StoreError, UnknownDatastore
from . import SECURITY_HEADERS, policy
from .bodies import MAX_BODY, ApiError, parse_defaults_body

log = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parent.parent  # templates/ and static/ sit beside the modules, not in http/
COMPRESSED = ("text/html", "application/json")  # the page (~5 MB at 100 x 100) and the API's answers
COMPRESS_FROM = 256  # bytes: below it gzip's header costs about what it saves
ERROR_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "payload_too_large", 429: "too_many_requests"}


def check_auth(writers: frozenset[str], api_token: str) -> None:
    """Raise the policy's refusal (policy.py) for this request, in the request's language."""
    basic_auth = bool(request.environ.get("pvedx.basic_auth"))  # set by the front once it authenticated a user
    refused = policy.refusal(method=request.method, origin=request.headers.get("Origin"), host=request.host,
                             host_url=request.host_url, remote_addr=request.remote_addr,
                             user=request.remote_user if basic_auth else None, basic_auth=basic_auth,
                             writers=writers, api_token=api_token, authorization=request.headers.get("Authorization", ""))
    if refused:
        raise ApiError(refused.status, refused.code, i18n.gettext(refused.message, **dict(refused.values)))


def tag_for(version: str | None, *facts: str) -> str | None:
    """The ETag of an answer built from `version` (Service.version) and the request's `facts`; None without one."""
    if version is None:
        return None
    return f"{version}-{hashlib.blake2b('/'.join(facts).encode(), digest_size=6).hexdigest()}"  # an ETag is ASCII


def not_modified(app: Flask, tag: str | None, **headers: str):
    """304 Not Modified when the request's If-None-Match holds `tag` (weak comparison, RFC 9110), else None."""
    if tag is None or not request.if_none_match.contains_weak(tag):
        return None
    response = app.response_class(status=304, headers=headers)
    response.set_etag(tag, weak=True)
    return response


def with_tag(response, tag: str | None):
    """`response` with its weak ETag: the same data, whatever age it reports (docs/architecture.md#conditional-gets)."""
    if tag:
        response.set_etag(tag, weak=True)
    return response


def create_app(service: Service, config: Config, refresh_waiters: int) -> Flask:
    """The Flask app with every route and error handler; at most `refresh_waiters` requests wait for a refresh."""
    app = Flask(__name__, root_path=str(PACKAGE))
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.json.sort_keys = False
    _register_errors(app)
    _register_language(app)
    _register_reads(app, service)
    _register_writes(app, service, config, refresh_waiters)
    _register_page(app, service, config)
    _register_compression(app)
    return app


def _register_compression(app: Flask) -> None:
    @app.after_request
    def compressed(response):
        # Browsers, requests and Ansible ask for gzip: the page at 100 x 100 goes from ~4.9 MB to
        # ~0.3 MB on the wire. Static files (passed through) and short answers are sent as they are.
        if response.status_code not in (200, 304) or response.direct_passthrough or response.mimetype not in COMPRESSED:
            return response
        response.vary.add("Accept-Encoding")  # a 304 varies as its 200 does
        if (response.status_code != 200 or "Content-Encoding" in response.headers
                or request.accept_encodings.quality("gzip") <= 0):
            return response
        body = response.get_data()
        if len(body) >= COMPRESS_FROM:
            response.set_data(gzip.compress(body, compresslevel=6, mtime=0))
            response.headers["Content-Encoding"] = "gzip"
        return response


def _register_errors(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        response = jsonify(error_body(exc.code, exc.message))
        if exc.status in (429, 503):
            response.headers["Retry-After"] = "5"
        return response, exc.status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        message = i18n.http_message(exc.code, exc.description or exc.name, type(exc).description)
        response = jsonify(error_body(ERROR_CODES.get(exc.code, "http_error"), message))
        response.status_code = exc.code
        if exc.code == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def crash(exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.path)
        message = i18n.gettext("An unexpected error occurred; see the exporter's log.")
        return jsonify(error_body("internal_error", message)), 500

    @app.after_request
    def never_framed(response):
        # The page has buttons that change the defaults: no other site may frame it (clickjacking).
        response.headers.update(SECURITY_HEADERS)
        return response


def _register_reads(app: Flask, service: Service) -> None:
    @app.get("/api/datastores")
    def list_datastores():
        tag = tag_for(service.version(), "list", i18n.current())
        return not_modified(app, tag) or with_tag(jsonify(datastores_answer(service.datastores(), service.age())), tag)

    @app.get("/api/datastores/default")
    def get_defaults():
        tag = tag_for(service.version(), "defaults", i18n.current())
        return not_modified(app, tag) or with_tag(jsonify(defaults_answer(service.defaults())), tag)

    @app.get("/metrics")
    def metrics_route():  # the front (front.py) answers GET and HEAD; this gives other methods their 405
        return "", 404

    @app.get("/healthz")
    def healthz():
        return jsonify({"success": True, "status": "ok"})


def _register_writes(app: Flask, service: Service, config: Config, refresh_waiters: int) -> None:
    writers = policy.writers(config.write_users)
    # Requests for a refresh share the one in progress, each holding an HTTP thread while it waits:
    # a few may wait, the others are told to come back, so a scrape always finds a free thread.
    waiting = threading.BoundedSemaphore(refresh_waiters)

    @app.post("/api/datastores/refresh")
    def refresh():
        check_auth(writers, config.api_token)
        request.get_data(cache=False)  # takes no body, but a huge one still gets its 413
        if not waiting.acquire(blocking=False):
            raise ApiError(429, "refresh_busy", i18n.gettext("A refresh is running and %(waiters)d requests already "
                           "wait for it; retry in a few seconds.", waiters=refresh_waiters))
        try:
            count = service.refresh()
        except RefreshFailed as exc:
            status, code = (503, "db_unavailable") if exc.reason == "db" else (502, "proxmox_error")
            raise ApiError(status, code, i18n.refresh_failed(exc.reason, str(exc))) from None
        finally:
            waiting.release()
        message = i18n.ngettext("Refreshed %(num)d datastore from Proxmox.", "Refreshed %(num)d datastores from Proxmox.",
                                count)
        return jsonify({"success": True, "message": message, "count": count, "role": service.role})

    @app.post("/api/datastores/default")
    def set_defaults():
        check_auth(writers, config.api_token)
        chosen = parse_defaults_body(request.get_data(cache=False))
        try:
            view, changed = service.set_defaults(hdd=chosen.get("hdd"), ssd=chosen.get("ssd"))
        except UnknownDatastore as exc:
            raise ApiError(404, "unknown_datastore", i18n.gettext(
                "Datastore '%(id)s' does not exist in the cluster or is disabled.", id=exc.args[0])) from None
        except StoreError as exc:
            raise ApiError(503, "db_unavailable", i18n.gettext("The database cannot be written: %(detail)s",
                                                               detail=exc)) from None
        message = i18n.gettext("Default datastores changed.") if changed else i18n.gettext("Default datastores already set.")
        return jsonify({"success": True, "message": message, "hdd_datastore": view.default_hdd,
                        "ssd_datastore": view.default_ssd, "changed": changed})


def _register_language(app: Flask) -> None:
    @app.before_request
    def language():  # the API's messages follow Accept-Language alone; the page may say otherwise
        i18n.use(i18n.negotiate(request.headers.get("Accept-Language")))

    @app.after_request
    def said_in(response):
        response.vary.add("Accept-Language")
        response.content_language.add(i18n.current())
        return response


def _register_page(app: Flask, service: Service, config: Config) -> None:
    # The one renderer of the page: the template with i18n's texts and filters. page.js only swaps its parts in.
    i18n.install(app.jinja_env)

    @app.get("/")
    def page():
        # The switch's ?lang= wins, and is remembered (a cookie, so it works without JavaScript).
        asked = i18n.supported(request.args.get("lang"))
        i18n.use(i18n.page_language(asked, request.cookies.get(i18n.COOKIE), request.headers.get("Accept-Language")))
        part = request.args.get("part")  # "status": that section alone, which page.js polls
        if part not in (None, "status"):
            raise ApiError(404, "not_found", i18n.gettext("The page has no part %(part)s; the one part is 'status'.",
                                                          part=repr(part)))
        token_required = policy.token_required(bool(request.environ.get("pvedx.basic_auth")), config.api_token)
        # The page's tag leaves its age out (page.js keeps it current through the status part); the
        # status part's holds the age as it is said, so a poll brings a new one only when it reads otherwise.
        facts = ("page", i18n.current(), str(int(token_required)))
        tag = tag_for(service.version(), *facts, *(() if part is None else ("status", i18n.ago(service.age()))))
        unchanged = not_modified(app, tag, **{"Cache-Control": "no-store", "Vary": "Cookie"})
        if unchanged:
            return unchanged
        # The status part, polled every 15 s by every open page, renders neither the list nor its
        # 10,000 nodes (the view is loaded whole all the same).
        view = service.datastores()
        answer = (datastores_answer if part is None else summary_answer)(view, service.age())
        template = "index.html" if part is None else "_status.html"
        # The warnings as records beside the answer's English sentences: the page says them by code.
        html = render_template(template, answer=answer, warnings=answers.default_warnings(view),
                               token_required=token_required, risks=risk_answers.page_risks(view))
        response = with_tag(app.make_response(html), tag)
        response.headers["Cache-Control"] = "no-store"  # the page shows live state; never a stale copy
        response.vary.add("Cookie")
        if asked:
            response.set_cookie(i18n.COOKIE, asked, max_age=i18n.COOKIE_MAX_AGE, path=request.script_root or "/",
                                secure=request.is_secure, httponly=True, samesite="Lax")
        return response
