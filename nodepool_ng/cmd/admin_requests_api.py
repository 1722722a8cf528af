"""`nodepool request-create|request-show|request-renew|request-return`: nodes through the REST
request API (`/api/v1`), over HTTP, the way a CI job gets them (no ZooKeeper, no config).

Where: `--api-url` or `NODEPOOL_API_URL` (default DEFAULT_URL); who: `--api-token-file` or
`NODEPOOL_API_TOKEN` (the bearer secret, never printed). Exit status: 0 done (fulfilled,
with `--wait`), 1 the request failed, ended, or `--timeout` passed while waiting, 2 a usage,
token, connection or HTTP error (one line naming the problem, the API's own message and
field when it gave one).

A wait's GETs name the state last seen (`since`): a change between two of them is answered
at once. A wait's GET that cannot reach the API or gets 502/503/504 (a launcher restarting,
its proxy, ZooKeeper away) is tried again after RETRY_DELAYS, then exits 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import requests

from nodepool_ng.cmd.admin_context import AdminContext
from nodepool_ng.model.lease import LeaseState
from nodepool_ng.output import render_rows

URL_ENV = "NODEPOOL_API_URL"
TOKEN_ENV = "NODEPOOL_API_TOKEN"
DEFAULT_URL = "http://localhost:8005/api/v1"
# Seconds one long-poll GET waits (the API allows up to 60; each names the state last seen,
# so its length costs no latency). Under the 60 s read timeout of common proxies.
POLL = 30.0
# Seconds between the tries of a wait's GET that met a connection error or RETRY_STATUSES:
# five tries, over 15 s, then exit 2.
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0)
RETRY_STATUSES = frozenset({502, 503, 504})
STATES = tuple(s.value for s in LeaseState)
RETRY_PAUSE = 1.0  # seconds before asking again when a wait was answered at once, unchanged
HTTP_SLACK = 30.0  # seconds an HTTP call may take beyond its long-poll wait
DONE_STATES = ("fulfilled", "failed", "returned", "expired")  # nothing more to wait for
NODE_COLUMNS = (("id", "ID"), ("label", "Label"), ("provider", "Provider"),
                ("interface_ip", "Interface IP"), ("username", "Username"),
                ("connection_port", "Port"))
EXIT_FAILED = 1
EXIT_ERROR = 2

Handler = Callable[[AdminContext, argparse.Namespace], int | None]
AddCommand = Callable[[Any, str, Handler, str], argparse.ArgumentParser]


class ApiCallError(Exception):
    """Usage, token, connection or HTTP trouble: exit status 2. `transient`: a connection
    error or a RETRY_STATUSES answer, worth another try."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class ApiClient:
    """The REST request API at `url` with one bearer token."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, timeout: float = HTTP_SLACK,
             **kwargs: Any) -> dict[str, Any]:
        """The JSON answer of a 2xx; ApiCallError naming the status and the API's reason."""
        url = self.url + path
        try:
            response = self._session.request(method, url, timeout=timeout, **kwargs)
        except requests.RequestException as e:
            transient = isinstance(e, requests.ConnectionError | requests.Timeout)
            raise ApiCallError(f"cannot reach the API at {self.url}: {type(e).__name__}: "
                               f"{e}", transient) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if not response.ok:
            raise ApiCallError(_refusal(method, url, response.status_code, body),
                               response.status_code in RETRY_STATUSES)
        if not isinstance(body, dict):
            raise ApiCallError(f"{method} {url}: HTTP {response.status_code}, not a JSON "
                               "object (is --api-url the API's /api/v1?)")
        return body

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", "/requests", json=body)

    def get(self, request_id: str, wait: float = 0.0, since: str | None = None) -> dict[str, Any]:
        """With `wait`: once the state differs from `since` (the state last seen; None: the
        state when the GET comes), at most `wait` seconds."""
        params = {"wait": f"{wait:g}"} if wait > 0 else {}
        if wait > 0 and since is not None:
            params["since"] = since
        return self.call("GET", _path(request_id), timeout=wait + HTTP_SLACK,
                         params=params or None)

    def renew(self, request_id: str, lease_seconds: int | None) -> dict[str, Any]:
        body = None if lease_seconds is None else {"lease_seconds": lease_seconds}
        return self.call("POST", _path(request_id) + "/renew", json=body)

    def release(self, request_id: str) -> dict[str, Any]:
        return self.call("DELETE", _path(request_id))

    def wait_done(self, lease: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        """Long-poll from `lease` (as last seen) until the request is in a DONE_STATE, or
        `timeout` seconds passed (the lease as last seen, then). Each GET names the state
        seen (`since`). A wait answered at once with the state unchanged (the API had no
        wait slot free: `Retry-After`) is followed by a pause, not a busy loop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        request_id = str(lease["id"])
        while lease.get("state") not in DONE_STATES:
            if _left(deadline) <= 0:
                break
            asked = time.monotonic()
            state = lease.get("state")
            lease = self.get_retrying(request_id, lambda: min(POLL, _left(deadline)),
                                      str(state), deadline)
            early = time.monotonic() - asked < RETRY_PAUSE
            if lease.get("state") == state and early and _left(deadline) > 0:
                time.sleep(min(RETRY_PAUSE, _left(deadline)))
        return lease

    def get_retrying(self, request_id: str, wait: Callable[[], float], since: str | None,
                     deadline: float | None = None) -> dict[str, Any]:
        """`get`, tried again after each of RETRY_DELAYS while it fails transiently (a
        launcher restarting) and `deadline` allows; `wait()`: the wait of each try."""
        for tries, delay in enumerate((*RETRY_DELAYS, None), 1):
            try:
                return self.get(request_id, max(0.0, wait()), since)
            except ApiCallError as e:
                if not e.transient:
                    raise
                if delay is None or _left(deadline) < delay:
                    raise ApiCallError(f"{e} (gave up after {tries} "
                                       f"{'try' if tries == 1 else 'tries'})") from None
                print(f"nodepool: warning: {e}; trying again in {delay:g} s",
                      file=sys.stderr, flush=True)
                time.sleep(delay)
        raise AssertionError("unreachable")


def _left(deadline: float | None) -> float:
    """Seconds until `deadline` (None: no deadline)."""
    return math.inf if deadline is None else deadline - time.monotonic()


def _path(request_id: str) -> str:
    """`/requests/<id>`, the id one path segment whatever it holds (`..`, `/`)."""
    return "/requests/" + quote(request_id, safe="")


def _refusal(method: str, url: str, status: int, body: Any) -> str:
    if isinstance(body, dict) and body.get("error"):
        field = f" (field: {body['field']})" if body.get("field") else ""
        return f"the API refused {method} {url}: HTTP {status}: {body['error']}{field}"
    return f"{method} {url}: HTTP {status} (is --api-url the API's /api/v1?)"


# -- commands -------------------------------------------------------------------------------------
def add_commands(sub: Any, add: AddCommand) -> None:
    """Register the commands with `add(sub, name, handler, help)` (admin.py's `_add`)."""
    p = add(sub, "request-create", cmd_request_create, "request nodes through the REST API")
    p.add_argument("labels", nargs="+", metavar="LABEL", help="one node per label")
    p.add_argument("--wait", action="store_true",
                   help="wait until fulfilled or failed, then print the nodes")
    p.add_argument("--timeout", type=_seconds, default=None, metavar="SECONDS",
                   help="give up --wait after SECONDS (exit 1; the request stays)")
    p.add_argument("--lease", type=int, default=None, metavar="SECONDS",
                   help="lease time in seconds (default: the API's, 3600)")
    p.add_argument("--provider", dest="api_provider", metavar="PROVIDER",
                   help="only this provider serves the request")
    p.add_argument("--priority", metavar="NNN", help="request priority, 0-999 (lower first)")
    _common(p)
    p = add(sub, "request-show", cmd_request_show, "show a REST API request and its nodes")
    p.add_argument("request_id", metavar="ID", help="request id")
    p.add_argument("--wait", type=_seconds, default=None, metavar="SECONDS",
                   help="answer once the state changes (at most SECONDS, up to 60)")
    p.add_argument("--since", choices=STATES, default=None, metavar="STATE",
                   help="with --wait: the state last seen; another state is shown at once "
                        f"({', '.join(STATES)})")
    _common(p)
    p = add(sub, "request-renew", cmd_request_renew, "push a REST API lease's expiry back")
    p.add_argument("request_id", metavar="ID", help="request id")
    p.add_argument("--lease", type=int, default=None, metavar="SECONDS",
                   help="new expiry SECONDS from now (default: the lease's own time)")
    _common(p)
    p = add(sub, "request-return", cmd_request_return,
            "give a REST API request's nodes back (or cancel it)")
    p.add_argument("request_id", metavar="ID", help="request id")
    _common(p)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api-url", default=None,
                   help=f"the API's base URL (default ${URL_ENV}, else {DEFAULT_URL})")
    p.add_argument("--api-token-file", default=None,
                   help=f"file holding the API token (default ${TOKEN_ENV})")
    # SUPPRESS: absent here, `nodepool --json COMMAND` keeps the global option's value.
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="JSON output (the API's answer) instead of text")


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number of seconds")
    return seconds


