"""`Launcher`: the launcher service. Starts and stops every worker, follows config changes.

    launcher = Launcher("/etc/nodepool/nodepool.yaml")
    launcher.start()      # connects to ZooKeeper, registers components, starts the workers
    ...
    launcher.stop()

One `ProviderRunner` per provider, one `PoolWorker` per provider-pool (each registered as a
`pool` component with its supported labels), plus the deleter, min-ready, cleanup and stats
workers. A config change restarts only the providers whose config changed. While the
ZooKeeper session is suspended every worker pauses; after an expiry the registry re-creates
our components and the caches reload, and work carries on.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nodepool_ng
from nodepool_ng.config.models import Config, ProviderConfig
from nodepool_ng.config.watcher import ConfigWatcher
from nodepool_ng.drivers import registry
from nodepool_ng.drivers.base import ProviderAdapter
from nodepool_ng.errors import ConfigError
from nodepool_ng.events import LauncherEvents, start_launcher_events
from nodepool_ng.launcher.assignment import PoolInfo
from nodepool_ng.launcher.cleanup import CleanupWorker
from nodepool_ng.launcher.deleter import DeletedNodeWorker
from nodepool_ng.launcher.min_ready import MinReadyWorker
from nodepool_ng.launcher.pool import PoolWorker
from nodepool_ng.launcher.poolctx import PoolContext
from nodepool_ng.launcher.runner import ProviderRunner
from nodepool_ng.launcher.stats import LauncherStats
from nodepool_ng.launcher.zkview import StoresView
from nodepool_ng.model.component import ComponentState, LauncherComponent, PoolComponent
from nodepool_ng.nodescan import NodeScanner
from nodepool_ng.runtime.loop import Worker
from nodepool_ng.zk.client import ConnectionState, ZooKeeperClient
from nodepool_ng.zk.components import ComponentRegistry
from nodepool_ng.zk.election import LeaderElection
from nodepool_ng.zk.images import ImageStore
from nodepool_ng.zk.nodes import NodeStore
from nodepool_ng.zk.requests import RequestStore

log = logging.getLogger("nodepool_ng.launcher")

AdapterFactory = Callable[[ProviderConfig], ProviderAdapter]


@dataclass
class LauncherOptions:
    """Knobs for tests and benchmarks; the defaults are the daemon's."""

    hostname: str = field(default_factory=socket.getfqdn)
    clouds_yaml: str | None = None  # else openstacksdk's search (OS_CLIENT_CONFIG_FILE, ...)
    endpoint_url: str | None = None  # a cloud endpoint override (registry.AdapterOptions)
    runner_poll: float = 0.05  # while launches/deletes are in flight
    adapter_poll: float = 0.2  # server-list refresh while launches are in flight (lazy)
    pool_interval: float = 30.0  # safety net; pool workers are woken by watches
    deleter_interval: float = 5.0
    min_ready_interval: float = 5.0
    cleanup_interval: float = 60.0
    config_interval: float = 5.0
    stats_interval: float = 5.0
    cloud_quota_ttl: float = 5.0
    operation_timeout: float = 10.0
    # Run only these providers of the config (None: all). Several launcher processes, each
    # with its own providers, share one config and one ZooKeeper: one core each (see
    # doc/launcher.md, "One process per provider").
    providers: frozenset[str] | None = None


@dataclass
class _Pool:
    ctx: PoolContext
    worker: PoolWorker
    component: PoolComponent


