"""The REST request API as a werkzeug WSGI app, mounted at `/api/v1` by the launcher's web
app (its paths below are relative to that mount):

    POST   /requests                 create a lease: 201, Location: .../requests/<id>
    GET    /requests[?requestor=N]   the token's leases: {"requests": [...]}
    GET    /requests/<id>[?wait=S[&since=STATE]]
                                     one lease; with `wait`, once its state differs from
                                     `since` (the state the client saw last; absent: the
                                     state when the call came), at most S (<= 60) seconds
    POST   /requests/<id>/renew      a new expiry: `lease_seconds` (default the lease's) from now
    DELETE /requests/<id>            return the nodes, or cancel the waiting request
    GET    /openapi.json             the OpenAPI 3 description (no token needed)

Every call but the description carries `Authorization: Bearer <secret>` (401 without a
known one). Refusals are JSON `{"error": ..., "field": ...}` with the status of the
`ApiError`: 400 bad input (naming the field), 403 a label the token may not use or another
token's lease, 404 unknown id, 409 renewing a finished lease, 429 over the token's
`max-nodes`, 413 a body over 64 KiB, 503 before the launcher is connected or while
ZooKeeper is unreachable. A `wait` holds one of the web server's threads: at most
`WAIT_SLOTS` GETs wait at once; another is answered at once with the lease as it is (200,
the same body) and `Retry-After: 1`, so the health checks and the page always find a free
thread. A GET whose lease already differs from its `since` is answered at once without
taking a slot (and without `Retry-After`). With no `webapp.api-tokens` in the config the
API is off: 404 for every path. Each call is counted by token name and status
(`nodepool_api_requests_total`); the secret is never logged.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from nodepool_ng import prometheus
from nodepool_ng.api import validate
from nodepool_ng.api.auth import authenticate
from nodepool_ng.api.errors import ApiError, bad
from nodepool_ng.api.openapi import openapi
from nodepool_ng.api.service import MAX_WAIT, LeaseService
from nodepool_ng.config.models import ApiTokenConfig, Config
from nodepool_ng.errors import ZooKeeperError
from nodepool_ng.web.server import THREADS

log = logging.getLogger("nodepool_ng.api.app")

MAX_BODY = 64 * 1024  # bytes
NO_TOKEN = "-"  # the metric's token label for calls without a known token
TOKEN_NAME_KEY = "nodepool.api.token"  # WSGI environ: the authenticated token's name
# Long-polls waiting at once: half the web server's threads, the other half left free for
# every other call (health checks, the status page, metrics, the API's other calls).
WAIT_SLOTS = THREADS // 2
RETRY_AFTER = "1"  # seconds, when a long-poll found no free slot and was answered at once

URLS = Map([
    Rule("/requests", methods=["POST"], endpoint="create"),
    Rule("/requests", methods=["GET"], endpoint="list"),
    Rule("/requests/<lease_id>", methods=["GET"], endpoint="get"),
    Rule("/requests/<lease_id>", methods=["DELETE"], endpoint="release"),
    Rule("/requests/<lease_id>/renew", methods=["POST"], endpoint="renew"),
    Rule("/openapi.json", methods=["GET"], endpoint="openapi"),
], strict_slashes=False)


class _Request(Request):
    max_content_length = MAX_BODY  # werkzeug refuses a longer body (413)


class ApiApp:
    """`service()`: the launcher's LeaseService, None until it is connected (503 then);
    `config()`: the current config (its `webapp.api-tokens`); `wait_slots`: long-polls
    waiting at once."""

    def __init__(self, service: Callable[[], LeaseService | None],
                 config: Callable[[], Config], wait_slots: int = WAIT_SLOTS) -> None:
        self._service = service
        self._config = config
        self._wait_slots = threading.BoundedSemaphore(wait_slots)

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = _Request(environ)
        try:
            response = self._dispatch(request)
        except ApiError as e:
            response = _error(e)
        except ZooKeeperError as e:
            log.warning("%s %s: %s", request.method, request.path, e)
            response = _error(ApiError(503, None, f"ZooKeeper is unavailable: {e}"))
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            response = _error(ApiError(500, None, "internal error (the launcher log says why)"))
        # a refusal after the token was known counts under its name too
        token_name = request.environ.get(TOKEN_NAME_KEY, NO_TOKEN)
        prometheus.API_CALLS.labels(token_name, str(response.status_code)).inc()
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        tokens = self._config().webapp.api_tokens
        if not tokens:
            raise ApiError(404, None, "the REST request API is off: the config has no "
                           "webapp.api-tokens")
        adapter = URLS.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except HTTPException as e:
            raise ApiError(e.code or 404, None, f"{request.method} {request.path}: "
                           f"{e.name.lower()}") from None
        if endpoint == "openapi":
            return _json(200, openapi(request.script_root))
        token = authenticate(request.headers.get("Authorization"), tokens)
        request.environ[TOKEN_NAME_KEY] = token.name
        service = self._service()
        if service is None:
            raise ApiError(503, None, "the launcher is not connected to ZooKeeper yet")
        return self._call(service, token, endpoint, args, request)

    def _call(self, service: LeaseService, token: ApiTokenConfig, endpoint: str,
              args: Mapping[str, Any], request: Request) -> Response:
        lease_id = args.get("lease_id", "")
        if endpoint == "create":
            view = service.create(token, _body(request, required=True))
            response = _json(201, view)
            response.headers["Location"] = f"{request.script_root}/requests/{view['id']}"
            return response
        if endpoint == "list":
            requestor = request.args.get("requestor")
            return _json(200, {"requests": service.list_leases(token, requestor)})
        if endpoint == "get":
            wait = validate.wait_seconds(request.args.get("wait"), MAX_WAIT)
            since = validate.since_state(request.args.get("since"))
            if wait <= 0:
                return _json(200, service.get(token, lease_id))
            if since is not None and service.state(token, lease_id) is not since:
                # Changed since the client looked: answered at once, without a wait slot.
                return _json(200, service.get(token, lease_id))
            if not self._wait_slots.acquire(blocking=False):
                # Every slot is taken: the lease now, and when to ask again.
                log.debug("GET %s: no free wait slot, answered at once", lease_id)
                response = _json(200, service.get(token, lease_id))
                response.headers["Retry-After"] = RETRY_AFTER
                return response
            try:
                return _json(200, service.get(token, lease_id, wait, since))
            finally:
                self._wait_slots.release()
        if endpoint == "renew":
            return _json(200, service.renew(token, lease_id, _body(request, required=False)))
        return _json(200, service.release(token, lease_id))


def _body(request: Request, required: bool) -> Any:
    """The JSON body (None when absent and not required)."""
    try:
        raw = request.get_data(cache=False)
    except HTTPException:
        raise ApiError(413, "body", f"body: more than {MAX_BODY} bytes") from None
    if not raw.strip():
        if required:
            raise bad("body", "expected a JSON object")
        return None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise bad("body", f"not JSON: {e}") from None


def _json(status: int, payload: Any) -> Response:
    return Response(json.dumps(payload), status=status, mimetype="application/json")


def _error(error: ApiError) -> Response:
    response = _json(error.status, error.to_json())
    if error.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="nodepool"'
    return response