def _api_command(func: Callable[[AdminContext, argparse.Namespace, ApiClient], int]) -> Handler:
    """Build the client, run `func`; ApiCallError -> its message and exit status 2."""

    def run(ctx: AdminContext, args: argparse.Namespace) -> int:
        try:
            return func(ctx, args, client(args))
        except ApiCallError as e:
            return _fail(e, EXIT_ERROR)

    run.__doc__ = func.__doc__
    return run


def client(args: argparse.Namespace) -> ApiClient:
    url = args.api_url or os.environ.get(URL_ENV) or DEFAULT_URL
    return ApiClient(url, _token(args.api_token_file))


def _token(path: str | None) -> str:
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                token = f.read().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ApiCallError(f"--api-token-file: cannot read {path}: "
                               f"{getattr(e, 'strerror', None) or e}") from None
        if not token:
            raise ApiCallError(f"--api-token-file: {path} is empty")
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ApiCallError(f"no API token: give --api-token-file or set {TOKEN_ENV}")
    return token


def _fail(message: object, status: int) -> int:
    print(f"nodepool: error: {message}", file=sys.stderr)
    return status


def _create(ctx: AdminContext, args: argparse.Namespace, api: ApiClient) -> int:
    body: dict[str, Any] = {"labels": list(args.labels)}
    if args.lease is not None:
        body["lease_seconds"] = args.lease
    if args.api_provider is not None:
        body["provider"] = args.api_provider
    if args.priority is not None:
        body["priority"] = args.priority
    lease = api.create(body)
    if not args.wait:
        ctx.print(json.dumps(lease) if ctx.as_json else str(lease["id"]))
        return 0
    if not ctx.as_json:
        print(lease["id"], file=ctx.out, flush=True)
    lease = api.wait_done(lease, args.timeout)
    return _finished(ctx, lease, args.timeout)


