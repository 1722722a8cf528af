"""`Launcher`: the launcher service. Starts and stops every worker, follows config changes.

    launcher = Launcher("/etc/nodepool/nodepool.yaml")
    launcher.start()      # connects to ZooKeeper, registers components, starts the workers
    ...
    launcher.stop()

One `ProviderRunner` per provider, one `PoolWorker` per provider-pool (each registered as a
`pool` component with its supported labels), plus the deleter, min-ready, cleanup, stats
and lease keeper workers (`api/keeper.py`: the REST API's leases; `api` is this launcher's
`LeaseService`, which the web app serves at `/api/v1`). A config change restarts only the
providers whose config changed. While the ZooKeeper session is suspended every worker
pauses; after an expiry the registry re-creates our components and the caches reload, and
work carries on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nodepool_ng
from nodepool_ng.api.keeper import LeaseKeeper
from nodepool_ng.api.service import LeaseService
from nodepool_ng.config.models import Config
from nodepool_ng.config.watcher import ConfigWatcher
from nodepool_ng.errors import ConfigError
from nodepool_ng.events import LauncherEvents, start_launcher_events
from nodepool_ng.launcher.assignment import PoolInfo
from nodepool_ng.launcher.cleanup import CleanupWorker
from nodepool_ng.launcher.deleter import DeletedNodeWorker
from nodepool_ng.launcher.min_ready import MinReadyWorker, labels_to_keep
from nodepool_ng.launcher.node_index import NodeIndex
from nodepool_ng.launcher.options import LauncherOptions
from nodepool_ng.launcher.pool import PoolWorker
from nodepool_ng.launcher.providers import AdapterFactory, Providers, RunningProvider
from nodepool_ng.launcher.stats import LauncherStats
from nodepool_ng.launcher.zkview import ReadyUploads, StoresView
from nodepool_ng.model.component import ComponentState, LauncherComponent
from nodepool_ng.model.node import Node
from nodepool_ng.model.quota import INSTANCES
from nodepool_ng.nodescan import NodeScanner
from nodepool_ng.runtime.loop import Worker
from nodepool_ng.status import PoolStatus, ProviderStatus
from nodepool_ng.zk.client import ConnectionState, ZooKeeperClient
from nodepool_ng.zk.components import ComponentRegistry
from nodepool_ng.zk.election import LeaderElection
from nodepool_ng.zk.images import UploadStore
from nodepool_ng.zk.leases import LeaseStore
from nodepool_ng.zk.nodes import NodeStore
from nodepool_ng.zk.requests import RequestStore

log = logging.getLogger("nodepool_ng.launcher")

__all__ = ["AdapterFactory", "Launcher", "LauncherOptions"]


class Launcher:
    def __init__(
        self,
        config_path: str,
        secure_path: str | None = None,
        options: LauncherOptions | None = None,
        adapter_factory: AdapterFactory | None = None,
    ) -> None:
        self.options = options or LauncherOptions()
        self.watcher = ConfigWatcher(config_path, secure_path)
        self.config: Config = self.watcher.load()
        unknown = sorted((self.options.providers or frozenset()) - set(self.config.providers))
        if unknown:
            raise ConfigError(f"providers {unknown} are not in {config_path}", "providers")
        # A test's factory replaces the registry's for drivers that launch servers.
        self._adapter_factory = adapter_factory
        self.stats = LauncherStats()
        # Running providers by name (`Providers.by_name`); changed under `_lock`.
        self.providers: dict[str, RunningProvider] = {}
        self._lock = threading.RLock()
        self._workers: list[Worker] = []
        self._stopped = threading.Event()
        self.zk_client: ZooKeeperClient | None = None
        self.api: LeaseService | None = None  # set by start()
        self.ready = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.config
        tls = cfg.zookeeper_tls
        self.zk_client = client = ZooKeeperClient(
            cfg.zookeeper_hosts(),
            tls_cert=tls.cert if tls else None,
            tls_key=tls.key if tls else None,
            tls_ca=tls.ca if tls else None,
            session_timeout=cfg.zookeeper_timeout,
            operation_timeout=self.options.operation_timeout,
        )
        client.start(timeout=self.options.operation_timeout)
        self.node_store = NodeStore(client)
        self.request_store = RequestStore(client)
        self.registry = ComponentRegistry(client)
        self.upload_store = UploadStore(client)
        self.lease_store = LeaseStore(client)
        self.ready_uploads = ReadyUploads(self.upload_store)
        self.zk = StoresView(
            self.node_store, self.request_store, self._pool_infos, self.ready_uploads
        )
        # The node cache's derived state (usage, READY nodes, the deleter's candidates), fed
        # by the node listener below before it wakes anyone.
        self.node_index = NodeIndex()
        self.scanner = NodeScanner()
        paused = self._zk_paused
        self._providers = providers = Providers(
            self.options, lambda: self.config, self.zk, self.registry, self._scan, self.stats,
            paused, self._adapter_factory, by_name=self.providers, lock=self._lock,
            node_index=self.node_index)
        self.deleter = DeletedNodeWorker(
            self.zk, providers.runners, self.options.deleter_interval, paused,
            busy=providers.held_nodes, index=self.node_index, leased=self.lease_store.keeps_node,
        )
        self.lease_keeper = LeaseKeeper(
            self.lease_store, self.request_store, self.node_store, self.options.hostname,
            paused=paused,
        )
        self.min_ready = MinReadyWorker(
            self.zk, self._min_ready_wanted, self.options.min_ready_interval, paused,
            index=self.node_index,
        )
        self.cleanup = CleanupWorker(
            self.zk,
            lambda: self.config,
            providers.runners,
            providers.requests_in_flight,
            self.stats,
            self.options.cleanup_interval,
            paused,
            cleanup_lock_dirs=self.request_store.cleanup_lock_dirs,
        )
        self.stats_worker = Worker(
            "StatsWorker", self.options.stats_interval, target=self._report_stats, paused=paused
        )
        self.config_worker = Worker(
            "ConfigWorker", self.options.config_interval, target=self._check_config
        )
        listeners = _Listeners(providers, self.deleter, self.min_ready, self.cleanup,
                               self._stopped, self.node_index, self.node_store.cached_nodes)
        client.add_state_listener(listeners.on_zk_state)
        client.add_state_listener(self.lease_keeper.on_zk_state)
        self.lease_store.add_listener(self.lease_keeper.on_lease)
        self.request_store.add_listener(self.lease_keeper.on_request)
        client.add_session_listener(listeners.on_new_session)
        self.node_store.add_listener(listeners.on_node)
        self.request_store.add_listener(listeners.on_request)
        self.registry.add_listener(listeners.on_component)
        self.node_store.start_cache(self.options.operation_timeout)
        self.request_store.start_cache(self.options.operation_timeout)
        self.registry.start_cache(self.options.operation_timeout)
        self.lease_store.start_cache(self.options.operation_timeout)
        self.api = LeaseService(lambda: self.config, self.lease_store, self.request_store,
                                self.node_store)
        self.election = LeaderElection(client, self.options.hostname)
        self.election.start()
        # MQTT events: an observer of the caches, published by the election leader only.
        self.events: LauncherEvents | None = start_launcher_events(
            cfg,
            self.options.hostname,
            self.node_store,
            self.request_store,
            lambda: self.election.is_leader,
        )

        self.component = LauncherComponent(
            hostname=self.options.hostname, version=nodepool_ng.__version__
        )
        self.registry.register(self.component)
        for provider in providers.mine(cfg).values():
            providers.start(provider)
        self._workers = [
            self.deleter,
            self.min_ready,
            self.cleanup,
            self.stats_worker,
            self.config_worker,
            self.lease_keeper,
        ]
        for worker in self._workers:
            worker.start()
        self.registry.update(self.component, state=ComponentState.RUNNING)
        self.ready.set()
        log.info("Launcher started with providers %s", sorted(self.providers))

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        log.info("Stopping launcher")
        for worker in self._workers:
            worker.stop()
        self._providers.stop_all()
        for worker in self._workers:
            worker.join(10)
        self.scanner.stop()
        self.election.stop()
        if self.events is not None:
            self.events.stop()
        try:
            self.registry.unregister_all()
        except Exception as e:
            log.warning("Could not unregister components: %s", e)
        self.node_store.stop_cache()
        self.request_store.stop_cache()
        self.registry.stop_cache()
        self.lease_store.stop_cache()
        if self.zk_client is not None:
            self.zk_client.stop()
        log.info("Launcher stopped")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until stop() was called (True) or timeout."""
        return self._stopped.wait(timeout)

    def _check_config(self) -> float | None:
        new = self.watcher.check()
        if new is None:
            return None
        self.apply_config(new)
        return None

    def apply_config(self, new: Config) -> None:
        """Restart changed providers, start new ones, stop removed ones; keep the rest."""
        with self._lock:
            old, self.config = self.config, new
            self._providers.apply(old, new)
        self.min_ready.wake()

    def provider_status(self) -> list[ProviderStatus]:
        """Read-only, any thread (the status page): each running provider's circuit breaker
        state, launches under way and, per pool, its quota usage and whether no label of it
        fits now."""
        with self._lock:
            running = sorted(self.providers.values(), key=lambda p: p.config.name)
        out = []
        for provider in running:
            pools = []
            for name, pool in sorted(provider.pools.items()):
                quota, pool_cfg = pool.ctx.quota, pool.ctx.pool
                at_quota = (not any(quota.has_room(label) for label in pool_cfg.label_names)
                            if provider.config.launches_servers else None)
                servers = int(quota.usage()[0].get(INSTANCES))
                pools.append(PoolStatus(name, at_quota, servers, pool_cfg.max_servers))
            out.append(ProviderStatus(provider.config.name, str(provider.runner.health.state),
                                      provider.runner.active_launches, tuple(pools)))
        return out

    # -- views for the workers -------------------------------------------------------------
    def _zk_paused(self) -> bool:
        return self.zk_client is None or not self.zk_client.is_connected

    def _pool_workers(self) -> list[PoolWorker]:
        return self._providers.pool_workers()

    def _pool_infos(self) -> list[PoolInfo]:
        return [
            PoolInfo(
                id=c.id or "",
                provider_name=c.provider_name or "",
                name=c.name or "",
                supported_labels=frozenset(c.supported_labels),
                priority=c.priority,
                paused=c.paused,
            )
            for c in self.registry.pools()
        ]

    def _scan(self, host: str, port: int, timeout: float, connection_type: str) -> Any:
        return self.scanner.submit(host, port, timeout, connection_type)

    def _min_ready_wanted(self) -> dict[str, int]:
        """Labels whose min-ready this process keeps (`min_ready.labels_to_keep`)."""
        with self._lock:
            running = set(self.providers)
        return labels_to_keep(self.config, running, self.options.providers is not None,
                              self.ready_uploads)

    def _report_stats(self) -> float | None:
        if not self.election.is_leader:
            return None
        nodes = [(str(n.state), n.provider or "", list(n.type)) for n in self.zk.nodes() if n.state]
        maxes = {
            name: (
                float(sum(p.max_servers or 0 for p in pcfg.pools))
                if all(p.max_servers is not None for p in pcfg.pools)
                else None
            )
            for name, pcfg in self.config.providers.items()
        }
        self.stats.node_gauges(nodes, maxes)
        return None


