"""`WebApp`: the web app's lifecycle. cheroot's WSGI server (a thread pool) serves
`app.make_app` from a daemon thread; `ready` gates `/ready` and `/health/ready`.
doc/web.md describes every endpoint."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from cheroot import wsgi
from werkzeug.test import EnvironBuilder, run_wsgi_app

from nodepool_ng.errors import NodepoolError
from nodepool_ng.web.app import make_app
from nodepool_ng.web.page import LauncherStatus
from nodepool_ng.web.status_paths import CACHE_SECONDS, Cache, StatusSource

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

log = logging.getLogger("nodepool_ng.web")

# Worker threads (cheroot's default is 10); each serves one request at a time, and a
# long-polling API GET holds its thread while it waits: `api.app.WAIT_SLOTS` lets at most
# half of them wait, so the rest always answer the health checks, the page and the API.
THREADS = 32
SERVER_NAME = "nodepool_ng"


class NotConnected(NodepoolError):
    """The status tables are asked for before the daemon has a ZooKeeper client."""


class _Server(wsgi.Server):
    """cheroot's server with its own messages (bad requests, client errors) in our log
    instead of on stderr."""

    def error_log(self, msg: str = "", level: int = logging.INFO,
                  traceback: bool = False) -> None:
        log.log(level, "HTTP server: %s", msg, exc_info=traceback)


class WebApp:
    """Serves the endpoints from a daemon thread; `ready` gates `/ready` and `/health/ready`.

    `zk_client` is a ZooKeeper client, or a callable returning one (None until the daemon
    connected): the app may start before the daemon, so `/health/*` answer from the start.
    `ready_check` (e.g. `launcher.ready.is_set`): `/health/ready` is 200 only once it says
    True (the launcher's pools are registered); without it, once the app started.
    `tables=False`: `/metrics` and `/health/*` only (a daemon without status tables, e.g.
    the builder); the status paths and the page are then 404.
    `launcher_status`: the providers of the launcher in this process, for the page.
    `mounts`: prefix -> WSGI application (e.g. `{"/api/v1": api}`), dispatched before the
    app's own routes with SCRIPT_NAME the prefix and PATH_INFO the rest.
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
        launcher_status: LauncherStatus | None = None,
        mounts: Mapping[str, WSGIApplication] | None = None,
    ) -> None:
        self._zk_client = zk_client
        self._config_getter = config_getter
        self._source = source
        self._source_lock = threading.Lock()
        self.ready_check = ready_check
        self.registry = registry  # None: this process's (nodepool_ng.prometheus.REGISTRY)
        self.tables = tables
        self.launcher_status = launcher_status
        self.host = host
        self.port = port
        self.ready = False
        self.cache = Cache(CACHE_SECONDS)
        self.app = make_app(self, mounts)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve; OSError when the address cannot be bound."""
        server = _Server((self.host, self.port), self.app, numthreads=THREADS,
                         server_name=SERVER_NAME)
        bound = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            # prepare() binds and starts the worker threads: made from this daemon thread,
            # they are daemon threads too, so they never keep the process alive.
            try:
                server.prepare()
            except BaseException as e:
                failed.append(e)
                return
            finally:
                bound.set()
            server.serve()

        self._thread = threading.Thread(target=run, name="webapp", daemon=True)
        self._thread.start()
        bound.wait()
        if failed:
            self._thread.join()
            self._thread = None
            raise failed[0]
        self._server = server
        # Port 0 asks the OS for a free one; report the real port.
        self.port = int(server.bind_addr[1])
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
            self._server.stop()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def respond(self, raw_path: str, accept: str) -> tuple[int, str, str]:
        """(status, content type without its charset, body) of a GET of `raw_path`, answered
        by the WSGI application in this thread (no socket)."""
        builder = EnvironBuilder(path=raw_path, headers=[("Accept", accept)] if accept else [])
        app_iter, status, headers = run_wsgi_app(self.app, builder.get_environ())
        try:
            body = b"".join(app_iter).decode("utf-8")
        finally:
            close = getattr(app_iter, "close", None)
            if close is not None:
                close()
        ctype = "; ".join(part for part in headers.get("Content-Type", "").split("; ")
                          if not part.lower().startswith("charset="))
        return int(status.split(" ")[0]), ctype, body
