"""`PoolContext`: who a pool is and the collaborators its worker and handlers share.

The pool's config and launcher-pool id, the ZooKeeper view, the provider's adapter and
runner, and the pool's own state objects: its `PoolLedger` (what it promised), its
`PoolQuota` (quota bookkeeping) and its `UnusedNodeFreer`. What a new node is
(`launchspec.py`) and static host matching (`static_pool.py`) are functions of this context.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from nodepool_ng.config.models import Config, PoolConfig, ProviderConfig
from nodepool_ng.drivers.base import ProviderAdapter
from nodepool_ng.launcher.assignment import PoolInfo
from nodepool_ng.launcher.ledger import PoolLedger
from nodepool_ng.launcher.node_index import NodeIndex
from nodepool_ng.launcher.pool_quota import CLOUD_QUOTA_TTL, PoolQuota, UnusedNodeFreer
from nodepool_ng.launcher.runner import ProviderRunner
from nodepool_ng.launcher.stats import LauncherStats
from nodepool_ng.launcher.zkview import LauncherZK
from nodepool_ng.model.node import Node


@dataclass
class PoolContext:
    config: Config  # replaced on a config reload (the pool's own config does not change)
    provider: ProviderConfig
    pool: PoolConfig
    pool_id: str
    zk: LauncherZK
    adapter: ProviderAdapter
    runner: ProviderRunner
    wake: Callable[[], None]
    stats: LauncherStats = field(default_factory=LauncherStats)
    cloud_quota_ttl: float = CLOUD_QUOTA_TTL
    # What this pool promised: the one owner of that state.
    ledger: PoolLedger = field(default_factory=PoolLedger)
    # The launcher's index of the node cache (`node_index.py`; empty: a test without nodes).
    index: NodeIndex = field(default_factory=NodeIndex)
    quota: PoolQuota = field(init=False)
    freer: UnusedNodeFreer = field(init=False)

    def __post_init__(self) -> None:
        self.quota = PoolQuota(self.provider, self.pool, self.pool_id, self.zk, self.adapter,
                               self.ledger, self.cloud_quota_ttl, self.index)
        self.freer = UnusedNodeFreer(self.zk, self.pool_id, self.provider.name, self.pool.name,
                                     self.provider.launches_servers, self.index)

    def info(self, paused: bool = False) -> PoolInfo:
        return PoolInfo(
            id=self.pool_id,
            provider_name=self.provider.name,
            name=self.pool.name,
            supported_labels=self.pool.label_names,
            priority=self.provider.pool_priority(self.pool),
            paused=paused,
        )

    def owns(self, node: Node) -> bool:
        return node.provider == self.provider.name and node.pool == self.pool.name
