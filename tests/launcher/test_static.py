"""The static driver end to end: real ZooKeeper, real sshd hosts, Zuul's moves with kazoo.

Hosts are sshd servers on loopback ports (a host is identified by name, user and port).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.recipe.lock import Lock

from nodepool_ng.cmd.admin import main as admin_main
from nodepool_ng.config.build import build_provider
from nodepool_ng.drivers.static.registrar import StaticRegistrar
from nodepool_ng.launcher import static_pool
from nodepool_ng.launcher.poolctx import PoolContext
from nodepool_ng.launcher.service import Launcher
from nodepool_ng.launcher.zkview import StoresView
from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.nodes import NodeStore
from nodepool_ng.zk.requests import RequestStore
from tests.fixtures.ports import free_port
from tests.fixtures.sshd import SshdServer
from tests.fixtures.zookeeper import ZooKeeperChroot
from tests.launcher import harness as h

LABELS = [{"name": "small"}, {"name": "big"}, {"name": "other"}]


class StaticEnv:
    def __init__(self, tmp_path: Path, zk: ZooKeeperChroot) -> None:
        self.tmp_path, self.zk = tmp_path, zk
        self.servers: list[SshdServer] = []
        self.launcher: Launcher | None = None

    def sshd(self) -> SshdServer:
        server = SshdServer(self.tmp_path / f"sshd{len(self.servers)}")
        server.start()
        self.servers.append(server)
        return server

    def config(self, providers: list[dict[str, Any]]) -> Path:
        return h.write_config(self.tmp_path / "nodepool.yaml", self.zk, providers, LABELS)

    def start(self, providers: list[dict[str, Any]]) -> Launcher:
        self.launcher = h.start_launcher(self.config(providers), self.tmp_path / "none.yaml")
        return self.launcher

    def stop(self) -> None:
        if self.launcher is not None:
            self.launcher.stop()
        for server in self.servers:
            server.stop()


@pytest.fixture
def env(tmp_path: Path, zk_chroot: ZooKeeperChroot) -> Iterator[StaticEnv]:
    e = StaticEnv(tmp_path, zk_chroot)
    try:
        yield e
    finally:
        e.stop()


def host(server: SshdServer | None, labels: Any, port: int | None = None,
         **extra: Any) -> dict[str, Any]:
    return {
        "name": "127.0.0.1",
        "labels": labels,
        "connection-port": server.port if server else port,
        "timeout": 2,
        **extra,
    }


def static_provider(*hosts: dict[str, Any], name: str = "static",
                    **pool: Any) -> dict[str, Any]:
    return {"name": name, "driver": "static",
            "pools": [{"name": "main", "nodes": list(hosts), **pool}]}


def ready_nodes(kz: KazooClient, port: int | None = None) -> list[dict[str, Any]]:
    """READY node records (with their id as `_id`), of one host port if given."""
    return [{**n, "_id": nid} for nid, n in h.all_nodes(kz).items()
            if n["state"] == "ready" and (port is None or n["connection_port"] == port)]


def test_hosts_are_registered_per_slot_with_upstream_fields(
    env: StaticEnv, kazoo_client: KazooClient
) -> None:
    server = env.sshd()
    env.start([static_provider(host(server, "small big", **{"max-parallel-jobs": 2}),
                               **{"node-attributes": {"rack": "r1"}})])
    nodes = h.wait_for("two slots registered", lambda: len(ready_nodes(kazoo_client)) == 2
                       and ready_nodes(kazoo_client))
    assert sorted(n["slot"] for n in nodes) == [0, 1]
    for node in nodes:
        assert node["provider"] == "static" and node["pool"] == "main"
        assert node["type"] == ["small", "big"]
        assert node["launcher"] == "static driver"
        assert node["hostname"] == node["interface_ip"] == node["external_id"] == "127.0.0.1"
        assert node["public_ipv4"] == "127.0.0.1"
        assert node["username"] == "zuul" and node["connection_port"] == server.port
        assert node["connection_type"] == "ssh" and node["python_path"] == "auto"
        assert sorted(node["host_keys"]) == sorted(server.host_keys)
        assert node["attributes"] == {"rack": "r1"}
        assert node["allocated_to"] is None


def test_request_served_used_and_host_registered_again(
    env: StaticEnv, kazoo_client: KazooClient
) -> None:
    server = env.sshd()
    env.start([static_provider(host(server, ["small"]))])
    (first,) = h.wait_for("registered", lambda: ready_nodes(kazoo_client))
    rid = h.submit_request(kazoo_client, ["small"])
    req = h.wait_request(kazoo_client, rid)
    assert req["state"] == "fulfilled" and req["nodes"] == [first["_id"]]
    used = first["_id"]
    h.accept_and_use(kazoo_client, rid)
    # The used record goes; the same host comes back READY under a new node id, same slot.
    (again,) = h.wait_for("registered again", lambda: h.node(kazoo_client, used) is None
                          and ready_nodes(kazoo_client))
    assert again["_id"] != used and again["slot"] == 0


def test_request_waits_unaccepted_until_a_host_is_free(
    env: StaticEnv, kazoo_client: KazooClient
) -> None:
    """Upstream's static driver does not pause: a request for a busy label stays
    `requested` and other labels are still served."""
    small, big = env.sshd(), env.sshd()
    env.start([static_provider(host(small, ["small"]), host(big, ["big"]))])
    h.wait_for("registered", lambda: len(ready_nodes(kazoo_client)) == 2)
    first = h.submit_request(kazoo_client, ["small"])
    assert h.wait_request(kazoo_client, first)["state"] == "fulfilled"
    waiting = h.submit_request(kazoo_client, ["small"])
    other = h.submit_request(kazoo_client, ["big"])
    assert h.wait_request(kazoo_client, other)["state"] == "fulfilled"
    req = h.request(kazoo_client, waiting)
    assert req is not None and req["state"] == "requested"
    pools = kazoo_client.get_children("/nodepool/components/pool")
    assert pools and all(not h.read(kazoo_client, f"/nodepool/components/pool/{p}")["paused"]
                         for p in pools)
    h.accept_and_use(kazoo_client, first)
    assert h.wait_request(kazoo_client, waiting)["state"] == "fulfilled"


def test_request_larger_than_the_pool_is_declined(
    env: StaticEnv, kazoo_client: KazooClient
) -> None:
    server = env.sshd()
    env.start([static_provider(host(server, ["small"]))])
    h.wait_for("registered", lambda: ready_nodes(kazoo_client))
    rid = h.submit_request(kazoo_client, ["small", "small"])
    req = h.wait_request(kazoo_client, rid)
    assert req["state"] == "failed" and len(req["declined_by"]) == 1


def test_dead_host_is_not_registered_and_joins_once_it_answers(
    env: StaticEnv, kazoo_client: KazooClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port("127.0.0.1")
    env.start([static_provider(host(None, ["small"], port=port, timeout=1))])
    assert env.launcher is not None
    registrar = env.launcher.providers["static"].registrar
    assert registrar is not None
    h.wait_for("a pass that found the host dead", lambda: registrar.passes >= 1)
    assert ready_nodes(kazoo_client) == []
    server = SshdServer(env.tmp_path / "late", port=port)
    server.start()
    env.servers.append(server)
    registrar.retry_after = 0.0
    registrar.wake()
    (node,) = h.wait_for("registered once it answers", lambda: ready_nodes(kazoo_client))
    assert sorted(node["host_keys"]) == sorted(server.host_keys)


def test_host_that_died_is_deregistered_not_handed_out(
    env: StaticEnv, kazoo_client: KazooClient
) -> None:
    dying, alive = env.sshd(), env.sshd()
    env.start([static_provider(host(dying, ["small"], timeout=1), host(alive, ["small"]))])
    h.wait_for("registered", lambda: len(ready_nodes(kazoo_client)) == 2)
    dying.stop()
    for _ in range(2):  # whichever node is tried first, both requests get the live host
        rid = h.submit_request(kazoo_client, ["small"])
        req = h.wait_request(kazoo_client, rid)
        assert req["state"] == "fulfilled"
        (nid,) = req["nodes"]
        assert h.node(kazoo_client, nid)["connection_port"] == alive.port  # type: ignore[index]
        h.accept_and_use(kazoo_client, rid)
    assert ready_nodes(kazoo_client, dying.port) == []


def test_host_key_mismatch_is_refused(env: StaticEnv, kazoo_client: KazooClient) -> None:
    server = env.sshd()
    wrong = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    env.start([static_provider(host(server, ["small"], **{"host-key": wrong}),
                               name="static"),
               static_provider(host(env.sshd(), ["other"]), name="control")])
    h.wait_for("the control host", lambda: ready_nodes(kazoo_client))
    assert env.launcher is not None
    registrar = env.launcher.providers["static"].registrar
    assert registrar is not None
    h.wait_for("a pass", lambda: registrar.passes >= 1)
    assert ready_nodes(kazoo_client, server.port) == []


def test_config_changes_update_add_and_remove_hosts(
    env: StaticEnv, kazoo_client: KazooClient
) -> None:
    keep, drop, add = env.sshd(), env.sshd(), env.sshd()
    launcher = env.start([static_provider(host(keep, ["small"]), host(drop, ["small"]))])
    h.wait_for("registered", lambda: len(ready_nodes(kazoo_client)) == 2)
    (kept,) = ready_nodes(kazoo_client, keep.port)
    env.config([static_provider(host(keep, ["small", "big"]),
                                host(add, ["big"], **{"max-parallel-jobs": 2}))])
    launcher.apply_config(launcher.watcher.load())

    def settled() -> bool:
        nodes = ready_nodes(kazoo_client)
        ports = sorted(n["connection_port"] for n in nodes)
        updated = h.node(kazoo_client, kept["_id"])  # the same record, rewritten in place
        return (ports == sorted([keep.port, add.port, add.port]) and updated is not None
                and updated["type"] == ["small", "big"])

    h.wait_for("hosts added, updated and removed", settled)


def test_unresolvable_name_is_reported_not_registered(
    env: StaticEnv, kazoo_client: KazooClient, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad = {"name": "no-such-host.invalid", "labels": ["small"], "host-key-checking": False,
           "host-key": "ssh-ed25519 AAAA"}
    resolve = socket.getaddrinfo

    def no_dns(host: Any, *args: Any, **kwargs: Any) -> Any:
        # No resolver round trip in a test: the name fails as it would with real DNS.
        if host == bad["name"]:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    env.start([static_provider(bad)])
    assert env.launcher is not None
    registrar = env.launcher.providers["static"].registrar
    assert registrar is not None
    h.wait_for("a pass", lambda: registrar.passes >= 1)
    assert ready_nodes(kazoo_client) == []
    assert any("cannot resolve" in r.getMessage() for r in caplog.records)


def test_admin_cli_hold_and_delete_now_of_a_static_node(
    env: StaticEnv, kazoo_client: KazooClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """`nodepool hold` keeps the host's slot taken; `nodepool delete --now` removes the
    record without any cloud (the driver has none) and the host comes back READY."""
    server = env.sshd()
    env.start([static_provider(host(server, ["small"]))])
    (node,) = h.wait_for("registered", lambda: ready_nodes(kazoo_client))
    config = str(env.tmp_path / "nodepool.yaml")
    assert admin_main(["-c", config, "hold", node["_id"]]) == 0
    assert h.node(kazoo_client, node["_id"])["state"] == "hold"  # type: ignore[index]
    assert env.launcher is not None
    registrar = env.launcher.providers["static"].registrar
    assert registrar is not None
    passes = registrar.passes
    registrar.wake()
    h.wait_for("a registrar pass", lambda: registrar.passes > passes)
    assert ready_nodes(kazoo_client) == []  # the held node keeps the slot
    capsys.readouterr()
    assert admin_main(["-c", config, "--json", "delete", "--now", node["_id"]]) == 0
    assert "deleted" in capsys.readouterr().out
    (again,) = h.wait_for("registered again", lambda: ready_nodes(kazoo_client))
    assert again["_id"] != node["_id"] and h.node(kazoo_client, node["_id"]) is None


def test_registrar_refills_a_slot_whose_node_went_before_it_looked_again(
    zk_chroot: ZooKeeperChroot, kazoo_client: KazooClient, tmp_path: Path
) -> None:
    """Passes driven by hand: a node registered, then used and deleted before the next pass
    (the cache never showed it to the registrar) leaves its slot free, not "pending"."""
    server = SshdServer(tmp_path / "sshd")
    server.start()
    client = ZooKeeperClient(zk_chroot.hosts, operation_timeout=5.0)
    client.start(timeout=10)
    nodes = NodeStore(client)
    try:
        assert nodes.start_cache(timeout=10)
        view = StoresView(nodes, RequestStore(client), list)
        provider = build_provider(static_provider(host(server, ["small"])))
        registrar = StaticRegistrar(provider, view)
        registrar.run_once()
        (first,) = kazoo_client.get_children("/nodepool/nodes")
        kazoo_client.delete(f"/nodepool/nodes/{first}", recursive=True)
        h.wait_for("deletion cached", lambda: nodes.cached_node(first) is None)
        registrar.run_once()
        (second,) = h.wait_for("slot refilled", lambda: [
            n for n in kazoo_client.get_children("/nodepool/nodes") if n != "lock"])
        assert second != first
        assert h.node(kazoo_client, second)["slot"] == 0  # type: ignore[index]
        registrar.on_stop()
    finally:
        nodes.stop_cache()
        client.stop()
        server.stop()


def test_a_dead_host_does_not_hold_up_registering_the_others(
    env: StaticEnv, kazoo_client: KazooClient
) -> None:
    dead_port = free_port("127.0.0.1")
    alive = env.sshd()
    env.start([static_provider(host(None, ["small"], port=dead_port, timeout=5),
                               host(alive, ["small"]))])
    assert env.launcher is not None
    registrar = env.launcher.providers["static"].registrar
    assert registrar is not None
    h.wait_for("the live host", lambda: ready_nodes(kazoo_client, alive.port))
    assert registrar.passes == 0  # registered while the pass still waits on the dead host


def test_planned_host_taken_meanwhile_gives_the_request_back(
    env: StaticEnv, kazoo_client: KazooClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between planning and locking, someone locks the planned node: the request goes back
    to `requested` (not a paused pool) and is served once the node is free."""
    server = env.sshd()
    locks: list[Lock] = []
    original = static_pool.hosts_alive

    def racing(ctx: PoolContext, node_ids: Iterable[str]) -> bool:
        node_ids = list(node_ids)
        if not locks:
            for node_id in node_ids:
                lock = Lock(kazoo_client, f"/nodepool/nodes/{node_id}/lock")
                assert lock.acquire(timeout=10)
                locks.append(lock)
        return original(ctx, node_ids)

    monkeypatch.setattr(static_pool, "hosts_alive", racing)
    env.start([static_provider(host(server, ["small"]))])
    h.wait_for("registered", lambda: ready_nodes(kazoo_client))
    rid = h.submit_request(kazoo_client, ["small"])
    states: list[tuple[str, int]] = []  # (state, znode version)

    def seen(data: bytes | None, stat: Any) -> None:
        if data is not None:
            states.append((json.loads(data)["state"], stat.version))

    kazoo_client.DataWatch(f"/nodepool/requests/{rid}", seen)
    h.wait_for("the race", lambda: locks)
    # Accepted (pending), then given back (requested) rather than held by a paused pool. A
    # watch may miss the short `pending` (it reads the znode after the event): `requested`
    # at version 2 or later was written after it (created at 0; only our launcher writes).
    h.wait_for("given back", lambda: any(
        state == "requested" and version >= 2 for state, version in states))
    pools = kazoo_client.get_children("/nodepool/components/pool")
    assert not any(h.read(kazoo_client, f"/nodepool/components/pool/{p}")["paused"]
                   for p in pools)
    locks[0].release()
    assert h.wait_request(kazoo_client, rid)["state"] == "fulfilled"
