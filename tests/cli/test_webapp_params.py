"""Bad query parameters of the status web app: 400 naming the parameter, never a 500.

Over real HTTP against real ZooKeeper records (fixtures of test_webapp.py).
"""

from __future__ import annotations

import json

import pytest
from kazoo.client import KazooClient

from nodepool_ng.web.server import WebApp
from tests.cli import test_webapp as base
from tests.cli.conftest import write_node

# The web app on the test's ZooKeeper chroot, and the HTTP helper, as in test_webapp.py.
zk, webapp, get = base.zk, base.webapp, base.get

BAD_NODE_IDS = ["../../x", "..", ".", "a/b", "/", "a%00b", "x%01", "x%7F", "%ED%A0%80",
                "%FF%FE"]


@pytest.mark.parametrize("node_id", BAD_NODE_IDS)
def test_node_id_that_is_not_a_znode_name_is_400(webapp: WebApp, node_id: str) -> None:
    status, headers, body = get(webapp, f"/node-list?node_id={node_id}")
    assert status == 400, body
    assert headers["Content-Type"].startswith("text/plain")
    assert body.startswith("node_id: "), body
    status, headers, body = get(webapp, f"/node-list.json?node_id={node_id}")
    assert status == 400, body
    assert json.loads(body)["error"].startswith("node_id: ")


def test_node_id_given_twice_is_400(webapp: WebApp) -> None:
    status, _h, body = get(webapp, "/node-list?node_id=0000000001&node_id=0000000002")
    assert (status, body.split(":")[0]) == (400, "node_id")


@pytest.mark.parametrize("path", ["/node-list?fields=id,nope", "/label-list.json?fields=nope",
                                  "/image-status?fields=id"])
def test_unknown_field_is_400_naming_it(webapp: WebApp, path: str) -> None:
    status, _h, body = get(webapp, path)
    assert status == 400, body
    text = json.loads(body)["error"] if ".json" in path else body
    assert text.startswith("fields: unknown column ")


def test_good_parameters_still_answer(webapp: WebApp, kazoo_client: KazooClient) -> None:
    write_node(kazoo_client, "0000000001")
    # Unknown parameters (a dashboard's cache buster) are ignored, as before.
    status, _h, body = get(webapp, "/node-list.json?node_id=0000000001&fields=id,state&_=17")
    assert status == 200, body
    assert json.loads(body) == [{"id": "0000000001", "state": "ready"}]
    status, _h, body = get(webapp, "/node-list.json?node_id=0000000009")
    assert (status, json.loads(body)) == (200, [])
