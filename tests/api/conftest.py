"""The REST request API's test environment: simcloud, an in-process launcher whose config
has API tokens, and the launcher's web app (the `/api/v1` mount `cmd.launcher.web_mounts`
builds) on a free loopback port, called over HTTP."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import requests
import yaml

from nodepool_ng.cmd.launcher import web_mounts
from nodepool_ng.launcher.service import Launcher, LauncherOptions
from nodepool_ng.simcloud.service import SimCloudService
from nodepool_ng.web.server import WebApp
from tests.fixtures.zookeeper import ZooKeeperChroot
from tests.launcher import harness as h

SECRET = "s3cret-ci-token-0123456789"  # token "ci": every label, no limit
LIMITED_SECRET = "s3cret-limited-token-0123456789"  # token "limited": small only, 2 nodes
TOKENS: list[dict[str, Any]] = [
    {"name": "ci", "secret": SECRET},
    {"name": "limited", "secret": LIMITED_SECRET, "labels": ["small"], "max-nodes": 2},
]


def write_api_config(path: Path, zk: ZooKeeperChroot, providers: list[dict[str, Any]],
                     tokens: list[dict[str, Any]] | None) -> Path:
    """The harness's nodepool.yaml plus `webapp.api-tokens`."""
    h.write_config(path, zk, providers)
    cfg = yaml.safe_load(path.read_text())
    if tokens is not None:
        cfg["webapp"] = {"api-tokens": tokens}
    path.write_text(yaml.safe_dump(cfg))
    return path


class Api:
    """HTTP calls to one web app's `/api/v1`."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = requests.Session()

    def call(self, method: str, path: str, secret: str | None = SECRET,
             timeout: float = 70.0, **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if secret is not None:
            headers["Authorization"] = f"Bearer {secret}"
        return self.session.request(method, self.base + path, headers=headers,
                                    timeout=timeout, **kwargs)

    def create(self, labels: list[str], lease_seconds: int = 60, secret: str = SECRET,
               **fields: Any) -> requests.Response:
        return self.call("POST", "/requests", secret,
                         json={"labels": labels, "lease_seconds": lease_seconds, **fields})

    def wait_state(self, lease_id: str, states: tuple[str, ...], timeout: float = 30.0,
                   secret: str = SECRET) -> dict[str, Any]:
        """Long-poll until the lease is in one of `states`."""
        view: dict[str, Any] = {}

        def reached() -> bool:
            nonlocal view
            response = self.call("GET", f"/requests/{lease_id}", secret,
                                 params={"wait": 5})
            assert response.status_code == 200, response.text
            view = response.json()
            return view["state"] in states

        h.wait_for(f"lease {lease_id} in {states}", reached, timeout)
        return view


class ApiEnv:
    def __init__(self, tmp_path: Path, zk: ZooKeeperChroot) -> None:
        self.tmp_path, self.zk = tmp_path, zk
        self.clouds_yaml = tmp_path / "clouds.yaml"
        self.sim: SimCloudService | None = None
        self.launcher: Launcher | None = None
        self.web: WebApp | None = None

    def start(self, tokens: list[dict[str, Any]] | None = None, secure: Path | None = None,
              providers: list[dict[str, Any]] | None = None,
              cloud: dict[str, Any] | None = None, **options: Any) -> Api:
        """`cloud`: simcloud's cloud1 entry (e.g. a boot_delay)."""
        self.sim = h.start_clouds([{"name": "cloud1", **(cloud or {})}], self.clouds_yaml)
        cfg = write_api_config(self.tmp_path / "nodepool.yaml", self.zk,
                               providers or [h.provider("p1", "cloud1", ("small", "big"))],
                               TOKENS if tokens is None else tokens)
        opts = LauncherOptions(hostname=f"test-{uuid.uuid4().hex[:6]}",
                               clouds_yaml=str(self.clouds_yaml), **{**h.FAST, **options})
        self.launcher = Launcher(str(cfg), str(secure) if secure else None, options=opts)
        self.launcher.start()
        launcher = self.launcher
        self.web = WebApp(lambda: launcher.zk_client, lambda: launcher.config,
                          host="127.0.0.1", port=0, mounts=web_mounts(launcher))
        self.web.start()
        return Api(f"http://127.0.0.1:{self.web.port}/api/v1")

    def servers(self) -> list[Any]:
        assert self.sim is not None
        return h.servers(self.sim, "cloud1")

    def stop(self) -> None:
        if self.web is not None:
            self.web.stop()
        if self.launcher is not None:
            self.launcher.stop()
        if self.sim is not None:
            self.sim.stop()
