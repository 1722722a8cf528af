"""The WSGI application: routes, content negotiation, conditional answers, errors.

    GET|HEAD /                           the status page (text/html)
    GET|HEAD /<table>[.json]             upstream's status paths (`status_paths`)
    GET|HEAD /metrics                    Prometheus text format
    GET|HEAD /health/live, /health/ready, /ready
    <prefix>/...                         a mounted WSGI application (`mounts`), first

Every other method on these paths is 405, any other path 404. Every 200 answer carries an
ETag (`If-None-Match` gives 304), every answer `Access-Control-Allow-Origin: *` (a mounted
application's too, unless it sets its own). Each request is logged at DEBUG on
`nodepool_ng.web.access`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs

from werkzeug.datastructures import MIMEAccept
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from nodepool_ng import prometheus
from nodepool_ng.errors import NodepoolError
from nodepool_ng.web import page, status_paths
from nodepool_ng.web.status_paths import Answer, Cache, StatusSource

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("nodepool_ng.web")
access_log = logging.getLogger("nodepool_ng.web.access")

CORS = ("Access-Control-Allow-Origin", "*")
JSON = "application/json"
TEXT = "text/plain"
HTML = "text/html"

_TABLES = ",".join(repr(name) for name in status_paths.ENDPOINTS)
URLS = Map(
    [
        Rule("/", endpoint="page", methods=["GET"]),
        Rule("/health/live", endpoint="live", methods=["GET"]),
        Rule("/health/ready", endpoint="ready", methods=["GET"]),
        Rule("/ready", endpoint="ready", methods=["GET"]),
        Rule("/metrics", endpoint="metrics", methods=["GET"]),
        Rule(f"/<any({_TABLES}):table>", endpoint="table", methods=["GET"]),
        Rule(f"/<any({_TABLES}):table>.json", endpoint="table_json", methods=["GET"]),
    ],
    strict_slashes=False,
)


class AppState(Protocol):
    """What the application reads from its server (`server.WebApp`)."""

    cache: Cache
    tables: bool
    registry: Any
    launcher_status: page.LauncherStatus | None

    @property
    def source(self) -> StatusSource: ...

    def is_ready(self) -> bool: ...


def preference(accept: MIMEAccept, mimetype: str) -> tuple[float, int]:
    """(quality, specificity) the client gives `mimetype`: its most specific matching entry
    decides (`type/sub` 2, `type/*` 1, `*/*` 0); (0, -1) when none matches."""
    kind = mimetype.split("/")[0]
    best: tuple[int, float] = (-1, 0.0)
    for value, quality in accept:
        value = value.split(";")[0].strip().lower()
        specificity = {mimetype: 2, f"{kind}/*": 1, "*/*": 0}.get(value)
        if specificity is not None and specificity > best[0]:
            best = (specificity, quality)
    return (best[1], best[0])


def wants_json(accept: MIMEAccept) -> bool:
    """JSON when the client prefers application/json to text/plain (q-values, then the more
    specific entry), or names both equally; text otherwise (also without Accept)."""
    json_q, json_s = preference(accept, JSON)
    text_q, text_s = preference(accept, TEXT)
    if json_q <= 0:
        return False
    return (json_q, json_s) > (text_q, text_s) or (json_q == text_q and json_s == 2)


def _response(answer: Answer) -> Response:
    ctype = answer.content_type
    if "charset=" not in ctype:
        ctype = f"{ctype}; charset=UTF-8"
    return Response(answer.body, status=answer.status, content_type=ctype)


class StatusApplication:
    """The web app's own routes as one WSGI application over an `AppState`."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        response = self.dispatch(request)
        if response.status_code == 200:
            response.add_etag()
            response.make_conditional(request)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        adapter = URLS.bind_to_environ(request.environ)
        try:
            endpoint, values = adapter.match()
            return _response(self.answer(request, endpoint, values))
        except NotFound:
            return _response(Answer(404, TEXT, "Not found"))
        except MethodNotAllowed as e:
            response = _response(Answer(405, TEXT, f"Method {request.method} not allowed"))
            response.headers["Allow"] = ", ".join(e.valid_methods or ())
            return response
        except HTTPException as e:
            return _response(Answer(e.code or 500, TEXT, e.description or e.name))
        except NodepoolError as e:
            # ZooKeeper unreachable and the like: say so; no traceback in the log for it.
            log.warning("Cannot serve %s: %s", request.path, e)
            return _response(Answer(503, TEXT, f"Service unavailable: {e}"))
        except Exception:
            log.exception("Error serving %s", request.path)
            return _response(Answer(500, TEXT, "Internal error"))

    def answer(self, request: Request, endpoint: str, values: Mapping[str, str]) -> Answer:
        state = self.state
        if endpoint == "live":
            return Answer(200, TEXT, "OK")
        if endpoint == "ready":
            return Answer(200, TEXT, "OK") if state.is_ready() else Answer(503, TEXT, "Not ready")
        if endpoint == "metrics":
            ctype, data = prometheus.exposition(state.registry)
            return Answer(200, ctype, data.decode("utf-8"))
        if not state.tables:
            return Answer(404, TEXT, "Not found")
        if endpoint == "page":
            if preference(request.accept_mimetypes, HTML)[0] <= 0 and request.accept_mimetypes:
                return Answer(406, TEXT, "Not acceptable: the status page is text/html\n")
            body = state.cache.get(("page",), lambda: page.render(
                page.collect(state.source, state.launcher_status)))
            return Answer(200, HTML, body)
        as_json = endpoint == "table_json" or wants_json(request.accept_mimetypes)
        # Undecodable bytes become U+FFFD, which no znode name may hold (werkzeug's `args`
        # would keep a bad escape such as `%FF` as it is).
        query = parse_qs(request.query_string.decode("latin-1"), errors="replace")
        return status_paths.answer(
            lambda: state.source,
            values["table"],
            query.get("node_id", []),
            query.get("fields", []),
            as_json,
            state.cache,
        )


