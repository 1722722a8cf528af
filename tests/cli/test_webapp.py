"""The status web app over real HTTP, reading real ZooKeeper records."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient

from nodepool_ng.web.server import WebApp
from nodepool_ng.zk.client import ZooKeeperClient
from tests.cli.conftest import write_node
from tests.fixtures.zookeeper import ZooKeeperChroot


@pytest.fixture
def zk(zk_chroot: ZooKeeperChroot) -> Iterator[ZooKeeperClient]:
    client = ZooKeeperClient(zk_chroot.hosts)
    client.start()
    try:
        yield client
    finally:
        client.stop()


@pytest.fixture
def webapp(zk: ZooKeeperClient) -> Iterator[WebApp]:
    app = WebApp(zk, lambda: None, host="127.0.0.1", port=0)
    app.start()
    try:
        yield app
    finally:
        app.stop()


def get(app: WebApp, path: str, accept: str | None = None) -> tuple[int, dict[str, str], str]:
    req = urllib.request.Request(f"http://127.0.0.1:{app.port}{path}")
    if accept:
        req.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def test_node_list_text_json_and_fields(webapp: WebApp, kazoo_client: KazooClient) -> None:
    write_node(kazoo_client, "0000000001")
    write_node(kazoo_client, "0000000002", type=["large"], provider="cloud2", state="in-use")
    kazoo_client.create("/nodepool/nodes/0000000002/lock/abc-lock-0000000000", b"", makepath=True)

    status, headers, body = get(webapp, "/node-list")
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Content-Type"].startswith("text/plain")
    assert "| ID " in body and "| Driver Data |" in body and "0000000002" in body

    status, headers, body = get(webapp, "/node-list", accept="application/json")
    rows = json.loads(body)
    assert headers["Content-Type"].startswith("application/json")
    assert [(r["id"], r["label"], r["locked"]) for r in rows] == [
        ("0000000001", ["small"], "unlocked"),
        ("0000000002", ["large"], "locked"),
    ]
    assert isinstance(rows[0]["age"], int)
    assert rows[0]["server_id"] == "server-0000000001"

    _s, _h, body = get(webapp, "/node-list.json?fields=id,state&node_id=0000000002")
    assert json.loads(body) == [{"id": "0000000002", "state": "in-use"}]


def test_request_and_label_lists(webapp: WebApp, kazoo_client: KazooClient) -> None:
    kazoo_client.create(
        "/nodepool/requests/200-0000000007",
        json.dumps(
            {
                "state": "requested",
                "state_time": 1.0,
                "node_types": ["small", "small"],
                "requestor": "zuul-sched",
                "requestor_data": {},
                "provider": None,
                "relative_priority": 3,
                "event_id": "ev1",
                "tenant_name": "t",
            }
        ).encode(),
        makepath=True,
    )
    pool = {
        "hostname": "h",
        "state": "running",
        "kind": "pool",
        "version": "1",
        "model_api": 0,
        "id": "h-PoolWorker.cloud1-main-x",
        "name": "main",
        "provider_name": "cloud1",
        "supported_labels": ["small", "large"],
        "priority": 100,
        "paused": False,
    }
    kazoo_client.create(
        "/nodepool/components/pool/h0000000000",
        json.dumps(pool).encode(),
        makepath=True,
        ephemeral=True,
    )

    _s, _h, body = get(webapp, "/request-list", accept="application/json")
    assert json.loads(body) == [
        {
            "id": "200-0000000007",
            "relative_priority": 3,
            "state": "requested",
            "requestor": "zuul-sched",
            "node_types": ["small", "small"],
            "nodes": [],
            "declined_by": [],
            "event_id": "ev1",
        }
    ]
    _s, _h, body = get(webapp, "/label-list.json")
    assert json.loads(body) == [{"label": "large"}, {"label": "small"}]
    _s, _h, body = get(webapp, "/label-list")
    assert body.splitlines()[1] == "| Label |"


def test_image_endpoints(webapp: WebApp, kazoo_client: KazooClient) -> None:
    build = {"state": "ready", "state_time": 5.0, "builder": "b1", "formats": "qcow2,raw"}
    kazoo_client.create(
        "/nodepool/images/debian/builds/abc123", json.dumps(build).encode(), makepath=True
    )
    upload = {
        "state": "ready",
        "state_time": 6.0,
        "external_id": "img-1",
        "external_name": "debian-1700000000",
        "format": "qcow2",
    }
    kazoo_client.create(
        "/nodepool/images/debian/builds/abc123/providers/cloud1/images/0000000000",
        json.dumps(upload).encode(),
        makepath=True,
    )
    kazoo_client.create("/nodepool/images/debian/pause", b"")
    kazoo_client.create("/nodepool/images/debian/request-build", b"")

    _s, _h, body = get(webapp, "/dib-image-list.json")
    assert json.loads(body) == [
        {
            "id": "debian-abc123",
            "image": "debian",
            "builder": "b1",
            "formats": ["qcow2", "raw"],
            "state": "paused",
            "age": 5,
        }
    ]
    _s, _h, body = get(webapp, "/image-list.json")
    assert json.loads(body) == [
        {
            "id": "abc123",
            "upload_id": "0000000000",
            "provider": "cloud1",
            "image": "debian",
            "external_name": "debian-1700000000",
            "external_id": "img-1",
            "state": "ready",
            "age": 6,
        }
    ]
    _s, _h, body = get(webapp, "/image-status", accept="application/json")
    (row,) = json.loads(body)
    assert (row["image"], row["paused"], row["build_request"]) == ("debian", True, "pending")
    assert isinstance(row["build_request_age"], int)


def test_ready_unknown_path_and_cache(webapp: WebApp, kazoo_client: KazooClient) -> None:
    assert get(webapp, "/ready")[0] == 200
    assert get(webapp, "/ready")[2] == "OK"
    assert get(webapp, "/nope")[0] == 404
    assert get(webapp, "/node-list.xml")[0] == 404
    # The cache answers repeated queries from memory: a node written after a query is not in
    # the cached answer, but is in a differently-keyed query. (A long TTL keeps this exact.)
    webapp.cache.ttl = 600
    before = json.loads(get(webapp, "/node-list.json")[2])
    write_node(kazoo_client, "0000000009")
    assert json.loads(get(webapp, "/node-list.json")[2]) == before
    assert [r["id"] for r in json.loads(get(webapp, "/node-list.json?fields=id")[2])] == [
        "0000000009"
    ]


def test_ready_is_503_before_start(zk: ZooKeeperClient) -> None:
    app = WebApp(zk, None, host="127.0.0.1", port=0)
    assert app.respond("/ready", "")[0] == 503
    app.start()
    try:
        assert app.respond("/ready", "")[0] == 200
    finally:
        app.stop()
    assert app.respond("/ready", "")[0] == 503


def test_zookeeper_trouble_is_503(zk_chroot: ZooKeeperChroot) -> None:
    client = ZooKeeperClient(zk_chroot.hosts, operation_timeout=0.5)
    client.start()
    app = WebApp(client, None, host="127.0.0.1", port=0)
    app.start()
    try:
        client.stop()  # the session is gone: every read fails after the operation timeout
        status, headers, body = get(app, "/node-list")
        assert status == 503
        assert "ZooKeeper" in body
        assert headers["Access-Control-Allow-Origin"] == "*"
    finally:
        app.stop()
