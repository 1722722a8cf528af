"""`nodepool-launcher --provider NAME`: several launchers share one config, each running
its own providers (one process per provider: one core each)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from nodepool_ng.errors import ConfigError
from nodepool_ng.launcher.service import Launcher
from tests.launcher import harness as h
from tests.launcher.env import Env


def start(env: Env, only: set[str], config: list[dict] | None = None) -> Launcher:
    """A launcher on the shared config running only the providers `only`."""
    launcher = h.start_launcher(env.config(config or providers()), env.clouds_yaml,
                                providers=frozenset(only))
    env.launchers.append(launcher)
    return launcher


def providers() -> list[dict]:
    return [h.provider("p1", "cloud1", labels=("small",)),
            h.provider("p2", "cloud2", labels=("big",))]


def test_each_launcher_runs_only_its_providers(env: Env, kazoo_client: KazooClient) -> None:
    env.clouds([{"name": "cloud1"}, {"name": "cloud2"}])
    first, second = start(env, {"p1"}), start(env, {"p2"})
    assert set(first.providers) == {"p1"} and set(second.providers) == {"p2"}
    small = h.submit_request(kazoo_client, ["small"])
    big = h.submit_request(kazoo_client, ["big"])
    for rid, provider in ((small, "p1"), (big, "p2")):
        req = h.wait_request(kazoo_client, rid)
        assert req["state"] == "fulfilled"
        assert h.node(kazoo_client, req["nodes"][0])["provider"] == provider  # type: ignore[index]
    # A reload keeps the selection: p2 changes, the first launcher still runs p1 alone.
    changed = providers()
    changed[1]["boot-timeout"] = 90
    env.config(changed)
    first.apply_config(first.watcher.load())
    assert set(first.providers) == {"p1"}


def test_unknown_provider_is_refused_at_start(env: Env, tmp_path: Path) -> None:
    env.clouds([{"name": "cloud1"}, {"name": "cloud2"}])
    with pytest.raises(ConfigError, match=r"providers \['p9'\] are not in"):
        start(env, {"p1", "p9"})
    proc = subprocess.run(
        [sys.executable, "-m", "nodepool_ng.cmd.launcher", "-c", str(env.config(providers())),
         "-f", "--no-webapp", "--provider", "p9"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "providers ['p9'] are not in" in proc.stderr


def test_min_ready_is_kept_by_one_process_only(env: Env, kazoo_client: KazooClient) -> None:
    """Both providers serve `small`: only the process running the first of them (by name)
    asks for min-ready nodes, so they never both fill the same gap."""
    env.clouds([{"name": "cloud1"}, {"name": "cloud2"}])
    both = [h.provider("p1", "cloud1", labels=("small",)),
            h.provider("p2", "cloud2", labels=("small",))]
    labels = [{"name": "small", "min-ready": 2}]

    def start_one(only: str) -> Launcher:
        launcher = h.start_launcher(env.config(both, labels), env.clouds_yaml,
                                    providers=frozenset({only}))
        env.launchers.append(launcher)
        return launcher

    first, second = start_one("p1"), start_one("p2")
    assert first._min_ready_wanted() == {"small": 2}
    assert second._min_ready_wanted() == {}

    def ready() -> list[dict]:
        return [n for n in h.all_nodes(kazoo_client).values()
                if n["state"] == "ready" and not n["allocated_to"]]

    h.wait_for("min-ready reached", lambda: len(ready()) == 2)
    passes = first.min_ready.passes
    first.min_ready.wake()
    second.min_ready.wake()
    h.wait_for("another min-ready pass", lambda: first.min_ready.passes > passes)
    assert len(ready()) == 2
