"""HTTP behaviour of the web app over real HTTP (cheroot) against real ZooKeeper records:
HEAD, conditional GET, Accept negotiation, 405, CORS, the access log, mounted WSGI
applications, the status page's escaping and the builder's app without tables."""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import pytest
from kazoo.client import KazooClient
from prometheus_client import CollectorRegistry

from nodepool_ng.status import PoolStatus, ProviderStatus
from nodepool_ng.web.app import preference, wants_json
from nodepool_ng.web.server import WebApp
from nodepool_ng.zk.client import ZooKeeperClient
from tests.cli import test_webapp as base
from tests.cli.conftest import write_node

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

zk, webapp = base.zk, base.webapp

Reply = tuple[int, dict[str, str], bytes]


def call(app: WebApp, method: str, path: str, **headers: str) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    try:
        conn.request(method, path, headers={k.replace("_", "-"): v for k, v in headers.items()})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


GET_PATHS = ["/", "/node-list", "/node-list.json", "/request-list", "/label-list",
             "/image-list", "/dib-image-list", "/image-status", "/metrics", "/health/live",
             "/health/ready", "/ready"]


@pytest.mark.parametrize("path", GET_PATHS)
def test_head_has_the_get_headers_and_no_body(webapp: WebApp, path: str) -> None:
    webapp.cache.ttl = 600  # the same body (and so ETag) for both
    status, get_headers, body = call(webapp, "GET", path)
    assert status == 200 and body
    status, head_headers, head_body = call(webapp, "HEAD", path)
    assert (status, head_body) == (200, b"")
    # /metrics is not cached: its process samples (CPU time...) differ between two scrapes.
    same = ("Content-Type", "Access-Control-Allow-Origin") + (
        () if path == "/metrics" else ("Content-Length", "ETag"))
    for name in same:
        assert head_headers[name] == get_headers[name], name
    assert "ETag" in head_headers


@pytest.mark.parametrize("path", ["/node-list", "/node-list.json", "/metrics", "/"])
def test_other_methods_are_405(webapp: WebApp, path: str) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, headers, body = call(webapp, method, path)
        assert status == 405, (method, body)
        assert set(headers["Allow"].split(", ")) == {"GET", "HEAD"}
        assert headers["Access-Control-Allow-Origin"] == "*"


def test_conditional_get(webapp: WebApp, kazoo_client: KazooClient) -> None:
    write_node(kazoo_client, "0000000001")
    status, headers, body = call(webapp, "GET", "/node-list.json")
    etag = headers["ETag"]
    assert status == 200 and etag.startswith('"')
    status, headers304, body = call(webapp, "GET", "/node-list.json", If_None_Match=etag)
    assert (status, body, headers304["ETag"]) == (304, b"", etag)
    # A change of the data changes the ETag: the old one gets the full answer.
    write_node(kazoo_client, "0000000002")
    webapp.cache.ttl = 0
    status, headers, body = call(webapp, "GET", "/node-list.json", If_None_Match=etag)
    assert status == 200 and headers["ETag"] != etag
    assert [r["id"] for r in json.loads(body)] == ["0000000001", "0000000002"]


@pytest.mark.parametrize(
    ("accept", "json_wanted"),
    [
        ("", False),
        ("*/*", False),
        ("text/plain", False),
        ("application/json", True),
        ("application/json, text/plain, */*", True),  # axios' default: JSON, as before
        ("text/plain, application/json;q=0.5", False),
        ("text/plain;q=0.4, application/json;q=0.9", True),
        ("application/*", True),
        ("application/json;q=0, */*", False),
        ("text/html,application/xhtml+xml,*/*;q=0.8", False),  # a browser
    ],
)
def test_accept_negotiation(webapp: WebApp, accept: str, json_wanted: bool) -> None:
    headers = {"Accept": accept} if accept else {}
    status, got, body = call(webapp, "GET", "/label-list", **headers)
    assert status == 200
    assert got["Content-Type"].startswith("application/json" if json_wanted else "text/plain")
    assert body.startswith(b"[") == json_wanted


def test_preference_uses_the_most_specific_entry() -> None:
    from werkzeug.datastructures import MIMEAccept
    from werkzeug.http import parse_accept_header

    accept = parse_accept_header("text/*;q=0.3, text/plain;q=0.7, */*;q=0.1", MIMEAccept)
    assert preference(accept, "text/plain") == (0.7, 2)
    assert preference(accept, "text/html") == (0.3, 1)
    assert preference(accept, "application/json") == (0.1, 0)
    assert not wants_json(accept)


def test_page_is_html_and_refuses_clients_that_take_no_html(webapp: WebApp) -> None:
    status, headers, body = call(webapp, "GET", "/", Accept="text/html,*/*;q=0.8")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=UTF-8"
    assert b'<meta http-equiv="refresh" content="10">' in body
    assert call(webapp, "GET", "/", Accept="application/json")[0] == 406


