"""Launcher MQTT events end to end: real ZooKeeper, simcloud over HTTP, real Mosquitto."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kazoo.client import KazooClient
from kazoo.recipe.lock import Lock

from nodepool_ng.launcher.service import Launcher
from nodepool_ng.simcloud.service import SimCloudService
from tests.fixtures.mosquitto import Message, Mosquitto, mosquitto  # noqa: F401 (fixture)
from tests.fixtures.ports import free_port
from tests.fixtures.zookeeper import ZooKeeperChroot
from tests.launcher import harness as h


class Env:
    def __init__(self, tmp_path: Path, zk: ZooKeeperChroot) -> None:
        self.tmp_path, self.zk = tmp_path, zk
        self.sim: SimCloudService = h.start_clouds([{"name": "cloud1"}], tmp_path / "clouds.yaml")
        self.launchers: list[Launcher] = []

    def start(self, mqtt: dict[str, Any]) -> Launcher:
        path = h.write_config(
            self.tmp_path / "nodepool.yaml", self.zk, [h.provider("p1", "cloud1")]
        )
        cfg = yaml.safe_load(path.read_text())
        cfg["mqtt"] = mqtt
        path.write_text(yaml.safe_dump(cfg))
        launcher = h.start_launcher(path, self.tmp_path / "clouds.yaml")
        self.launchers.append(launcher)
        # Only the stats election leader publishes: wait until this launcher leads.
        assert launcher.election.wait_leader(10)
        return launcher

    def stop(self) -> None:
        for launcher in self.launchers:
            launcher.stop()
        self.sim.stop()


@pytest.fixture
def env(tmp_path: Path, zk_chroot: ZooKeeperChroot) -> Iterator[Env]:
    e = Env(tmp_path, zk_chroot)
    try:
        yield e
    finally:
        e.stop()


def set_state(kz: KazooClient, nid: str, state: str) -> None:
    data = h.node(kz, nid)
    assert data is not None
    data["state"] = state
    kz.set(f"/nodepool/nodes/{nid}", json.dumps(data).encode())


def test_node_and_request_transitions_arrive_as_events(
    env: Env,
    kazoo_client: KazooClient,
    mosquitto: Mosquitto,  # noqa: F811
) -> None:
    sub = mosquitto.subscriber("ci/nodepool/#")
    launcher = env.start(
        {"host": mosquitto.host, "port": mosquitto.port, "topic-prefix": "ci/nodepool", "qos": 1}
    )
    assert launcher.events is not None and launcher.events.publisher.wait_connected(10)

    rid = h.submit_request(kazoo_client, ["small"])
    req = h.wait_request(kazoo_client, rid)
    assert req["state"] == "fulfilled"
    (nid,) = req["nodes"]
    stored = h.node(kazoo_client, nid)
    assert stored is not None

    def node_event(state: str) -> Message:
        return sub.wait_for(
            lambda m: m.topic == f"ci/nodepool/node/{state}" and m.payload["id"] == nid
        )

    building = node_event("building")
    assert building.payload["provider"] == "p1" and building.payload["labels"] == ["small"]
    ready = node_event("ready")
    assert ready.payload["previous_state"] == "building"
    assert ready.payload["pool"] == "main"
    assert ready.payload["external_id"] == stored["external_id"]
    assert ready.payload["interface_ip"] == stored["interface_ip"]
    assert ready.payload["allocated_to"] == rid
    fulfilled = sub.wait_for(lambda m: m.topic == "ci/nodepool/request/fulfilled")
    assert fulfilled.payload["id"] == rid
    assert fulfilled.payload["nodes"] == [nid]
    assert fulfilled.payload["node_types"] == ["small"]
    assert fulfilled.payload["requestor"] == "zuul-scheduler-1"
    assert fulfilled.payload["previous_state"] == "pending"

    # Zuul's moves, one at a time so each is its own transition.
    lock = Lock(kazoo_client, f"/nodepool/nodes/{nid}/lock")
    assert lock.acquire(timeout=10)
    kazoo_client.delete(f"/nodepool/requests/{rid}")
    assert sub.wait_for(lambda m: m.topic == "ci/nodepool/request/deleted").payload["id"] == rid
    set_state(kazoo_client, nid, "in-use")
    assert node_event("in-use").payload["previous_state"] == "ready"
    set_state(kazoo_client, nid, "used")
    assert node_event("used").payload["previous_state"] == "in-use"
    lock.release()
    deleted = node_event("deleted")
    assert deleted.payload["previous_state"] in ("used", "deleting")
    assert deleted.payload["external_id"] == stored["external_id"]

    node_states = [m.payload["state"] for m in sub.messages() if m.payload.get("id") == nid]
    for before, after in (
        ("building", "ready"),
        ("ready", "in-use"),
        ("in-use", "used"),
        ("used", "deleted"),
    ):
        assert node_states.index(before) < node_states.index(after)
    assert launcher.events.publisher.dropped == 0


def test_broker_down_launcher_still_serves_and_counts_drops(
    env: Env, kazoo_client: KazooClient
) -> None:
    launcher = env.start({"host": "127.0.0.1", "port": free_port()})
    assert launcher.events is not None
    rid = h.submit_request(kazoo_client, ["small"])
    assert h.wait_request(kazoo_client, rid)["state"] == "fulfilled"
    h.accept_and_use(kazoo_client, rid)
    h.wait_for("node deleted", lambda: not h.all_nodes(kazoo_client))
    publisher = launcher.events.publisher
    h.wait_for("events dropped", lambda: publisher.dropped >= 4)
    assert publisher.published == 0 and not publisher.connected
