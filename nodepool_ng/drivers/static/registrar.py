"""`StaticRegistrar`: keeps a static provider's hosts registered as READY nodes.

One worker per static provider. Each pass compares the configured hosts with the provider's
node records (the node cache) and, as upstream's static driver does:

* registers a READY node for every free slot of a host (`max-parallel-jobs` slots, numbered
  in the node's `slot` field), after checking the host (`drivers/static/__init__.py`); a used node's
  record is deleted by the deleter, which frees its slot, so the host comes back READY;
* updates READY nodes in place when their host's config changed;
* deregisters (state `deleting`) READY unallocated nodes of hosts removed from the config or
  beyond a lowered `max-parallel-jobs`; nodes in use are left to finish and not replaced.

Woken when a node record is removed (its slot is filled at once) and at `interval`. A host
that fails its check is retried after `retry_after` seconds, not on every wake.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed

from nodepool_ng.config.models import PoolConfig, ProviderConfig, StaticNodeConfig
from nodepool_ng.drivers import static as driver
from nodepool_ng.launcher.zkview import LauncherZK, change_idle_node, mark_deleting
from nodepool_ng.log import get_logger
from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.runtime.loop import Worker

HostId = tuple[str, str, int]
CHECK_THREADS = 8  # hosts checked at once (each check may wait `timeout` seconds)


def host_id(node: Node) -> HostId:
    return (node.hostname or "", node.username or "", int(node.connection_port or 0))


def assign_slots(
    hosts: dict[HostId, StaticNodeConfig], nodes: list[Node]
) -> tuple[dict[HostId, list[Node | None]], list[Node]]:
    """Place the provider's live node records in their hosts' slots.

    Returns (slots per configured host, None = free; nodes that have no slot: of removed
    hosts, beyond `max-parallel-jobs`, or a second record for one slot). A record without a
    slot number (written by an old upstream) takes the first free slot, as upstream."""
    slots: dict[HostId, list[Node | None]] = {
        hid: [None] * host.max_parallel_jobs for hid, host in hosts.items()}
    unslotted: list[Node] = []
    excess: list[Node] = []
    for node in sorted(nodes, key=lambda n: n.id or ""):
        own = slots.get(host_id(node))
        if own is None:
            excess.append(node)
        elif node.slot is not None and 0 <= node.slot < len(own) and own[node.slot] is None:
            own[node.slot] = node
        else:
            unslotted.append(node)
    for node in unslotted:
        own = slots[host_id(node)]
        if node.slot is None and None in own:
            own[own.index(None)] = node
        else:
            excess.append(node)
    return slots, excess


def node_fields(pool: PoolConfig, host: StaticNodeConfig) -> dict[str, object]:
    """The node fields that follow from a host's config (compared to update in place)."""
    return {
        "type": list(host.labels),
        "username": host.username,
        "connection_port": host.connection_port,
        "connection_type": host.connection_type,
        "shell_type": host.shell_type,
        "python_path": host.python_path,
        "attributes": dict(pool.node_attributes) or None,
    }


