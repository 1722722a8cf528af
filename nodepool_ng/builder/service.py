"""The builder daemon: workers, component registration, config reload, timing.

Threads: N BuildWorkers, M UploadWorkers, one CleanupWorker (runtime.Worker each), plus an
APScheduler BackgroundScheduler that drives the timing: periodic build checks (which carry
`rebuild-age` and manual `request-build`), upload checks, cleanup, config reload, and a one-off
wake-up at the moment each image's newest build reaches its `rebuild-age`. Work also flows
directly: a finished build wakes the upload workers, a finished upload wakes cleanup, and a
watch on each image's znode wakes the build workers when `request-build` appears.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler

from nodepool_ng import __version__
from nodepool_ng.builder.build import BuildOutcome, BuildWorker
from nodepool_ng.builder.cleanup import CleanupWorker
from nodepool_ng.builder.context import AdapterFactory, BuilderContext, ImageAdapter, stop_adapter
from nodepool_ng.builder.upload import UploadBackoff, UploadOutcome, UploadWorker
from nodepool_ng.config.models import Config, ProviderConfig
from nodepool_ng.config.watcher import ConfigWatcher
from nodepool_ng.drivers import registry
from nodepool_ng.errors import ConfigError, NodepoolError
from nodepool_ng.events import BuilderEvents, start_builder_events
from nodepool_ng.model.component import BuilderComponent, ComponentState
from nodepool_ng.model.image import BuildState
from nodepool_ng.zk import paths
from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.components import ComponentRegistry
from nodepool_ng.zk.images import ImageStore

log = logging.getLogger("nodepool_ng.builder")

BUILDER_ID_FILE = "builder_id.txt"


@dataclass(frozen=True)
class BuilderTiming:
    """How often each kind of check runs (tests shorten them)."""

    build_interval: float = 10.0
    upload_interval: float = 10.0
    cleanup_interval: float = 60.0
    config_interval: float = 5.0
    upload_retry_base: float = 2.0
    upload_retry_cap: float = 300.0


def read_builder_id(images_dir: str) -> str:
    """The builder's persistent UUID in `<images-dir>/builder_id.txt` (created on first use)."""
    os.makedirs(images_dir, exist_ok=True)
    path = os.path.join(images_dir, BUILDER_ID_FILE)
    try:
        with open(path) as f:
            value = f.read().strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    value = str(uuid.uuid4())
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(value + "\n")
    os.replace(tmp, path)
    return value


