"""What the builder's workers share: config, ZooKeeper stores, cloud adapters, identity.

The service swaps `config` and the adapters on reload; workers read `ctx.config` once per pass
so a pass sees one consistent config.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping

from nodepool_ng.builder import formats
from nodepool_ng.builder.stats import BuilderStats
from nodepool_ng.config.models import Config, DiskImageConfig, ProviderConfig
from nodepool_ng.drivers import registry
from nodepool_ng.drivers.base import ImageAdapter
from nodepool_ng.errors import ConfigError
from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.images import ImageStore

log = logging.getLogger("nodepool_ng.builder")

AdapterFactory = Callable[[ProviderConfig], ImageAdapter]


def stop_adapter(adapter: ImageAdapter) -> None:
    stop = getattr(adapter, "stop", None)
    if stop is not None:
        stop()


class BuilderContext:
    def __init__(
        self,
        config: Config,
        zk: ZooKeeperClient,
        images: ImageStore,
        hostname: str,
        builder_id: str,
        adapters: Mapping[str, ImageAdapter] | None = None,
        adapter_factory: AdapterFactory | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._config = config
        self.zk = zk
        self.images = images
        self.hostname = hostname
        self.builder_id = builder_id
        self._adapters: dict[str, ImageAdapter] = dict(adapters or {})
        # Adapters of providers gone from the config, kept until their uploads are deleted.
        self._retired: dict[str, ImageAdapter] = {}
        self.adapter_factory = adapter_factory
        self.stopping = threading.Event()
        self.stats = BuilderStats(hostname)

    # -- config and adapters (swapped by the service on reload) -------------------------------
    @property
    def config(self) -> Config:
        with self._lock:
            return self._config

    def set_config(
        self,
        config: Config,
        adapters: Mapping[str, ImageAdapter],
        retired: Mapping[str, ImageAdapter] | None = None,
    ) -> None:
        """Swap config and adapters; `retired` are adapters of providers just removed."""
        stale = []
        with self._lock:
            self._config = config
            self._adapters = dict(adapters)
            for name, adapter in (retired or {}).items():
                if name not in self._adapters:
                    self._retired[name] = adapter
            for name in list(self._retired):
                if name in self._adapters:  # the provider is back: its live adapter serves
                    stale.append(self._retired.pop(name))
        for adapter in stale:
            stop_adapter(adapter)

    def retired_adapter(self, provider: str) -> ImageAdapter | None:
        """The adapter of a provider removed from the config, if this builder still has it."""
        with self._lock:
            return self._retired.get(provider)

    def add_retired(self, provider: str, adapter: ImageAdapter) -> None:
        with self._lock:
            old = self._retired.get(provider)
            self._retired[provider] = adapter
        if old is not None and old is not adapter:
            stop_adapter(old)

    def retired_providers(self) -> list[str]:
        with self._lock:
            return sorted(self._retired)

    def release_retired(self, provider: str) -> None:
        """Stop a removed provider's adapter: none of its uploads is left to delete."""
        with self._lock:
            adapter = self._retired.pop(provider, None)
        if adapter is not None:
            log.info("Provider %s: all uploads of the removed provider deleted", provider)
            stop_adapter(adapter)

    def release_all_retired(self) -> None:
        for name in self.retired_providers():
            with self._lock:
                adapter = self._retired.pop(name, None)
            if adapter is not None:
                stop_adapter(adapter)

    def adapter(self, provider: str) -> ImageAdapter | None:
        with self._lock:
            return self._adapters.get(provider)

    def adapters(self) -> dict[str, ImageAdapter]:
        with self._lock:
            return dict(self._adapters)

    def zk_suspended(self) -> bool:
        return not self.zk.is_connected

    # -- derived facts ---------------------------------------------------------------------
    def images_dir(self, config: Config) -> str:
        if not config.images_dir:
            raise ConfigError("images-dir is required to build images", path="images-dir")
        return config.images_dir

    def providers_of(self, config: Config, image: str) -> list[ProviderConfig]:
        """Providers (by name) that upload `image`: their driver has images to upload."""
        return [
            p
            for _, p in sorted(config.providers.items())
            if registry.get(p.driver).make_image_adapter is not None
            and p.diskimage(image) is not None
        ]

    def provider_format(self, provider: str) -> str | None:
        adapter = self.adapter(provider)
        return adapter.image_format if adapter is not None else None

    def required_formats(self, config: Config, image: DiskImageConfig) -> tuple[str, ...]:
        """The image's `formats` plus each using provider's cloud image format."""
        wanted = []
        for provider in self.providers_of(config, image.name):
            fmt = self.provider_format(provider.name)
            if fmt:
                wanted.append(fmt)
        return formats.required_formats(image.formats, wanted)

    def output_base(self, config: Config, image: str, build_id: str) -> str:
        return os.path.join(self.images_dir(config), f"{image}-{build_id}")
