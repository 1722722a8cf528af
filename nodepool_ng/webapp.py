"""The launcher's web app: upstream's status paths (text or JSON, 1 s cache), Prometheus
metrics and health checks. doc/web.md describes every endpoint.

    GET /node-list[?node_id=ID]  /request-list  /label-list
        /image-list  /dib-image-list  /image-status        text table, or JSON when the
                                                            client sends Accept: application/json
                                                            or appends `.json` to the path
        ?fields=a,b                                         only these column keys
    GET /ready                                              as /health/ready (upstream's probe)
    GET /metrics                                            Prometheus text format
    GET /health/live                                        200 while the process serves
    GET /health/ready                                       200 once started and the
                                                            launcher's pools are registered
                                                            (`ready_check`), else 503

A parameter the app cannot use (a node_id that is not a znode name, an unknown column in
`fields`) is answered 400 with `<parameter>: <why>` (JSON `{"error": ...}` for JSON
clients). Parameters the app does not know are ignored (dashboards add cache busters).

Responses are cached for one second per (path, query, format) so a busy dashboard does not
turn into a ZooKeeper read storm. Every answer carries `Access-Control-Allow-Origin: *`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from nodepool_ng import prometheus
from nodepool_ng.errors import NodepoolError
from nodepool_ng.output import render
from nodepool_ng.status import Table
from nodepool_ng.znode_names import znode_name_problem

log = logging.getLogger("nodepool_ng.webapp")

CACHE_SECONDS = 1.0


class StatusSource(Protocol):
    """Where the tables come from (ZooKeeper in production)."""

    def table(self, name: str, node_id: str | None = None) -> Table: ...


ENDPOINTS = (
    "node-list",
    "request-list",
    "label-list",
    "image-list",
    "dib-image-list",
    "image-status",
)


class BadRequest(Exception):
    """A query parameter the app cannot use; the message names it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")


def _node_id(query: dict[str, list[str]]) -> str | None:
    values = query.get("node_id")
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest("node_id", "given more than once")
    problem = znode_name_problem(values[0])
    if problem is not None:
        raise BadRequest("node_id", f"not a node id: {problem}")
    return values[0]


def _check_fields(table: Table, fields: list[str] | None) -> None:
    unknown = sorted(set(fields or ()) - set(table.keys))
    if unknown:
        raise BadRequest(
            "fields",
            f"unknown column {', '.join(map(repr, unknown))} (known: {', '.join(table.keys)})",
        )


class _Cache:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._items: dict[tuple[Any, ...], tuple[float, str]] = {}

    def get(self, key: tuple[Any, ...], make: Callable[[], str]) -> str:
        now = time.monotonic()
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and now - hit[0] < self.ttl:
                return hit[1]
        body = make()
        with self._lock:
            # Drop stale entries so arbitrary query strings cannot grow the cache forever.
            self._items = {k: v for k, v in self._items.items() if now - v[0] < self.ttl}
            self._items[key] = (now, body)
        return body


class NotConnected(NodepoolError):
    """The status tables are asked for before the daemon has a ZooKeeper client."""