def check_mounts(mounts: Mapping[str, WSGIApplication]) -> None:
    """ValueError naming a mount prefix the dispatcher cannot use."""
    for prefix, application in mounts.items():
        if not prefix.startswith("/") or prefix.endswith("/") or "//" in prefix:
            raise ValueError(
                f"mounts: prefix {prefix!r} must start with '/' and not end with '/'")
        if not callable(application):
            raise ValueError(f"mounts: {prefix!r} is not a WSGI application")


def with_cors_and_log(application: WSGIApplication) -> WSGIApplication:
    """Adds `Access-Control-Allow-Origin: *` (unless set) and logs each request at DEBUG."""

    def wrapped(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = time.monotonic()

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if not any(name.lower() == CORS[0].lower() for name, _v in headers):
                headers = [*headers, CORS]
            if access_log.isEnabledFor(logging.DEBUG):
                query = environ.get("QUERY_STRING")
                access_log.debug(
                    "%s %s %s%s %s %.1f ms", environ.get("REMOTE_ADDR", "-"),
                    environ.get("REQUEST_METHOD"),
                    environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""),
                    f"?{query}" if query else "", status.split(" ")[0],
                    (time.monotonic() - started) * 1000)
            return start_response(status, headers, exc_info)

        return application(environ, start)

    return wrapped


def make_app(
    state: AppState, mounts: Mapping[str, WSGIApplication] | None = None
) -> WSGIApplication:
    """The whole WSGI application: `mounts` (prefix -> application, dispatched first, with
    SCRIPT_NAME the prefix and PATH_INFO the rest), then the app's own routes."""
    own: WSGIApplication = StatusApplication(state)
    if mounts:
        check_mounts(mounts)
        own = DispatcherMiddleware(own, dict(mounts))
    return with_cors_and_log(own)