def _finished(ctx: AdminContext, lease: dict[str, Any], timeout: float | None) -> int:
    """The end of a wait: the nodes (0), or why there are none (1)."""
    state = lease.get("state")
    if ctx.as_json:
        ctx.print(json.dumps(lease))
    elif state == "fulfilled":
        ctx.print(node_table(lease))
    if state == "fulfilled":
        return 0
    if state not in DONE_STATES:
        after = "" if timeout is None else f" after {timeout:g} s"
        return _fail(f"request {lease['id']} is still {state}{after} (it keeps waiting: "
                     f"`nodepool request-return {lease['id']}` cancels it)", EXIT_FAILED)
    reason = f": {lease['failure_reason']}" if lease.get("failure_reason") else ""
    return _fail(f"request {lease['id']} {state}{reason}", EXIT_FAILED)


def node_table(lease: dict[str, Any]) -> str:
    rows = [[node.get(key) for key, _header in NODE_COLUMNS] for node in lease.get("nodes", [])]
    return render_rows([header for _key, header in NODE_COLUMNS], rows)


def _show(ctx: AdminContext, args: argparse.Namespace, api: ApiClient) -> int:
    if args.since is not None and args.wait is None:
        raise ApiCallError("--since needs --wait")
    if args.wait is None:
        lease = api.get(args.request_id)
    else:
        deadline = time.monotonic() + min(args.wait, 60.0)
        lease = api.get_retrying(args.request_id, lambda: min(_left(deadline), 60.0),
                                 args.since, deadline)
    if ctx.as_json:
        ctx.print(json.dumps(lease))
        return 0
    ctx.print(_summary(lease))
    if lease.get("nodes"):
        ctx.print(node_table(lease))
    return 0


def _summary(lease: dict[str, Any]) -> str:
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(lease["expires"])))
    reason = f" ({lease['failure_reason']})" if lease.get("failure_reason") else ""
    return (f"Request {lease['id']}: {lease['state']}{reason}, labels "
            f"{','.join(lease.get('labels', []))}, lease expires {expires}")


def _renew(ctx: AdminContext, args: argparse.Namespace, api: ApiClient) -> int:
    lease = api.renew(args.request_id, args.lease)
    ctx.print(json.dumps(lease) if ctx.as_json else _summary(lease))
    return 0


def _return(ctx: AdminContext, args: argparse.Namespace, api: ApiClient) -> int:
    lease = api.release(args.request_id)
    ctx.print(json.dumps(lease) if ctx.as_json else _summary(lease))
    return 0


cmd_request_create = _api_command(_create)
cmd_request_show = _api_command(_show)
cmd_request_renew = _api_command(_renew)
cmd_request_return = _api_command(_return)
