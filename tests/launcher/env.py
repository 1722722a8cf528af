"""Shared fixtures for the launcher's acceptance-gap tests: simcloud + in-process launchers.

`make_env(clouds)` starts simcloud with the given cloud entries; `Env.start()` writes the
config and starts a Launcher (the harness's fast options). Everything is stopped afterwards.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nodepool_ng.launcher.service import Launcher
from nodepool_ng.simcloud.service import SimCloudService
from tests.fixtures.zookeeper import ZooKeeperChroot
from tests.launcher import harness as h


class Env:
    def __init__(self, tmp_path: Path, zk: ZooKeeperChroot) -> None:
        self.tmp_path, self.zk = tmp_path, zk
        self.clouds_yaml = tmp_path / "clouds.yaml"
        self.sim: SimCloudService | None = None
        self.launchers: list[Launcher] = []

    def clouds(self, clouds: Iterable[dict[str, Any]]) -> SimCloudService:
        self.sim = h.start_clouds(clouds, self.clouds_yaml)
        return self.sim

    def config(self, providers: list[dict], labels: list[dict] | None = None) -> Path:
        return h.write_config(self.tmp_path / "nodepool.yaml", self.zk, providers, labels)

    def start(
        self, providers: list[dict], labels: list[dict] | None = None, **options: Any
    ) -> Launcher:
        launcher = h.start_launcher(self.config(providers, labels), self.clouds_yaml, **options)
        self.launchers.append(launcher)
        return launcher

    def stop(self) -> None:
        for launcher in self.launchers:
            launcher.stop()
        if self.sim is not None:
            self.sim.stop()


def random_cidr() -> str:
    """A /28 in 127.16-95.x.x (simcloud's defaults use 127.100+), random so parallel tests
    do not share addresses. simcloud hands out .2 first (.1 is the gateway)."""
    return f"127.{random.randint(16, 95)}.{random.randint(0, 255)}.{16 * random.randint(0, 15)}/28"


def first_address(cidr: str) -> str:
    a, b, c, d = cidr.split("/")[0].split(".")
    return f"{a}.{b}.{c}.{int(d) + 2}"
