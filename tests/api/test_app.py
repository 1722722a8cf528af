"""The WSGI app without a launcher (werkzeug's test client): the answers that need no
ZooKeeper: 503 until the launcher is connected, 401 first, 405, the description."""

from __future__ import annotations

from werkzeug.test import Client

from nodepool_ng.api.app import ApiApp
from nodepool_ng.config.loader import config_from_dicts
from tests.api.conftest import SECRET

CONFIG = config_from_dicts({"labels": [{"name": "small"}],
                            "webapp": {"api-tokens": [{"name": "ci", "secret": SECRET}]}})
AUTH = {"Authorization": f"Bearer {SECRET}"}


def _client() -> Client:
    return Client(ApiApp(lambda: None, lambda: CONFIG))


def test_not_connected_yet() -> None:
    client = _client()
    response = client.get("/requests", headers=AUTH)
    assert response.status_code == 503
    assert response.json == {"error": "the launcher is not connected to ZooKeeper yet",
                             "field": None}
    # Authentication comes first: a stranger learns nothing about the launcher.
    assert client.get("/requests").status_code == 401


def test_wrong_method() -> None:
    response = _client().put("/requests", headers=AUTH)
    assert response.status_code == 405 and response.json is not None
    assert "method not allowed" in response.json["error"]


def test_openapi_served_where_mounted() -> None:
    response = _client().get("/openapi.json", environ_overrides={"SCRIPT_NAME": "/api/v1"})
    assert response.status_code == 200
    spec = response.json
    assert spec is not None and spec["servers"] == [{"url": "/api/v1"}]
    assert set(spec["paths"]) == {"/requests", "/requests/{id}", "/requests/{id}/renew",
                                  "/openapi.json"}
