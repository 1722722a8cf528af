"""`Providers`: the providers this launcher process runs, each with its runner, its pool
workers (registered as `pool` components) and, for drivers of registered hosts, its
registrar. Starts and stops them, restarts the ones a config change touched, and gives the
other workers their views (runners, requests in flight, nodes held)."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import nodepool_ng
from nodepool_ng.config.models import Config, ProviderConfig
from nodepool_ng.drivers import registry
from nodepool_ng.drivers.base import ProviderAdapter
from nodepool_ng.launcher.ledger import PoolLedger
from nodepool_ng.launcher.node_index import NodeIndex
from nodepool_ng.launcher.options import LauncherOptions
from nodepool_ng.launcher.pool import PoolWorker
from nodepool_ng.launcher.poolctx import PoolContext
from nodepool_ng.launcher.runner import ProviderRunner
from nodepool_ng.launcher.stats import LauncherStats
from nodepool_ng.launcher.zkview import StoresView
from nodepool_ng.model.component import ComponentState, PoolComponent
from nodepool_ng.runtime.loop import Worker
from nodepool_ng.zk.components import ComponentRegistry

if TYPE_CHECKING:
    from nodepool_ng.launcher.runner import ScanStarter

log = logging.getLogger("nodepool_ng.launcher")

AdapterFactory = Callable[[ProviderConfig], ProviderAdapter]


@dataclass
class RunningPool:
    ctx: PoolContext
    worker: PoolWorker
    component: PoolComponent


@dataclass
class RunningProvider:
    config: ProviderConfig
    adapter: ProviderAdapter
    runner: ProviderRunner
    pools: dict[str, RunningPool] = field(default_factory=dict)
    registrar: Worker | None = None  # drivers of registered hosts (static): keeps them so

    def wake_pools(self) -> None:
        for pool in self.pools.values():
            pool.worker.wake()


@dataclass
class Providers:
    options: LauncherOptions
    config: Callable[[], Config]
    zk: StoresView
    components: ComponentRegistry
    scan: ScanStarter
    stats: LauncherStats
    zk_paused: Callable[[], bool]
    # A test's factory replaces the registry's for drivers that launch servers.
    adapter_factory: AdapterFactory | None = None
    # name -> running provider (`Launcher.providers`); changed under `lock`.
    by_name: dict[str, RunningProvider] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    # The launcher's index of the node cache, shared by every pool (`node_index.py`).
    node_index: NodeIndex = field(default_factory=NodeIndex)

    def mine(self, config: Config) -> dict[str, ProviderConfig]:
        """The providers of `config` this process runs (`LauncherOptions.providers`)."""
        wanted = self.options.providers
        return {name: p for name, p in config.providers.items()
                if wanted is None or name in wanted}

    def apply(self, old: Config, new: Config) -> None:
        """Restart changed providers, start new ones, stop removed ones; keep the rest."""
        with self.lock:
            mine = self.mine(new)
            for name in list(self.by_name):
                if name not in mine or mine[name] != old.providers.get(name):
                    self.stop(name)
            for name, pcfg in mine.items():
                if name not in self.by_name:
                    self.start(pcfg)
            for provider in self.by_name.values():
                for pool in provider.pools.values():
                    pool.ctx.config = new

    # -- one provider ----------------------------------------------------------------------
    def start(self, pcfg: ProviderConfig) -> None:
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
            self.zk.node_store.store,
            self.scan,
            self.stats,
            self.options.runner_poll,
            self.zk_paused,
        )
        provider = RunningProvider(pcfg, adapter, runner)
        runner.on_health_change = provider.wake_pools
        runner.start()
        for pool_cfg in pcfg.pools:
            pool = self._start_pool(provider, pool_cfg.name)
            provider.pools[pool_cfg.name] = pool
        if driver.make_registrar is not None:
            provider.registrar = driver.make_registrar(
                pcfg, self.zk, self.options.cleanup_interval, self.zk_paused)
            provider.registrar.start()
        with self.lock:
            self.by_name[pcfg.name] = provider
        log.info("Started provider %s", pcfg.name)

    def _make_adapter(self, driver: registry.Driver, provider: ProviderConfig) -> ProviderAdapter:
        if self.adapter_factory is not None and driver.launches_servers:
            return self.adapter_factory(provider)
        options = registry.AdapterOptions(
            clouds_yaml=self.options.clouds_yaml,
            poll_interval=self.options.adapter_poll,
            endpoint_url=self.options.endpoint_url,
        )
        return driver.make_adapter(provider, options)

    def _start_pool(self, provider: RunningProvider, name: str) -> RunningPool:
        pcfg = provider.config
        pool_cfg = next(p for p in pcfg.pools if p.name == name)
        hostname = self.options.hostname
        pool_id = f"{hostname}-PoolWorker.{pcfg.name}-{pool_cfg.name}-{uuid.uuid4().hex}"
        ctx = PoolContext(
            config=self.config(),
            provider=pcfg,
            pool=pool_cfg,
            pool_id=pool_id,
            zk=self.zk,
            adapter=provider.adapter,
            runner=provider.runner,
            wake=lambda: None,
            stats=self.stats,
            cloud_quota_ttl=self.options.cloud_quota_ttl,
            index=self.node_index,
        )
        info = ctx.info()
        component = PoolComponent(
            hostname=hostname,
            version=nodepool_ng.__version__,
            state=ComponentState.RUNNING,
            id=pool_id,
            name=pool_cfg.name,
            provider_name=pcfg.name,
            supported_labels=sorted(info.supported_labels),
            priority=info.priority,
        )

        def set_paused(paused: bool) -> None:
            self.components.update(component, paused=paused)

        worker = PoolWorker(ctx, set_paused, self.options.pool_interval, self.zk_paused)
        ctx.wake = worker.wake
        self.components.register(component)
        worker.start()
        return RunningPool(ctx, worker, component)

    def stop(self, name: str) -> None:
        with self.lock:
            provider = self.by_name.pop(name, None)
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
                self.components.unregister(pool.component)
            except Exception as e:
                log.warning("Could not unregister pool %s: %s", pool.ctx.pool_id, e)
        provider.runner.stop()
        provider.runner.join(10)
        try:
            provider.adapter.stop()
        except Exception as e:
            log.warning("Provider %s adapter stop failed: %s", name, e)
        log.info("Stopped provider %s", name)

    def stop_all(self) -> None:
        with self.lock:
            for name in list(self.by_name):
                self.stop(name)

    # -- views for the other workers (any thread) ------------------------------------------
    def runners(self) -> dict[str, ProviderRunner]:
        with self.lock:
            return {name: p.runner for name, p in self.by_name.items()}

    def pool_workers(self, provider: str | None = None) -> list[PoolWorker]:
        """Every pool's worker, or `provider`'s only."""
        with self.lock:
            if provider is not None:
                running = self.by_name.get(provider)
                return [pool.worker for pool in running.pools.values()] if running else []
            return [pool.worker for p in self.by_name.values() for pool in p.pools.values()]

    def registrars(self) -> list[Worker]:
        with self.lock:
            return [p.registrar for p in self.by_name.values() if p.registrar is not None]

    def held_nodes(self) -> Container[str]:
        """Nodes our pools' requests hold (their locks may be gone with an expired session):
        a view asking each pool's ledger, not a copy of every node in flight."""
        return _HeldBy([w.ctx.ledger for w in self.pool_workers()])

    def requests_in_flight(self) -> set[str]:
        """Requests our pools are accepting or handling."""
        return {rid for w in self.pool_workers() for rid in w.ctx.ledger.requests()}

    def node_seen(self, node_id: str, provider: str | None = None) -> None:
        """The node cache reported `node_id` (of `provider`; None: not known): the ledgers
        of the pools that may have created it let the cache count it."""
        for worker in self.pool_workers(provider):
            worker.ctx.ledger.node_seen(node_id)

    def wake_pools(self, provider: str | None = None) -> None:
        """Wake the pool workers (of `provider` only, when given)."""
        for worker in self.pool_workers(provider):
            worker.wake()


class _HeldBy:
    """`node_id in view`: one of these ledgers' requests in flight holds the node."""

    def __init__(self, ledgers: list[PoolLedger]) -> None:
        self._ledgers = ledgers

    def __contains__(self, node_id: object) -> bool:
        return isinstance(node_id, str) and any(ledger.holds(node_id) for ledger in self._ledgers)
