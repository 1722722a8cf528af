"""UploadWorker: put the newest READY build into every provider that uses it.

Each worker walks provider x diskimage pairs and takes the build+provider upload lock
non-blocking, so M workers upload M pairs in parallel and a slow or failing cloud only ties
up the worker that is talking to it. A failed upload is retried with exponential backoff (per
provider, image and build, shared by all workers) for as long as the build is the newest,
like upstream (which has no retry limit); each record carries its `attempt` number and cleanup
removes the `failed` ones.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from nodepool_ng.builder import formats, policy
from nodepool_ng.builder.context import BuilderContext, ImageAdapter
from nodepool_ng.config.models import Config, DiskImageConfig, ProviderConfig
from nodepool_ng.drivers import registry
from nodepool_ng.drivers.base import META_BUILD_ID, META_PROVIDER_NAME, META_UPLOAD_ID
from nodepool_ng.errors import LockError, NodepoolError, ZooKeeperError
from nodepool_ng.model.image import ImageBuild, ImageUpload, UploadState
from nodepool_ng.runtime import Worker
from nodepool_ng.zk.images import ImageStore

log = logging.getLogger("nodepool_ng.builder.upload")

# Extra keys of an upload record: the provider's clouds.yaml cloud and region.
CLOUD_KEY = "cloud"
# The provider's driver, so a removed provider's image adapter can be rebuilt (records
# without it are OpenStack's).
DRIVER_KEY = "driver"
REGION_KEY = "region_name"
# Extra key of an upload record: 1 for the first try of a build for a provider, then 2, ...
ATTEMPT_KEY = "attempt"


class UploadBackoff:
    """Failed attempts per (provider, image, build): when the next try is due."""

    def __init__(self, base: float = 2.0, cap: float = 300.0) -> None:
        self.base = base
        self.cap = cap
        self._lock = threading.Lock()
        self._failures: dict[tuple[str, str, str], tuple[int, float]] = {}

    def due_in(self, key: tuple[str, str, str], now: float) -> float:
        with self._lock:
            attempts, at = self._failures.get(key, (0, 0.0))
        if not attempts:
            return 0.0
        return max(0.0, at + policy.retry_delay(attempts, self.base, self.cap) - now)

    def failed(self, key: tuple[str, str, str], now: float) -> int:
        with self._lock:
            attempts = self._failures.get(key, (0, 0.0))[0] + 1
            self._failures[key] = (attempts, now)
            return attempts

    def attempts(self, key: tuple[str, str, str]) -> int:
        """Failed attempts so far."""
        with self._lock:
            return self._failures.get(key, (0, 0.0))[0]

    def succeeded(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            self._failures.pop(key, None)


@dataclass(frozen=True)
class UploadOutcome:
    provider: str
    image: str
    build_id: str
    upload_id: str
    state: UploadState
    error: str | None = None


def external_name(provider: ProviderConfig, image: str, upload_id: str, now: float) -> str:
    try:
        return provider.image_name_format.format(
            image_name=image, timestamp=str(int(now)), upload_id=upload_id
        )
    except (KeyError, IndexError, ValueError) as e:
        # Config validation should have caught it; never lose an upload to a typo.
        log.warning("provider %s image-name-format: %s; using the default", provider.name, e)
        return f"{image}-{int(now)}"


def upload_metadata(
    image: DiskImageConfig, provider: ProviderConfig, build_id: str, upload_id: str
) -> dict[str, str]:
    """diskimage `metadata` + provider diskimage `meta` + nodepool's owner keys (which win)."""
    meta = {k: str(v) for k, v in image.metadata.items()}
    pdi = provider.diskimage(image.name)
    if pdi is not None:
        meta.update({k: str(v) for k, v in pdi.meta.items()})
    meta[META_BUILD_ID] = build_id
    meta[META_UPLOAD_ID] = upload_id
    meta[META_PROVIDER_NAME] = provider.name
    return meta


def upload_extra(provider: ProviderConfig, image: DiskImageConfig) -> dict[str, str]:
    """Extra `upload_image` arguments the provider's driver takes: `diskimage=` (the
    provider diskimage's name, for its per-image settings) where its registry entry says so."""
    if registry.get(provider.driver).upload_diskimage_arg:
        return {"diskimage": image.name}
    return {}