@dataclass
class _Listeners:
    """What ZooKeeper session and cache events wake (the threads of kazoo and the caches)."""

    providers: Providers
    deleter: Worker
    min_ready: Worker
    cleanup: Worker
    stopped: threading.Event
    node_index: NodeIndex
    cached_nodes: Callable[[], list[Node]]

    def on_zk_state(self, state: ConnectionState) -> None:
        # Workers pause by themselves while disconnected (`_zk_paused`); an expiry also took
        # our locks: the pool workers re-take them before their next pass.
        if state is ConnectionState.LOST and not self.stopped.is_set():
            log.warning("ZooKeeper session expired; re-locking in-flight work on reconnect")
            for worker in self.providers.pool_workers():
                worker.on_session_lost()

    def on_new_session(self) -> None:
        # The registry re-creates our components itself; caches reload on their own.
        log.info("New ZooKeeper session; components re-registered, carrying on")
        # The cache re-reads its copy and reports every difference as a node event; the
        # recount is a safety net that costs one walk per session.
        self.node_index.rebuild(self.cached_nodes)
        self.providers.wake_pools()
        self.deleter.wake()
        self.min_ready.wake()
        self.cleanup.wake()

    def on_node(self, node_id: str, node: Any) -> None:
        self.node_index.on_node(node_id, node)  # first: whoever is woken reads it
        # A node's change concerns only its provider's pools (their handlers, READY nodes to
        # claim, the provider's usage); a node gone may also free a tenant's limits anywhere.
        # Waking only those keeps a burst's passes from multiplying by the pools.
        provider = None if node is None else node.provider
        self.providers.node_seen(node_id, provider)  # the cache accounts for it from now on
        self.providers.wake_pools(provider)
        self.deleter.wake()
        self.min_ready.wake()
        if node is None:  # a registered host's node record gone: its slot is free again
            for registrar in self.providers.registrars():
                registrar.wake()

    def on_request(self, request_id: str, request: Any) -> None:
        self.providers.wake_pools()
        self.min_ready.wake()

    def on_component(self, key: str, component: Any) -> None:
        self.providers.wake_pools()
        if component is None:
            self.cleanup.wake()  # a launcher may have died: look for lost requests