class Builder:
    def __init__(
        self,
        config_path: str,
        secure_path: str | None = None,
        build_workers: int = 1,
        upload_workers: int = 4,
        timing: BuilderTiming | None = None,
        hostname: str | None = None,
        adapter_factory: AdapterFactory | None = None,
        clouds_yaml: str | None = None,
    ) -> None:
        """`clouds_yaml` replaces openstacksdk's search (else OS_CLIENT_CONFIG_FILE, ...)."""
        if build_workers < 1 or upload_workers < 1:
            raise ConfigError("--build-workers and --upload-workers must be at least 1")
        self.watcher = ConfigWatcher(config_path, secure_path)
        self.num_build_workers = build_workers
        self.num_upload_workers = upload_workers
        self.timing = timing or BuilderTiming()
        self.hostname = hostname or socket.getfqdn()
        self._adapter_factory = adapter_factory or (
            lambda provider: default_adapter_factory(provider, clouds_yaml)
        )
        self._adapters: dict[str, tuple[ProviderConfig, ImageAdapter]] = {}
        # Adapters of providers the last reload removed (handed to the context's cleanup).
        self._removed: dict[str, ImageAdapter] = {}
        self.ctx: BuilderContext | None = None
        self.zk: ZooKeeperClient | None = None
        self.component: BuilderComponent | None = None
        self.components: ComponentRegistry | None = None
        self.build_workers: list[BuildWorker] = []
        self.upload_workers: list[UploadWorker] = []
        self.cleanup_worker: CleanupWorker | None = None
        self.scheduler: BackgroundScheduler | None = None
        self._stopped = threading.Event()
        self._watched_images: set[str] = set()
        # The scheduler's periodic check and a SIGHUP's check run one at a time.
        self._config_check_lock = threading.Lock()
        self.events: BuilderEvents | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Connect, register, start the workers; ConfigError / ZooKeeperError on failure."""
        config = self.watcher.load()
        if not config.images_dir:
            raise ConfigError("images-dir is required by nodepool-builder", path="images-dir")
        if not config.zookeeper_servers:
            raise ConfigError("at least one server is required", path="zookeeper-servers")
        builder_id = read_builder_id(config.images_dir)
        tls = config.zookeeper_tls
        self.zk = ZooKeeperClient(
            config.zookeeper_hosts(),
            tls_cert=tls.cert if tls else None,
            tls_key=tls.key if tls else None,
            tls_ca=tls.ca if tls else None,
            session_timeout=config.zookeeper_timeout,
        )
        self.zk.start()
        self.ctx = BuilderContext(
            config,
            self.zk,
            ImageStore(self.zk),
            self.hostname,
            builder_id,
            self._update_adapters(config),
            adapter_factory=self._adapter_factory,
        )
        # MQTT events of this builder's builds and uploads (an observer of the image tree).
        self.events = start_builder_events(config, self.hostname, self.zk, builder_id)
        self.components = ComponentRegistry(self.zk)
        self.component = BuilderComponent(hostname=self.hostname, version=__version__)
        self.components.register(self.component)

        backoff = UploadBackoff(self.timing.upload_retry_base, self.timing.upload_retry_cap)
        self.cleanup_worker = CleanupWorker(self.ctx, interval=self.timing.cleanup_interval)
        self.build_workers = [
            BuildWorker(self.ctx, i, self.timing.build_interval, self._on_build_done)
            for i in range(self.num_build_workers)
        ]
        self.upload_workers = [
            UploadWorker(self.ctx, i, backoff, self.timing.upload_interval, self._on_upload_done)
            for i in range(self.num_upload_workers)
        ]
        # A pass of these runs a whole build or upload, with timeouts of their own
        # (build-timeout, image-upload-timeout): the watchdog only checks they are alive.
        for long_job in [*self.build_workers, *self.upload_workers]:
            long_job.max_pass = math.inf
        for worker in [self.cleanup_worker, *self.build_workers, *self.upload_workers]:
            worker.start()
        self._start_scheduler()
        self._watch_images(config)
        self.ctx.stats.workers(self.num_build_workers, self.num_upload_workers)
        self.components.update(self.component, state=ComponentState.RUNNING)
        log.info(
            "Builder %s (id %s) started: %d build, %d upload workers",
            self.hostname,
            builder_id,
            self.num_build_workers,
            self.num_upload_workers,
        )

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        log.info("Stopping builder")
        if self.ctx is not None:
            self.ctx.stopping.set()  # kills a running DIB
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        workers = [*self.build_workers, *self.upload_workers]
        if self.cleanup_worker is not None:
            workers.append(self.cleanup_worker)
        for worker in workers:
            worker.stop()
        for worker in workers:
            worker.join(30)
        for _, adapter in self._adapters.values():
            stop_adapter(adapter)
        for adapter in self._removed.values():
            stop_adapter(adapter)
        if self.ctx is not None:
            self.ctx.release_all_retired()
        if self.events is not None:
            self.events.stop()
        if self.zk is not None:
            try:
                if self.component is not None and self.components is not None:
                    self.components.unregister(self.component)
            except NodepoolError:
                pass
            self.zk.stop()

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def problem(self) -> str | None:
        """What the watchdog must know beyond the workers: the scheduler (it drives the
        periodic checks and the config reload) stopped running."""
        if self._stopped.is_set() or self.scheduler is None or self.scheduler.running:
            return None
        return "the builder's scheduler is not running"

    # -- timing ----------------------------------------------------------------------------
    def _start_scheduler(self) -> None:
        t = self.timing
        self.scheduler = BackgroundScheduler(daemon=True)
        periodic = {
            "build-check": (self.wake_builds, t.build_interval),
            "upload-check": (self.wake_uploads, t.upload_interval),
            "cleanup": (self.wake_cleanup, t.cleanup_interval),
            "config": (self.check_config, t.config_interval),
        }
        for job_id, (func, seconds) in periodic.items():
            self.scheduler.add_job(
                func, "interval", seconds=seconds, id=job_id, coalesce=True, max_instances=1
            )
        self.scheduler.start()
        self._schedule_rebuilds()

    def _schedule_rebuilds(self) -> None:
        """A one-off wake-up when each image's newest READY build reaches `rebuild-age`."""
        if self.scheduler is None or self.ctx is None:
            return
        config = self.ctx.config
        for image in config.diskimages.values():
            try:
                builds = self.ctx.images.builds.builds(image.name)
            except NodepoolError:
                continue
            ready = [b for b in builds if b.state == BuildState.READY and b.state_time]
            if not ready:
                continue
            due = max(b.state_time or 0.0 for b in ready) + image.rebuild_age + 0.5
            when = datetime.fromtimestamp(max(due, time.time()), tz=UTC)
            self.scheduler.add_job(
                self.wake_builds,
                "date",
                run_date=when,
                id=f"rebuild-{image.name}",
                replace_existing=True,
            )

    def wake_builds(self) -> None:
        for w in self.build_workers:
            w.wake()

    def wake_uploads(self) -> None:
        for w in self.upload_workers:
            w.wake()

    def wake_cleanup(self) -> None:
        if self.cleanup_worker is not None:
            self.cleanup_worker.wake()

    def _on_build_done(self, outcome: BuildOutcome) -> None:
        if outcome.state == BuildState.READY:
            self.wake_uploads()
            self._schedule_rebuilds()
        self.wake_cleanup()

    def _on_upload_done(self, outcome: UploadOutcome) -> None:
        self.wake_cleanup()

    def _watch_images(self, config: Config) -> None:
        """Wake the build workers as soon as `request-build` or `pause` changes."""
        assert self.zk is not None
        for name in config.diskimages:
            if name in self._watched_images:
                continue
            path = paths.image_path(name)
            try:
                self.zk.ensure_path(path)
            except NodepoolError as e:
                log.warning("Cannot watch image %s: %s", name, e)
                continue

            def changed(children: list[str] | None, _name: str = name) -> bool:
                if self._stopped.is_set():
                    return False  # removes the watch
                self.wake_builds()
                return True

            self.zk.kazoo.ChildrenWatch(path, changed)
            self._watched_images.add(name)

    # -- config ----------------------------------------------------------------------------
    def reload_config(self) -> None:
        """Check the config files now (SIGHUP). In a thread of its own: a signal handler
        runs in the main thread and must not do the work itself."""
        threading.Thread(target=self.check_config, name="ConfigReload", daemon=True).start()

    def check_config(self) -> None:
        with self._config_check_lock:
            self._check_config()

    def _check_config(self) -> None:
        if self.ctx is None:
            return  # not started: start() loads the files itself; leave the change to it
        try:
            config = self.watcher.check()
        except Exception:
            log.exception("Config reload failed")
            return
        if config is None:
            return
        adapters = self._update_adapters(config)
        removed, self._removed = self._removed, {}
        self.ctx.set_config(config, adapters, removed)
        self._watch_images(config)
        self._schedule_rebuilds()
        self.wake_builds()
        self.wake_uploads()
        self.wake_cleanup()

    def _update_adapters(self, config: Config) -> dict[str, ImageAdapter]:
        """Keep adapters of unchanged providers; make new ones; set removed ones aside."""
        out: dict[str, tuple[ProviderConfig, ImageAdapter]] = {}
        for name, provider in config.providers.items():
            # Also providers without diskimages: their old uploads must still be deleted.
            if registry.get(provider.driver).make_image_adapter is None:
                continue
            old = self._adapters.get(name)
            if old is not None and old[0] == provider:
                out[name] = old
                continue
            try:
                out[name] = (provider, self._adapter_factory(provider))
            except NodepoolError as e:
                log.error("Provider %s: cannot start its cloud adapter: %s", name, e)
        for name, (_, adapter) in self._adapters.items():
            if name not in out:
                # Removed: cleanup still needs it to delete the provider's uploads.
                self._removed[name] = adapter
            elif out[name][1] is not adapter:
                stop_adapter(adapter)
        self._adapters = out
        return {name: adapter for name, (_, adapter) in out.items()}


def default_adapter_factory(
    provider: ProviderConfig, clouds_yaml: str | None = None
) -> ImageAdapter:
    """The provider's image adapter from its driver's registry entry (the builder only uses
    image methods). Only for drivers with images (`make_image_adapter`)."""
    make = registry.get(provider.driver).make_image_adapter
    if make is None:
        raise ConfigError(f"provider {provider.name}: driver {provider.driver} has no images")
    return make(provider, registry.AdapterOptions(clouds_yaml=clouds_yaml))
