"""BuildWorker: decide which diskimages need a build, build them, record the result.

A build is needed when the image has no READY build, its newest READY build is older than
`rebuild-age`, lacks a format the providers need, or a manual build was requested. The image
build lock (`/nodepool/images/<image>/builds/lock`) makes one builder build an image at a time;
the record goes `building` -> `ready` | `failed` (with the DIB log path in `error`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from nodepool_ng.builder import dib, formats, policy
from nodepool_ng.builder.context import BuilderContext
from nodepool_ng.config.models import Config, DiskImageConfig
from nodepool_ng.errors import ImageBuildError, LockError, ZooKeeperError
from nodepool_ng.model.image import BuildState, ImageBuild, UploadState
from nodepool_ng.runtime import Worker

log = logging.getLogger("nodepool_ng.builder.build")

# Key under which a failed build's reason (naming the DIB log) is kept in its record. Unknown
# keys are ignored by upstream readers and kept by ours.
ERROR_KEY = "error"


@dataclass(frozen=True)
class BuildOutcome:
    image: str
    build_id: str
    state: BuildState
    error: str | None = None


class BuildWorker(Worker):
    """One build thread. Several may run; the image build lock keeps them apart."""

    def __init__(
        self,
        ctx: BuilderContext,
        index: int,
        interval: float = 10.0,
        on_build_done: Callable[[BuildOutcome], None] | None = None,
    ) -> None:
        super().__init__(f"BuildWorker.{index}", interval=interval, paused=ctx.zk_suspended)
        self.ctx = ctx
        self.on_build_done = on_build_done

    def run_once(self) -> float | None:
        config = self.ctx.config
        store = self.ctx.images.flags
        requested: dict[str, bool] = {}
        for image in sorted(config.diskimages.values(), key=lambda d: d.name):
            if self.stopped:
                break
            try:
                self.check_image(config, image)
                # The state gauges (doc/metrics.md): manual requests left, paused images.
                requested[image.name] = store.build_requested_at(image.name) is not None
                self.ctx.stats.image_paused(image.name, image.pause or store.is_paused(image.name))
            except ZooKeeperError as e:
                log.warning("Image %s: ZooKeeper error while checking builds: %s", image.name, e)
        if not self.stopped:
            self.ctx.stats.build_requests(requested)
        return None

    def check_image(self, config: Config, image: DiskImageConfig) -> BuildOutcome | None:
        """Build `image` now if it needs it and no other builder is building it."""
        store = self.ctx.images
        required = self.ctx.required_formats(config, image)
        if image.pause or not required or store.flags.is_paused(image.name):
            return None
        if not self._build_reason(config, image, required)[0]:
            return None
        try:
            lock = store.builds.lock_image_builds(image.name)
        except LockError:
            return None  # another builder is on it
        try:
            # Double check under the lock: another builder may have just finished.
            reason, requested = self._build_reason(config, image, required)
            if not reason:
                return None
            log.info("Building image %s: %s", image.name, reason)
            outcome = self.build(config, image, required)
            if requested and outcome.state == BuildState.READY:
                store.flags.remove_build_request(image.name)
        finally:
            store.builds.unlock(lock)
        if self.on_build_done is not None:
            self.on_build_done(outcome)
        return outcome

    def _build_reason(
        self, config: Config, image: DiskImageConfig, required: Iterable[str]
    ) -> tuple[str | None, bool]:
        """Why `image` needs a build now (policy.build_reason on fresh reads) or None, and
        whether a build was requested (`nodepool image-build`)."""
        store = self.ctx.images
        requested = store.flags.build_requested_at(image.name) is not None
        builds = store.builds.builds(image.name)
        reason = policy.build_reason(builds, required, image.rebuild_age, time.time(),
                                     requested, self.pending_formats(config, image, builds))
        return reason, requested

    def pending_formats(
        self, config: Config, image: DiskImageConfig, builds: list[ImageBuild]
    ) -> set[str]:
        """Formats of (unpaused) providers with no READY upload of the newest READY build,
        looked up only when that build had files deleted after upload."""
        ready = policy.ready_builds(builds)
        if not ready or not ready[0].id or not policy.pruned_formats(ready[0]):
            return set()
        newest = ready[0]
        assert newest.id is not None
        out: set[str] = set()
        for provider in self.ctx.providers_of(config, image.name):
            pdi = provider.diskimage(image.name)
            fmt = self.ctx.provider_format(provider.name)
            if pdi is None or pdi.pause or not fmt:
                continue
            uploads = self.ctx.images.uploads.uploads(image.name, newest.id, provider.name)
            if not any(u.state == UploadState.READY for u in uploads):
                out.add(fmt)
        return out

    def build(
        self, config: Config, image: DiskImageConfig, required: tuple[str, ...]
    ) -> BuildOutcome:
        store = self.ctx.images.builds
        build_id = uuid.uuid4().hex
        record = ImageBuild(
            image_name=image.name,
            id=build_id,
            state=BuildState.BUILDING,
            builder=self.ctx.hostname,
            builder_id=self.ctx.builder_id,
            formats=list(required),
            username=image.username,
            python_path=image.python_path,
            shell_type=image.shell_type,
        )
        store.create_build(record)
        session = self.ctx.zk.session_generation
        job = dib.DibJob(
            image_name=image.name,
            build_id=build_id,
            elements=image.elements,
            formats=dib.dib_formats(required, formats.native_dib_formats()),
            images_dir=self.ctx.images_dir(config),
            log_dir=config.build_log_dir,
            dib_cmd=image.dib_cmd,
            release=image.release or None,
            env_vars=image.env_vars,
            elements_dir=config.elements_dir,
            timeout=float(image.build_timeout),
        )
        error: str | None = None
        started = time.monotonic()
        self.ctx.stats.build_started(image.name)
        try:
            dib.run_dib(job, retention=config.build_log_retention, stop=self.ctx.stopping)
            record.formats = formats.ensure_formats(job.output_base, required)
            if self.ctx.zk.session_generation != session:
                raise ImageBuildError(
                    f"image {image.name} build {build_id}: ZooKeeper session lost during the "
                    f"build; log: {job.log_path}"
                )
        except ImageBuildError as e:
            error = str(e)
        except OSError as e:
            error = f"image {image.name} build {build_id}: {e}; log: {job.log_path}"
        if error is None:
            record.state = BuildState.READY
            log.info("Image %s build %s ready: %s", image.name, build_id, ",".join(record.formats))
        else:
            log.error("%s", error)
            formats.remove_build_files(job.output_base)
            record.state = BuildState.FAILED
            record.extra[ERROR_KEY] = error
        self.ctx.stats.build_finished(
            image.name, error is None, time.monotonic() - started, job.output_base, record.formats
        )
        store.store_build(record)
        return BuildOutcome(image.name, build_id, record.state, error)