def test_page_escapes_record_values(webapp: WebApp, kazoo_client: KazooClient) -> None:
    evil = '<script>alert("x")</script>'
    write_node(kazoo_client, "0000000001", hold_job=evil, comment="a&b", user_data=evil,
               type=["<b>small</b>"])
    _s, _h, body = call(webapp, "GET", "/")
    page = body.decode()
    assert "<script>" not in page and "<b>small" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; · a&amp;b" in page
    assert "&lt;b&gt;small&lt;/b&gt;" in page


def test_trailing_slash_and_unknown_paths(webapp: WebApp) -> None:
    assert call(webapp, "GET", "/label-list/")[0] == 200
    assert call(webapp, "GET", "/metrics/")[0] == 200
    status, headers, body = call(webapp, "GET", "/nope")
    assert (status, body) == (404, b"Not found")
    assert headers["Access-Control-Allow-Origin"] == "*"


def test_access_log_at_debug(webapp: WebApp, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="nodepool_ng.web.access"):
        call(webapp, "GET", "/health/live?probe=1")
    lines = [r.getMessage() for r in caplog.records if r.name == "nodepool_ng.web.access"]
    assert any(" GET /health/live?probe=1 200 " in line for line in lines), lines
    assert all(r.levelno == logging.DEBUG for r in caplog.records
               if r.name == "nodepool_ng.web.access")


def echo_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """A tiny WSGI application that reports where it was mounted."""
    body = json.dumps({"script_name": environ["SCRIPT_NAME"], "path_info": environ["PATH_INFO"],
                       "method": environ["REQUEST_METHOD"]}).encode()
    start_response("201 Created", [("Content-Type", "application/json"),
                                   ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def mounted(zk: ZooKeeperClient) -> Iterator[WebApp]:
    app = WebApp(zk, None, host="127.0.0.1", port=0, mounts={"/api/v1": echo_app})
    app.start()
    try:
        yield app
    finally:
        app.stop()


def test_mounted_application_gets_its_requests_first(mounted: WebApp) -> None:
    status, headers, body = call(mounted, "POST", "/api/v1/nodes/0000000001/hold")
    assert status == 201
    assert json.loads(body) == {"script_name": "/api/v1", "path_info": "/nodes/0000000001/hold",
                                "method": "POST"}
    assert headers["Access-Control-Allow-Origin"] == "*"
    # The app's own routes still answer beside the mount.
    assert call(mounted, "GET", "/health/live")[:1] == (200,)
    assert call(mounted, "GET", "/api/v2")[0] == 404


@pytest.mark.parametrize("prefix", ["api", "/api/", "/", "/a//b"])
def test_bad_mount_prefix_is_refused_naming_it(zk: ZooKeeperClient, prefix: str) -> None:
    with pytest.raises(ValueError, match=f"mounts: prefix {prefix!r}"):
        WebApp(zk, None, mounts={prefix: echo_app})


def test_builder_app_has_no_tables_and_no_page() -> None:
    app = WebApp(None, host="127.0.0.1", port=0, tables=False, registry=CollectorRegistry())
    app.start()
    try:
        assert call(app, "GET", "/")[0] == 404
        assert call(app, "GET", "/node-list")[0] == 404
        assert call(app, "GET", "/metrics")[0] == 200
        assert call(app, "HEAD", "/health/ready")[:1] == (200,)
    finally:
        app.stop()


def test_page_shows_launcher_status(zk: ZooKeeperClient, kazoo_client: KazooClient) -> None:
    kazoo_client.create(
        "/nodepool/components/pool/h0000000000",
        json.dumps({"kind": "pool", "name": "main", "provider_name": "cloud1",
                    "supported_labels": ["small"], "paused": True, "state": "running",
                    "hostname": "h", "id": "h-PoolWorker.cloud1-main-x", "version": "1",
                    "priority": 100, "model_api": 0}).encode(),
        makepath=True, ephemeral=True)
    kazoo_client.create(
        "/nodepool/requests/200-0000000001",
        json.dumps({"state": "requested", "state_time": 1.0, "node_types": ["small"],
                    "requestor": "zuul", "declined_by": ["other-launcher"]}).encode(),
        makepath=True)
    status = [ProviderStatus("cloud1", "open", 2, (PoolStatus("main", True, 4, 4),))]
    app = WebApp(zk, None, host="127.0.0.1", port=0, launcher_status=lambda: status)
    app.start()
    try:
        page = call(app, "GET", "/")[2].decode()
    finally:
        app.stop()
    pool_row = page.split('<tr id="pool-cloud1-main">')[1].split("</tr>")[0]
    assert "st-open" in pool_row and "st-paused" in pool_row and "at quota" in pool_row
    assert "4 / 4" in pool_row
    request_row = page.split('<tr id="request-200-0000000001">')[1].split("</tr>")[0]
    for text in ("zuul", "small", "other-launcher", "every pool that could serve it is paused",
                 "at quota: cloud1/main", "cloud not healthy: cloud1"):
        assert text in request_row, text


def test_port_in_use_is_an_error_at_start(webapp: WebApp) -> None:
    other = WebApp(None, host="127.0.0.1", port=webapp.port, tables=False)
    with pytest.raises(OSError, match="in use"):
        other.start()
    assert not other.ready and other.port == webapp.port
    assert call(webapp, "GET", "/health/live")[0] == 200