class WebApp:
    """Serves the endpoints from a daemon thread; `ready` gates `/ready` and `/health/ready`.

    `zk_client` is a ZooKeeper client, or a callable returning one (None until the daemon
    connected): the app may start before the daemon, so `/health/*` answer from the start.
    `ready_check` (e.g. `launcher.ready.is_set`): `/health/ready` is 200 only once it says
    True (the launcher's pools are registered); without it, once the app started.
    `tables=False`: `/metrics` and `/health/*` only (a daemon without status tables, e.g.
    the builder); the status paths are then 404.
    """

    def __init__(
        self,
        zk_client: Any,
        config_getter: Callable[[], Any] | None = None,
        host: str = "0.0.0.0",
        port: int = 8005,
        source: StatusSource | None = None,
        ready_check: Callable[[], bool] | None = None,
        registry: Any = None,
        tables: bool = True,
    ) -> None:
        self._zk_client = zk_client
        self._config_getter = config_getter
        self._source = source
        self._source_lock = threading.Lock()
        self.ready_check = ready_check
        self.registry = registry  # None: this process's (nodepool_ng.prometheus.REGISTRY)
        self.tables = tables
        self.host = host
        self.port = port
        self.ready = False
        self.cache = _Cache(CACHE_SECONDS)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        app = self

        class Handler(_Handler):
            webapp = app

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        # Port 0 asks the OS for a free one; report the real port.
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webapp", daemon=True
        )
        self._thread.start()
        self.ready = True
        log.info("Status web app listening on %s:%s", self.host, self.port)

    @property
    def source(self) -> StatusSource:
        """The status tables' source, made on first use (NotConnected before a client)."""
        with self._source_lock:
            if self._source is None:
                client = self._zk_client() if callable(self._zk_client) else self._zk_client
                if client is None:
                    raise NotConnected("not connected to ZooKeeper yet")
                from nodepool_ng.statusdata import ZooKeeperStatusSource

                self._source = ZooKeeperStatusSource(client, self._config_getter)
            return self._source

    def is_ready(self) -> bool:
        """`/health/ready`: started, and the daemon says it is ready."""
        if not self.ready:
            return False
        return self.ready_check is None or bool(self.ready_check())

    def stop(self) -> None:
        self.ready = False
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def respond(self, raw_path: str, accept: str) -> tuple[int, str, str]:
        """(status, content type, body) for one GET; the HTTP-free core of the handler."""
        url = urlsplit(raw_path)
        path = url.path.strip("/")
        if path == "ready":
            # Upstream's readiness probe: the same answer as /health/ready.
            path = "health/ready"
        if path == "health/live":
            return 200, "text/plain", "OK"
        if path == "health/ready":
            ok = self.is_ready()
            return (200, "text/plain", "OK") if ok else (503, "text/plain", "Not ready")
        if path == "metrics":
            ctype, data = prometheus.exposition(self.registry)
            return 200, ctype, data.decode("utf-8")
        as_json = "application/json" in accept
        if path.endswith(".json"):
            path, as_json = path[: -len(".json")], True
        if path not in ENDPOINTS or not self.tables:
            return 404, "text/plain", "Not found"
        # Undecodable bytes become U+FFFD, which no znode name may hold.
        query = parse_qs(url.query, errors="replace")
        fields = [f for v in query.get("fields", []) for f in v.split(",") if f] or None

        def make() -> str:
            table = self.source.table(path, node_id=node_id)
            _check_fields(table, fields)
            return render(table, as_json, fields)

        try:
            node_id = _node_id(query) if path == "node-list" else None
            key = (path, node_id, tuple(fields or ()), as_json)
            body = self.cache.get(key, make)
        except BadRequest as e:
            if as_json:
                return 400, "application/json", json.dumps({"error": str(e)})
            return 400, "text/plain", f"{e}\n"
        if as_json:
            return 200, "application/json", body
        return 200, "text/plain", body + "\n"


class _Handler(BaseHTTPRequestHandler):
    webapp: WebApp
    server_version = "nodepool_ng"

    def do_GET(self) -> None:
        try:
            status, ctype, body = self.webapp.respond(self.path, self.headers.get("Accept", ""))
        except NodepoolError as e:
            # ZooKeeper unreachable and the like: say so; no traceback in the log for it.
            log.warning("Cannot serve %s: %s", self.path, e)
            status, ctype, body = 503, "text/plain", f"Service unavailable: {e}"
        except Exception:
            log.exception("Error serving %s", self.path)
            status, ctype, body = 500, "text/plain", "Internal error"
        data = body.encode("utf-8")
        self.send_response(status)
        if "charset=" not in ctype:
            ctype = f"{ctype}; charset=UTF-8"
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)
