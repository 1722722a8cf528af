"""`systemctl reload` (SIGHUP) re-reads the config of the real daemons and keeps them alive.

Each daemon runs as its console script with the periodic config check set to an hour, so
only the SIGHUP can make it notice the edit.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kazoo.client import KazooClient

from tests.builder.support import diskimage
from tests.builder.support import write_config as write_builder_config
from tests.fixtures.zookeeper import ZooKeeperChroot
from tests.launcher import harness as h

BIN = Path(sys.executable).parent
NO_PERIODIC_CHECK = ["--config-interval", "3600"]


class Daemon:
    """A console script in the foreground, its output in a log file."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
        """Like harness.wait_for, but fails at once (with the log) if the process died."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError(f"died with {rc} waiting for {what}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.output()}")
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    try:
        yield started
    finally:
        for d in started:
            if d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait()


def pool_providers(kz: KazooClient) -> set[str]:
    root = "/nodepool/components/pool"
    if not kz.exists(root):
        return set()
    out = set()
    for child in kz.get_children(root):
        try:
            data, _ = kz.get(f"{root}/{child}")
        except Exception:
            continue  # unregistered meanwhile
        out.add(json.loads(data)["provider_name"])
    return out


@pytest.mark.slow
def test_sighup_reloads_the_launcher_config(
    tmp_path: Path, zk_chroot: ZooKeeperChroot, kazoo_client: KazooClient,
    daemons: list[Daemon],
) -> None:
    clouds_yaml = tmp_path / "clouds.yaml"
    sim = h.start_clouds([{"name": "cloud1"}, {"name": "cloud2"}], clouds_yaml)
    try:
        config = h.write_config(tmp_path / "nodepool.yaml", zk_chroot,
                                [h.provider("p1", "cloud1")])
        launcher = Daemon(
            [str(BIN / "nodepool-launcher"), "-f", "-c", str(config), "--no-webapp",
             "--clouds-yaml", str(clouds_yaml), *NO_PERIODIC_CHECK],
            tmp_path / "launcher.log",
        )
        daemons.append(launcher)
        launcher.wait_for("pool of p1", lambda: pool_providers(kazoo_client) == {"p1"})

        h.write_config(config, zk_chroot,
                       [h.provider("p1", "cloud1"), h.provider("p2", "cloud2")])
        launcher.proc.send_signal(signal.SIGHUP)
        launcher.wait_for("pool of p2 after SIGHUP",
                          lambda: pool_providers(kazoo_client) == {"p1", "p2"})
        assert launcher.proc.poll() is None
        assert "reloading on SIGHUP" in launcher.output()
        assert launcher.stop() == 0
    finally:
        sim.stop()


@pytest.mark.slow
def test_sighup_reloads_the_builder_config(
    tmp_path: Path, zk_chroot: ZooKeeperChroot, kazoo_client: KazooClient,
    daemons: list[Daemon],
) -> None:
    # Paused images: nothing is built, but the builder watches each configured image.
    first = diskimage("first", pause=True)
    config = write_builder_config(tmp_path, zk_chroot, [first])
    builder = Daemon(
        [str(BIN / "nodepool-builder"), "-f", "-c", str(config), *NO_PERIODIC_CHECK],
        tmp_path / "builder.log",
    )
    daemons.append(builder)
    builder.wait_for("builder registered", lambda: kazoo_client.exists("/nodepool/images/first")
                     and kazoo_client.exists("/nodepool/components/builder")
                     and kazoo_client.get_children("/nodepool/components/builder"))

    write_builder_config(tmp_path, zk_chroot, [first, diskimage("second", pause=True)])
    assert yaml.safe_load(config.read_text())["diskimages"][1]["name"] == "second"
    builder.proc.send_signal(signal.SIGHUP)
    builder.wait_for("image 'second' watched after SIGHUP",
                     lambda: kazoo_client.exists("/nodepool/images/second"))
    assert builder.proc.poll() is None
    assert "reloading on SIGHUP" in builder.output()
    assert builder.stop() == 0
