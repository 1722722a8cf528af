"""`delete-after-upload`: drop a build's local image files once every provider has it.

A READY build made by this builder whose every provider using the image (paused ones too)
has a READY upload of it loses its local image files and their checksum files, except the
formats in `keep-formats` (the `.d` manifest stays, it is small). The build record stays
READY with its `formats` unchanged (they say what was built and uploaded; an upstream builder
compares them with the required formats and would rebuild in a loop if they shrank). The
formats removed are listed in the record's extra key `pruned_formats` (comma-joined, like
`formats`; upstream readers ignore unknown keys).

When a provider later needs a pruned format of the newest build (a provider added to the
config, or its upload deleted) the file is gone: upstream then never uploads it until the
next scheduled build. Here the build worker sees the loss (`policy.build_reason`) and builds
the image again, which is uploaded everywhere.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping

from nodepool_ng.builder import formats, policy
from nodepool_ng.builder.context import BuilderContext
from nodepool_ng.config.models import Config, DiskImageConfig
from nodepool_ng.errors import LockError, RecordNotFound
from nodepool_ng.model.image import BuildState, ImageBuild, ImageUpload, UploadState

log = logging.getLogger("nodepool_ng.builder.prune")


def uploaded_everywhere(
    build: ImageBuild, users: Iterable[str], uploads: Mapping[str, Iterable[ImageUpload]]
) -> bool:
    """True when each provider in `users` (at least one) has a READY upload of `build`."""
    users = list(users)
    if not users:
        return False
    for provider in users:
        if not any(
            u.build_id == build.id and u.state == UploadState.READY
            for u in uploads.get(provider, ())
        ):
            return False
    return True


def prunable_formats(output_base: str, keep: Iterable[str]) -> list[str]:
    """Formats whose image file is on disk and not kept."""
    return sorted(set(formats.present_formats(output_base)) - set(keep))


def prune_build(
    ctx: BuilderContext, config: Config, image: DiskImageConfig, build: ImageBuild
) -> list[str]:
    """Remove the build's local image files except `keep-formats`; record what went.

    Returns the formats removed (empty when there was nothing to do or the build changed).
    """
    store = ctx.images.builds
    assert build.id is not None and build.image_name is not None
    base = ctx.output_base(config, image.name, build.id)
    if not prunable_formats(base, image.keep_formats):
        return []
    try:
        lock = store.lock_build(image.name, build.id)
    except LockError:
        return []  # being deleted (or pruned) by someone else: judge it next pass
    try:
        try:
            fresh = store.get_build(image.name, build.id)
        except RecordNotFound:
            return []
        if fresh.state != BuildState.READY:
            return []
        removed = prunable_formats(base, image.keep_formats)
        for fmt in removed:
            path = formats.image_path(base, fmt)
            for name in (path, f"{path}.md5", f"{path}.sha256"):
                try:
                    os.unlink(name)
                except FileNotFoundError:
                    pass
        pruned = policy.pruned_formats(fresh) | set(removed)
        fresh.extra[policy.PRUNED_FORMATS_KEY] = ",".join(sorted(pruned))
        # Keep the READY state_time: rebuild-age and rotation go by it.
        store.store_build(fresh)
    finally:
        store.unlock(lock)
    kept = sorted(set(formats.present_formats(base)))
    log.info(
        "Image %s build %s uploaded to every provider: deleted local %s (delete-after-upload)%s",
        image.name,
        build.id,
        ",".join(removed),
        f"; kept {','.join(kept)}" if kept else "",
    )
    return removed