class StaticRegistrar(Worker):
    def __init__(
        self,
        provider: ProviderConfig,
        zk: LauncherZK,
        interval: float = 60.0,
        paused: Callable[[], bool] | None = None,
        retry_after: float = 60.0,
    ) -> None:
        super().__init__(f"StaticRegistrar.{provider.name}", interval=interval, paused=paused)
        self.provider = provider
        self.zk = zk
        self.retry_after = retry_after
        self._failed: dict[HostId, float] = {}  # host -> when its check last failed
        self._checks: ThreadPoolExecutor | None = None
        # Nodes we registered that the node cache may not show yet: id -> (host, slot, when).
        self._registered: dict[str, tuple[HostId, int, float]] = {}
        self.plog = get_logger("nodepool_ng.launcher.static", provider=provider.name)

    def hosts(self) -> dict[HostId, tuple[PoolConfig, StaticNodeConfig]]:
        return {host.identity: (pool, host) for pool in self.provider.pools for host in pool.nodes}

    def run_once(self) -> float | None:
        hosts = self.hosts()
        mine = [n for n in self.zk.nodes()
                if n.provider == self.provider.name and n.state is not NodeState.DELETED]
        # Records on their way out do not hold a slot (upstream skips building/deleting).
        live = [n for n in mine if n.state not in (NodeState.BUILDING, NodeState.DELETING)]
        slots, excess = assign_slots({hid: h for hid, (_, h) in hosts.items()}, live)
        self._forget_seen_registrations({n.id for n in mine})
        taken = {(hid, slot) for hid, slot, _ in self._registered.values()}
        for node in excess:
            if self.stopped:
                return None
            self._deregister(node)
        now = time.monotonic()
        wanted = [
            (hid, slot)
            for hid, own in slots.items()
            for slot, node in enumerate(own)
            if node is None and (hid, slot) not in taken
            and now - self._failed.get(hid, -self.retry_after) >= self.retry_after
        ]
        stale = [
            node
            for hid, own in slots.items()
            for node in own
            if node is not None and node.state is NodeState.READY and not node.allocated_to
            and self._differs(node, *hosts[hid])
        ]
        if wanted or stale:
            self._register_and_update(hosts, wanted, stale)
        return None

    def _forget_seen_registrations(self, cached_ids: set[str | None]) -> None:
        """Our registrations the cache shows count as nodes from now on. One it does not
        show may not have reached it yet, or may be gone already (used and deleted between
        two passes): a direct read tells which. A cache lagging for longer than a pass
        interval is a broken one: then the slot is judged afresh."""
        now = time.monotonic()
        for node_id, (_, _, when) in list(self._registered.items()):
            if node_id in cached_ids or now - when > self.interval \
                    or self.zk.get_node(node_id) is None:
                del self._registered[node_id]

    def on_stop(self) -> None:
        if self._checks is not None:
            self._checks.shutdown(wait=True, cancel_futures=True)

    # -- registering -----------------------------------------------------------------------
    def _register_and_update(
        self,
        hosts: dict[HostId, tuple[PoolConfig, StaticNodeConfig]],
        wanted: list[tuple[HostId, int]],
        stale: list[Node],
    ) -> None:
        """Check each host involved once (in parallel: a dead host may take `timeout`), then
        register its free slots and update its stale records."""
        involved = dict.fromkeys([hid for hid, _ in wanted] + [host_id(n) for n in stale])
        if self._checks is None:
            self._checks = ThreadPoolExecutor(CHECK_THREADS, f"static-{self.provider.name}")
        checks = {self._checks.submit(self._check, hosts[hid][1]): hid for hid in involved}
        for future in as_completed(checks):  # a dead host does not hold up the others
            hid, keys = checks[future], future.result()
            if keys is None or self.stopped:
                continue
            pool, host = hosts[hid]
            for wanted_hid, slot in wanted:
                if wanted_hid == hid:
                    self._register(pool, host, slot, keys)
            for node in stale:
                if host_id(node) == hid:
                    self._update(node, pool, host, keys)

    def _check(self, host: StaticNodeConfig) -> tuple[list[str], str | None, str | None] | None:
        """(host keys, ipv4, ipv6), or None (logged; retried after `retry_after`)."""
        try:
            keys = driver.registration_keys(host)
            ipv4, ipv6 = driver.host_addresses(host)
        except driver.StaticHostError as e:
            self.plog.warning("Cannot register static node: %s", e)
            self._failed[host.identity] = time.monotonic()
            return None
        self._failed.pop(host.identity, None)
        return keys, ipv4, ipv6

    def _register(
        self, pool: PoolConfig, host: StaticNodeConfig, slot: int,
        checked: tuple[list[str], str | None, str | None],
    ) -> None:
        keys, ipv4, ipv6 = checked
        node = Node(
            state=NodeState.READY,
            provider=self.provider.name,
            pool=pool.name,
            launcher=driver.STATIC_LAUNCHER,
            external_id=host.name,
            hostname=host.name,
            interface_ip=host.name,
            public_ipv4=ipv4,
            public_ipv6=ipv6,
            host_keys=keys,
            slot=slot,
        )
        for name, value in node_fields(pool, host).items():
            setattr(node, name, value)
        node.created_time = node.state_time
        try:
            self.zk.create_node(node)
        except Exception as e:
            self.plog.warning("Could not register static node %s slot %s: %s",
                              driver.describe(host), slot, e)
            return
        self._registered[node.id or ""] = (host.identity, slot, time.monotonic())
        self.plog.info("Registered static node %s slot %s as node %s",
                       driver.describe(host), slot, node.id)

    def _differs(self, node: Node, pool: PoolConfig, host: StaticNodeConfig) -> bool:
        if node.pool != pool.name:
            return True
        # Configured keys (host-key-checking off) are compared; scanned ones stay as
        # registered (a rescan would cost a connection per pass).
        if driver.gathers_host_keys(host) and not host.host_key_checking \
                and list(node.host_keys) != list(host.host_key):
            return True
        return any(getattr(node, name) != value
                   for name, value in node_fields(pool, host).items())

    def _update(
        self, cached: Node, pool: PoolConfig, host: StaticNodeConfig,
        checked: tuple[list[str], str | None, str | None],
    ) -> None:
        """Rewrite a READY node whose host's config changed (skipped if it is taken)."""
        def rewrite(node: Node) -> None:
            node.pool = pool.name
            node.host_keys, node.public_ipv4, node.public_ipv6 = checked
            for name, value in node_fields(pool, host).items():
                setattr(node, name, value)

        if change_idle_node(self.zk, cached.id or "", rewrite) is not None:
            self.plog.info("Updated static node %s (node %s) from the config",
                           driver.describe(host), cached.id)

    def _deregister(self, cached: Node) -> None:
        """A record without a slot: if it is READY and free, mark it `deleting` (the deleter
        removes it); otherwise it finishes its job first and is not replaced."""
        if cached.state is not NodeState.READY or cached.allocated_to:
            return
        if change_idle_node(self.zk, cached.id or "", mark_deleting) is not None:
            self.plog.info("Deregistered static node %s (node %s)", host_id(cached), cached.id)
