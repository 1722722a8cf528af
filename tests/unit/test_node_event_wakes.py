"""Which pool workers a node cache event wakes: its provider's only (their handlers, READY
nodes to claim and the provider's usage are all a node's change can concern), every pool
when the node is gone (it may free a tenant's resource limits anywhere)."""

from __future__ import annotations

import threading
from typing import Any

from nodepool_ng.launcher.node_index import NodeIndex
from nodepool_ng.launcher.service import _Listeners
from nodepool_ng.model.node import Node, NodeState


class Providers:
    def __init__(self) -> None:
        self.woken: list[str | None] = []
        self.seen: list[tuple[str, str | None]] = []

    def node_seen(self, node_id: str, provider: str | None = None) -> None:
        self.seen.append((node_id, provider))

    def wake_pools(self, provider: str | None = None) -> None:
        self.woken.append(provider)

    def registrars(self) -> list[Any]:
        return []


class Worker:
    def __init__(self) -> None:
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1


def test_a_node_change_wakes_its_providers_pools_and_a_removal_wakes_all() -> None:
    providers, deleter, min_ready = Providers(), Worker(), Worker()
    index = NodeIndex()
    listeners = _Listeners(providers, deleter, min_ready, Worker(),  # type: ignore[arg-type]
                           threading.Event(), index, list)
    node = Node(id="0000000001", provider="p1", pool="main", state=NodeState.READY,
                type=["small"])
    listeners.on_node("0000000001", node)
    assert providers.woken == ["p1"] and providers.seen == [("0000000001", "p1")]
    assert index.get("0000000001") is node  # indexed before anyone is woken
    listeners.on_node("0000000001", None)
    assert providers.woken == ["p1", None] and providers.seen[-1] == ("0000000001", None)
    assert deleter.wakes == 2 and min_ready.wakes == 2