class UploadWorker(Worker):
    def __init__(
        self,
        ctx: BuilderContext,
        index: int,
        backoff: UploadBackoff,
        interval: float = 10.0,
        on_upload_done: Callable[[UploadOutcome], None] | None = None,
    ) -> None:
        super().__init__(f"UploadWorker.{index}", interval=interval, paused=ctx.zk_suspended)
        self.ctx = ctx
        self.backoff = backoff
        self.on_upload_done = on_upload_done
        # (provider, image, build) already reported as impossible (file deleted after upload).
        self._told_pruned: set[tuple[str, str, str]] = set()

    def run_once(self) -> float | None:
        config = self.ctx.config
        next_due: float | None = None
        for provider in sorted(config.providers.values(), key=lambda p: p.name):
            for pdi in provider.diskimages:
                if self.stopped:
                    return None
                image = config.diskimages.get(pdi.name)
                if pdi.pause or image is None:
                    continue
                try:
                    due = self.check(config, provider, image)
                except ZooKeeperError as e:
                    log.warning("Upload %s to %s: ZooKeeper error: %s", pdi.name, provider.name, e)
                    continue
                if due is not None:
                    next_due = due if next_due is None else min(next_due, due)
        return next_due

    def check(
        self, config: Config, provider: ProviderConfig, image: DiskImageConfig
    ) -> float | None:
        """Upload the image to the provider if due. Returns seconds until a backoff ends."""
        adapter = self.ctx.adapter(provider.name)
        if adapter is None:
            return None
        fmt = adapter.image_format
        store = self.ctx.images
        build = self._candidate(store, image.name, provider.name, fmt)
        if build is None or build.id is None:
            return None
        key = (provider.name, image.name, build.id)
        wait = self.backoff.due_in(key, time.time())
        if wait > 0:
            return wait
        path = formats.image_path(self.ctx.output_base(config, image.name, build.id), fmt)
        if not os.path.isfile(path):
            if fmt in policy.pruned_formats(build) and key not in self._told_pruned:
                self._told_pruned.add(key)
                log.warning(
                    "Cannot upload %s build %s to %s: its %s file was deleted after upload "
                    "(delete-after-upload); the image is built again for this provider",
                    image.name,
                    build.id,
                    provider.name,
                    fmt,
                )
            return None  # built elsewhere (that builder uploads it), or pruned
        try:
            lock = store.uploads.lock_uploads(image.name, build.id, provider.name)
        except LockError:
            return None
        try:
            # Double check under the lock: another builder may have uploaded it meanwhile.
            fresh = self._candidate(store, image.name, provider.name, fmt)
            if fresh is None or fresh.id != build.id:
                return None
            attempt = self.backoff.attempts(key) + 1
            outcome = self.upload(provider, image, build, adapter, fmt, path, attempt)
        finally:
            store.uploads.unlock(lock)
        if outcome.state == UploadState.READY:
            self.backoff.succeeded(key)
        else:
            attempts = self.backoff.failed(key, time.time())
            log.warning(
                "Upload of %s build %s to %s failed (attempt %d); retrying in %.0fs",
                image.name,
                build.id,
                provider.name,
                attempts,
                self.backoff.due_in(key, time.time()),
            )
        if self.on_upload_done is not None:
            self.on_upload_done(outcome)
        return None

    def _candidate(
        self, store: ImageStore, image: str, provider: str, fmt: str
    ) -> ImageBuild | None:
        builds = store.builds.builds(image)
        newest = policy.ready_builds(builds)
        if not newest:
            return None
        uploads = {b.id: store.uploads.uploads(image, b.id, provider) for b in newest[:1] if b.id}
        return policy.build_to_upload(newest[:1], uploads, fmt)

    def upload(
        self,
        provider: ProviderConfig,
        image: DiskImageConfig,
        build: ImageBuild,
        adapter: ImageAdapter,
        fmt: str,
        path: str,
        attempt: int = 1,
    ) -> UploadOutcome:
        store = self.ctx.images.uploads
        assert build.id is not None
        record = ImageUpload(
            image_name=image.name,
            build_id=build.id,
            provider_name=provider.name,
            state=UploadState.UPLOADING,
            format=fmt,
            username=build.username,
            python_path=build.python_path,
            shell_type=build.shell_type,
        )
        # Where the image lives, so it can still be deleted if the provider leaves the config
        # (extra keys: upstream readers ignore them).
        record.extra[CLOUD_KEY] = provider.cloud
        record.extra[DRIVER_KEY] = provider.driver
        # Which try of this build for this provider (`image-build --wait` shows it).
        record.extra[ATTEMPT_KEY] = attempt
        if provider.region_name:
            record.extra[REGION_KEY] = provider.region_name
        upload_id = store.create_upload(record)
        record.id = upload_id
        now = time.time()
        record.external_name = external_name(provider, image.name, upload_id, now)
        meta = upload_metadata(image, provider, build.id, upload_id)
        log.info(
            "Uploading %s build %s to %s as %s (%s)",
            image.name,
            build.id,
            provider.name,
            record.external_name,
            fmt,
        )
        error = None
        started = time.monotonic()
        self.ctx.stats.upload_started(image.name, provider.name)
        try:
            md5, sha256 = formats.read_checksums(path)
            record.external_id = adapter.upload_image(
                record.external_name,
                path,
                fmt,
                meta,
                float(provider.image_upload_timeout),
                md5=md5,
                sha256=sha256,
                **upload_extra(provider, image),
            )
        except (NodepoolError, OSError) as e:
            error = f"{type(e).__name__}: {e}"
        except Exception as e:  # an SDK error we did not map: still contained to this upload
            log.exception("Unexpected error uploading %s to %s", image.name, provider.name)
            error = f"{type(e).__name__}: {e}"
        if error is None and provider.post_upload_hook:
            error = self._run_hook(provider, adapter, record, path)
        if error is None:
            record.state = UploadState.READY
            log.info(
                "Uploaded %s build %s to %s: image %s",
                image.name,
                build.id,
                provider.name,
                record.external_id,
            )
        else:
            log.error(
                "Upload of %s build %s to %s failed: %s", image.name, build.id, provider.name, error
            )
            record.state = UploadState.FAILED
            record.extra["error"] = error
        self.ctx.stats.upload_finished(
            image.name, provider.name, error is None, time.monotonic() - started
        )
        store.store_upload(record)
        return UploadOutcome(provider.name, image.name, build.id, upload_id, record.state, error)

    def _run_hook(
        self, provider: ProviderConfig, adapter: ImageAdapter, record: ImageUpload, path: str
    ) -> str | None:
        import subprocess

        assert provider.post_upload_hook and record.external_id
        cmd = [provider.post_upload_hook, provider.name, record.external_id, path]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False)
            rc: int | str = proc.returncode
        except (OSError, subprocess.TimeoutExpired) as e:
            rc = str(e)
        if rc == 0:
            return None
        try:
            adapter.delete_image(record.external_id)
        except Exception as e:
            log.warning("Could not delete image %s after hook failure: %s", record.external_id, e)
        return f"post-upload-hook {provider.post_upload_hook} failed: {rc}"
