"""HTTP plumbing for simcloud: requests, responses, routing, error bodies, one server per cloud.

Each simulated cloud listens on its own loopback port. Services live under path prefixes
(`/identity`, `/compute`, `/image`, `/network`, `/object-store`, `/volume`, `/_admin`).
Handlers raise `ApiError` for anything a real cloud would refuse; any other exception is
turned into the service's own 500 body, never a Python traceback.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from nodepool_ng.simcloud.state import CloudState

log = logging.getLogger("nodepool_ng.simcloud")


class ApiError(Exception):
    """An HTTP error response with a ready body (built by a service's error formatter)."""

    def __init__(self, status: int, body: Any, content_type: str = "application/json") -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body
        self.content_type = content_type


@dataclass
class Request:
    method: str
    path: str  # below the service prefix, without query string
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    service: Service
    state: CloudState
    base_url: str  # http://host:port
    params: tuple[str, ...] = ()
    token: dict[str, Any] | None = None

    def json(self) -> Any:
        if not self.body:
            raise self.service.error(400, "Malformed request body: empty")
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as e:
            raise self.service.error(400, f"Malformed request body: {e}") from None

    def json_object(self, key: str) -> dict[str, Any]:
        """The body's `{key: {...}}` member, or the service's 400."""
        data = self.json()
        if not isinstance(data, dict) or not isinstance(data.get(key), dict):
            raise self.service.error(400, f"Missing or invalid '{key}' in request body")
        return data[key]

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


@dataclass
class Response:
    status: int = 200
    body: Any = None  # dict/list -> JSON; bytes/str -> as is; None -> empty
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


Handler = Callable[[Request], Response]


class Service:
    """A set of routes under one prefix, with the error body shape of one OpenStack service."""

    name = "service"
    prefix = ""
    requires_auth = True

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method, re.compile(f"^{pattern}$"), handler))

    def error(self, status: int, message: str) -> ApiError:
        return ApiError(status, {"error": {"code": status, "message": message}})

    def match(self, method: str, path: str) -> tuple[Handler, tuple[str, ...]] | None:
        allowed = False
        for m, rx, handler in self._routes:
            found = rx.match(path)
            if found:
                if m == method:
                    return handler, found.groups()
                allowed = True
        if allowed:
            raise self.error(405, f"The method {method} is not allowed for {path or '/'}")
        return None


_ROUTE = "_simcloud_route"
RouteHandler = TypeVar("RouteHandler", bound=Callable[..., Response])


def handles(method: str, pattern: str) -> Callable[[RouteHandler], RouteHandler]:
    """Mark a `RouteGroup` method as the handler of `method` requests on `pattern`."""

    def mark(func: RouteHandler) -> RouteHandler:
        setattr(func, _ROUTE, (method, pattern))
        return func

    return mark


class RouteGroup:
    """Routes of one noun of a large API (servers, floating IPs, image tasks), kept apart
    from their `Service`, which answers them (error bodies, headers). Each handler is marked
    with `@handles(method, pattern)`; they are routed in the order they are defined (so
    `/servers(/detail)?` before `/servers/([^/]+)`)."""

    def __init__(self, service: Service) -> None:
        for attr in vars(type(self)).values():
            route = getattr(attr, _ROUTE, None)
            if route is not None:
                method, pattern = route
                service.route(method, pattern, getattr(self, attr.__name__))


def _encode(resp: Response) -> tuple[bytes, str]:
    if resp.body is None:
        return b"", resp.content_type
    if isinstance(resp.body, bytes):
        return resp.body, resp.content_type
    if isinstance(resp.body, str):
        return resp.body.encode(), resp.content_type
    return json.dumps(resp.body, separators=(",", ":")).encode(), "application/json"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else headers and body wait on delayed ACKs (40 ms)
    server: CloudHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.server.state.profile.name, format % args)

    def _dispatch(self) -> None:
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._read_chunked()
        split = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(split.path)
        service = self.server.find_service(path)
        resp: Response
        if service is None:
            resp = Response(404, {"error": {"code": 404, "message": f"No service at {path}"}})
        else:
            headers = {k.lower(): v for k, v in self.headers.items()}
            host = f"http://{self.server.host}:{self.server.port}"
            req = Request(
                method=self.command, path=path[len(service.prefix):],
                query=urllib.parse.parse_qs(split.query, keep_blank_values=True),
                headers=headers, body=body, service=service, state=state, base_url=host,
            )
            resp = self._call(service, req)
        self._send(resp)

    def _call(self, service: Service, req: Request) -> Response:
        state = req.state
        try:
            found = service.match(req.method, req.path)
            if found is None:
                raise service.error(404, f"The resource could not be found: {req.path}")
            handler, req.params = found
            if service.requires_auth:
                req.token = state.check_token(req.headers.get("x-auth-token"))
                if req.token is None:
                    raise ApiError(401, {"error": {
                        "code": 401, "title": "Unauthorized",
                        "message": "The request you have made requires authentication."}})
            delay, fail = state.faults_for(service.name, req.method)
            if delay:
                time.sleep(delay)
            if fail:
                raise service.error(500, "Injected fault: simulated internal error")
            return handler(req)
        except ApiError as e:
            return Response(e.status, e.body, content_type=e.content_type)
        except Exception:  # the client must get the service's 500, not a traceback
            log.exception("simcloud %s: %s %s failed", state.profile.name, req.method, req.path)
            err = service.error(500, "Unexpected error in simulated cloud")
            return Response(err.status, err.body, content_type=err.content_type)
        finally:
            state.count_request(service.name)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def _send(self, resp: Response) -> None:
        data, ctype = _encode(resp)
        self.send_response(resp.status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, val in resp.headers.items():
            self.send_header(k, val)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _dispatch


class CloudHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], state: CloudState, services: Sequence[Service]
    ) -> None:
        self.state = state
        # The longest prefix first: `/compute` must not take `/compute-x`'s requests.
        self.services = sorted(services, key=lambda s: len(s.prefix), reverse=True)
        super().__init__(address, _Handler)
        self.host = str(address[0])
        self.port = int(self.server_address[1])

    def find_service(self, path: str) -> Service | None:
        for service in self.services:
            if path == service.prefix or path.startswith(service.prefix + "/"):
                return service
        return None

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away mid-request (a launcher killed, a timeout) is normal for a
        # cloud; anything else is still printed as socketserver does.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def serve_in_thread(server: CloudHTTPServer) -> threading.Thread:
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1},
        name=f"simcloud-{server.state.profile.name}", daemon=True,
    )
    thread.start()
    return thread