@dataclass
class _Provider:
    config: ProviderConfig
    adapter: ProviderAdapter
    runner: ProviderRunner
    pools: dict[str, _Pool] = field(default_factory=dict)
    registrar: Worker | None = None  # drivers of registered hosts (static): keeps them so


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
        self.providers: dict[str, _Provider] = {}
        self._lock = threading.RLock()
        self._workers: list[Worker] = []
        self._stopped = threading.Event()
        self._uploads: dict[tuple[str, str], tuple[float, tuple[str, str] | None]] = {}
        self.zk_client: ZooKeeperClient | None = None
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
        self.image_store = ImageStore(client)
        self.zk = StoresView(
            self.node_store, self.request_store, self._pool_infos, self._ready_upload
        )
        self.scanner = NodeScanner()
        paused = self._zk_paused
        self.deleter = DeletedNodeWorker(
            self.zk, self._runners, self.options.deleter_interval, paused, busy=self._busy_nodes
        )
        self.min_ready = MinReadyWorker(
            self.zk, self._min_ready_wanted, self.options.min_ready_interval, paused
        )
        self.cleanup = CleanupWorker(
            self.zk,
            lambda: self.config,
            self._runners,
            self._active_requests,
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
        client.add_state_listener(self._on_zk_state)
        client.add_session_listener(self._on_new_session)
        self.node_store.add_listener(self._on_node)
        self.request_store.add_listener(self._on_request)
        self.registry.add_listener(self._on_component)
        self.node_store.start_cache(self.options.operation_timeout)
        self.request_store.start_cache(self.options.operation_timeout)
        self.registry.start_cache(self.options.operation_timeout)
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
        for provider in self._mine(cfg).values():
            self._start_provider(provider)
        self._workers = [
            self.deleter,
            self.min_ready,
            self.cleanup,
            self.stats_worker,
            self.config_worker,
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
        with self._lock:
            for name in list(self.providers):
                self._stop_provider(name)
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
        if self.zk_client is not None:
            self.zk_client.stop()
        log.info("Launcher stopped")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until stop() was called (True) or timeout."""
        return self._stopped.wait(timeout)

    # -- providers -------------------------------------------------------------------------
    def _make_adapter(self, driver: registry.Driver, provider: ProviderConfig) -> ProviderAdapter:
        if self._adapter_factory is not None and driver.launches_servers:
            return self._adapter_factory(provider)
        options = registry.AdapterOptions(
            clouds_yaml=self.options.clouds_yaml,
            poll_interval=self.options.adapter_poll,
            endpoint_url=self.options.endpoint_url,
        )
        return driver.make_adapter(provider, options)

    def _start_provider(self, pcfg: ProviderConfig) -> None:
        driver = registry.find(pcfg.driver)
        if driver is None:
            log.error("Provider %s: driver %s is not supported; skipped", pcfg.name, pcfg.driver)
            return
        try:
            adapter = self._make_adapter(driver, pcfg)
        except Exception as e:
            # Upstream skips a provider whose manager cannot start; others keep working.
            log.error("Provider %s could not start: %s", pcfg.name, e)
            return
        runner = ProviderRunner(
            pcfg.name,
            adapter,
            self.node_store.store,
            self._scan,
            self.stats,
            self.options.runner_poll,
            self._zk_paused,
        )
        provider = _Provider(pcfg, adapter, runner)
        runner.on_health_change = lambda: self._wake_pools_of(provider)
        runner.start()
        for pool_cfg in pcfg.pools:
            pool_id = (
                f"{self.options.hostname}-PoolWorker.{pcfg.name}-{pool_cfg.name}-{uuid.uuid4().hex}"
            )
            ctx = PoolContext(
                config=self.config,
                provider=pcfg,
                pool=pool_cfg,
                pool_id=pool_id,
                zk=self.zk,
                adapter=adapter,
                runner=runner,
                wake=lambda: None,
                stats=self.stats,
                cloud_quota_ttl=self.options.cloud_quota_ttl,
            )
            info = ctx.info()
            component = PoolComponent(
                hostname=self.options.hostname,
                version=nodepool_ng.__version__,
                state=ComponentState.RUNNING,
                id=pool_id,
                name=pool_cfg.name,
                provider_name=pcfg.name,
                supported_labels=sorted(info.supported_labels),
                priority=info.priority,
            )
            worker = PoolWorker(
                ctx,
                self._pause_setter(component),
                self.options.pool_interval,
                self._zk_paused,
            )
            ctx.wake = worker.wake
            self.registry.register(component)
            provider.pools[pool_cfg.name] = _Pool(ctx, worker, component)
            worker.start()
        if driver.make_registrar is not None:
            provider.registrar = driver.make_registrar(
                pcfg, self.zk, self.options.cleanup_interval, self._zk_paused)
            provider.registrar.start()
        with self._lock:
            self.providers[pcfg.name] = provider
        log.info("Started provider %s", pcfg.name)

    def _pause_setter(self, component: PoolComponent) -> Callable[[bool], None]:
        def set_paused(paused: bool) -> None:
            self.registry.update(component, paused=paused)

        return set_paused

    def _stop_provider(self, name: str) -> None:
        with self._lock:
            provider = self.providers.pop(name, None)
        if provider is None:
            return
        if provider.registrar is not None:
            provider.registrar.stop()
            provider.registrar.join(10)
        for pool in provider.pools.values():
            pool.worker.stop()
        for pool in provider.pools.values():
            pool.worker.join(10)
            try:
                self.registry.unregister(pool.component)
            except Exception as e:
                log.warning("Could not unregister pool %s: %s", pool.ctx.pool_id, e)
        provider.runner.stop()
        provider.runner.join(10)
        try:
            provider.adapter.stop()
        except Exception as e:
            log.warning("Provider %s adapter stop failed: %s", name, e)
        log.info("Stopped provider %s", name)

    def _check_config(self) -> float | None:
        new = self.watcher.check()
        if new is None:
            return None
        self.apply_config(new)
        return None

    def apply_config(self, new: Config) -> None:
        """Restart changed providers, start new ones, stop removed ones; keep the rest."""
        with self._lock:
            old = self.config
            self.config = new
            mine = self._mine(new)
            for name in list(self.providers):
                if name not in mine or mine[name] != old.providers.get(name):
                    self._stop_provider(name)
            for name, pcfg in mine.items():
                if name not in self.providers:
                    self._start_provider(pcfg)
            for provider in self.providers.values():
                for pool in provider.pools.values():
                    pool.ctx.config = new
        self.min_ready.wake()

    def _mine(self, config: Config) -> dict[str, ProviderConfig]:
        """The providers of `config` this process runs (`LauncherOptions.providers`)."""
        wanted = self.options.providers
        return {name: p for name, p in config.providers.items()
                if wanted is None or name in wanted}

    # -- views for the workers -------------------------------------------------------------
    def _zk_paused(self) -> bool:
        return self.zk_client is None or not self.zk_client.is_connected

    def _runners(self) -> dict[str, ProviderRunner]:
        with self._lock:
            return {name: p.runner for name, p in self.providers.items()}

    def _pool_workers(self) -> list[PoolWorker]:
        with self._lock:
            return [pool.worker for p in self.providers.values() for pool in p.pools.values()]

    def _busy_nodes(self) -> set[str]:
        """Nodes our handlers hold (their locks may be gone with an expired session)."""
        return {nid for w in self._pool_workers() for nid in w.ctx.ledger.held_nodes()}

    def _active_requests(self) -> set[str]:
        """Requests our pools are accepting or handling."""
        return {rid for w in self._pool_workers() for rid in w.ctx.ledger.requests()}

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

    def _ready_upload(self, image: str, provider: str) -> tuple[str, str] | None:
        key = (image, provider)
        now = time.monotonic()
        cached = self._uploads.get(key)
        if cached is not None and now - cached[0] < 5.0:
            return cached[1]
        upload = self.image_store.latest_ready_upload(image, provider)
        value = (upload.path, upload.external_id or "") if upload else None
        self._uploads[key] = (now, value)
        return value

    def _scan(self, host: str, port: int, timeout: float, connection_type: str) -> Any:
        return self.scanner.submit(host, port, timeout, connection_type)

    def _min_ready_wanted(self) -> dict[str, int]:
        """Labels whose min-ready this process keeps: one of its running providers can
        launch the label now. With `--provider`, several processes share one config: only
        the one running the first such provider (by name) keeps it, so they do not all ask
        for the same missing node at once."""
        with self._lock:
            running = set(self.providers)
        wanted: dict[str, int] = {}
        for label in self.config.labels.values():
            if label.min_ready <= 0:
                continue
            able = [name for name, p in sorted(self.config.providers.items())
                    if self._can_launch(p, label.name)]
            if self.options.providers is not None:
                able = able[:1]
            if any(name in running for name in able):
                wanted[label.name] = label.min_ready
        return wanted

    def _can_launch(self, provider: ProviderConfig, label: str) -> bool:
        """A pool of `provider` boots `label` and its image is there (any provider: the
        config and the image records are shared)."""
        for pool in provider.pools_for_label(label):
            pool_label = pool.label(label)
            if pool_label is None:
                continue
            if pool_label.cloud_image or (
                    pool_label.diskimage
                    and self._ready_upload(pool_label.diskimage, provider.name)):
                return True
        return False

    # -- ZooKeeper session ------------------------------------------------------------------
    def _on_zk_state(self, state: ConnectionState) -> None:
        # Workers pause by themselves while disconnected (`_zk_paused`); an expiry also took
        # our locks: the pool workers re-take them before their next pass.
        if state is ConnectionState.LOST and not self._stopped.is_set():
            log.warning("ZooKeeper session expired; re-locking in-flight work on reconnect")
            self._session_lost()

    def _on_new_session(self) -> None:
        # The registry re-creates our components itself; caches reload on their own.
        log.info("New ZooKeeper session; components re-registered, carrying on")
        self._wake_pools()
        self.deleter.wake()
        self.min_ready.wake()
        self.cleanup.wake()

    def _session_lost(self) -> None:
        for worker in self._pool_workers():
            worker.on_session_lost()

    # -- watches ---------------------------------------------------------------------------
    @staticmethod
    def _wake_pools_of(provider: _Provider) -> None:
        for pool in provider.pools.values():
            pool.worker.wake()

    def _wake_pools(self) -> None:
        for worker in self._pool_workers():
            worker.wake()

    def _on_node(self, node_id: str, node: Any) -> None:
        for worker in self._pool_workers():
            worker.ctx.ledger.node_seen(node_id)  # the cache accounts for it from now on
        self._wake_pools()
        self.deleter.wake()
        self.min_ready.wake()
        if node is None:  # a registered host's node record gone: its slot is free again
            for registrar in self._registrars():
                registrar.wake()

    def _registrars(self) -> list[Worker]:
        with self._lock:
            return [p.registrar for p in self.providers.values() if p.registrar is not None]

    def _on_request(self, request_id: str, request: Any) -> None:
        self._wake_pools()
        self.min_ready.wake()

    def _on_component(self, key: str, component: Any) -> None:
        self._wake_pools()
        if component is None:
            self.cleanup.wake()  # a launcher may have died: look for lost requests

    # -- stats -----------------------------------------------------------------------------
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
