"""`nodepool` commands about diskimage builds and provider uploads."""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from typing import Any

from nodepool_ng import status
from nodepool_ng.cmd.admin_context import AdminContext, CommandError
from nodepool_ng.model.image import BuildState, UploadState
from nodepool_ng.status import Table
from nodepool_ng.znode_names import znode_name_problem

log = logging.getLogger("nodepool_ng.cmd.admin")

WAIT_POLL_SECONDS = 0.5


def cmd_dib_image_list(ctx: AdminContext, args: argparse.Namespace) -> None:
    ctx.show(status.dib_image_list(ctx.data.images.build_views(), ctx.data.images.paused_images()))


def cmd_image_list(ctx: AdminContext, args: argparse.Namespace) -> None:
    ctx.show(status.image_list(ctx.data.images.upload_views()))


def cmd_image_status(ctx: AdminContext, args: argparse.Namespace) -> None:
    ctx.show(status.image_status(ctx.data.images.image_status_views(ctx.config.diskimages)))


def cmd_image_pause(ctx: AdminContext, args: argparse.Namespace) -> None:
    ctx.data.images.set_image_paused(args.image, True)
    _report(ctx, {"image": args.image, "paused": True}, f"Image {args.image} builds paused")


def cmd_image_unpause(ctx: AdminContext, args: argparse.Namespace) -> None:
    ctx.data.images.set_image_paused(args.image, False)
    _report(ctx, {"image": args.image, "paused": False}, f"Image {args.image} builds resumed")


def _report(ctx: AdminContext, obj: dict[str, Any], text: str) -> None:
    ctx.print(json.dumps(obj) if ctx.as_json else text)


def cmd_image_delete(ctx: AdminContext, args: argparse.Namespace) -> None:
    ctx.data.images.mark_upload_deleting(args.image, args.build_id, args.provider, args.upload_id)
    _report(
        ctx,
        {
            "image": args.image,
            "build_id": args.build_id,
            "provider": args.provider,
            "upload_id": args.upload_id,
            "state": "deleting",
        },
        f"Upload {args.upload_id} of {args.image} build {args.build_id} on {args.provider} "
        "marked for deletion",
    )


def cmd_dib_image_delete(ctx: AdminContext, args: argparse.Namespace) -> None:
    image, sep, build_id = args.id.rpartition("-")
    if not sep or not image or not build_id:
        raise CommandError(f"dib image id {args.id!r} is not <image>-<build id>")
    for part in (image, build_id):
        if (problem := znode_name_problem(part)) is not None:
            raise CommandError(f"id: {problem}")
    ctx.data.images.mark_build_deleting(image, build_id)
    _report(
        ctx,
        {"id": args.id, "image": image, "build_id": build_id, "state": "deleting"},
        f"Build {build_id} of {image} marked for deletion",
    )


def cmd_image_build(ctx: AdminContext, args: argparse.Namespace) -> int | None:
    name = args.image
    diskimage = ctx.config.diskimages.get(name)
    if diskimage is None or getattr(diskimage, "abstract", False):
        raise CommandError(
            f"image {name!r} is not a diskimage in {ctx.config_path}; only diskimages are built"
        )
    if getattr(diskimage, "pause", False):
        raise CommandError(f"diskimage {name!r} is paused in {ctx.config_path}")
    known_builds = {b.build_id for b in ctx.data.images.build_views() if b.image == name}
    ctx.data.images.request_build(name)
    if not args.wait:
        _report(ctx, {"image": name, "build_request": "pending"}, f"Build of {name} requested")
        return None
    # Providers that will get an upload: those listing the image, unless paused there.
    providers = sorted(
        p.name
        for p in ctx.config.providers.values()
        if any(d.name == name and not d.pause for d in p.diskimages)
    )
    return BuildWatcher(ctx, name, known_builds, providers, args.timeout).run()


class BuildWatcher:
    """`image-build --wait`: show the build, then each provider's upload, until done.

    The builder retries a failed upload (with backoff) for as long as the build is the
    image's newest READY build, so a `failed` upload record is one attempt, not the end: the
    watcher shows it and keeps waiting for a `ready` upload of the build to that provider.
    The wait fails when the build fails, when the build is deleted or superseded by a newer
    READY build (the builder then never uploads it), or at `--timeout`, naming the providers
    still waiting and their last error.
    """

    def __init__(
        self,
        ctx: AdminContext,
        image: str,
        known_builds: set[str],
        providers: list[str],
        timeout: float | None,
    ) -> None:
        self.ctx = ctx
        self.image = image
        self.known_builds = known_builds
        self.providers = providers
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.start = time.monotonic()
        self.shown: dict[str, str] = {}
        self.last_error: dict[str, str] = {}

    def _say(self, key: str, state: str) -> None:
        if self.shown.get(key) == state:
            return
        self.shown[key] = state
        elapsed = time.monotonic() - self.start
        if self.ctx.as_json:
            self.ctx.print(json.dumps({"step": key, "state": state, "elapsed": round(elapsed, 1)}))
        else:
            self.ctx.print(f"[{elapsed:7.1f}s] {key}: {state}")
        self.ctx.out.flush()

    def _tick(self, waiting_for: str) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise CommandError(
                f"image {self.image}: {waiting_for} not done within --timeout {self.timeout:g}s"
            )
        time.sleep(WAIT_POLL_SECONDS)

    def run(self) -> int:
        self._say(f"{self.image} build", "requested")
        build_id = self._wait_build()
        self._wait_uploads(build_id)
        self._say(f"{self.image} build {build_id}", "built and uploaded")
        return 0

    def _wait_build(self) -> str:
        while True:
            builds = [
                b
                for b in self.ctx.data.images.build_views()
                if b.image == self.image and b.build_id not in self.known_builds
            ]
            if builds:
                build = builds[-1]
                state = str(build.data.get("state"))
                self._say(f"{self.image} build {build.build_id}", state)
                if state == "failed":
                    error = build.data.get("error")
                    raise CommandError(
                        f"image {self.image}: build {build.build_id} failed"
                        + (f": {error}" if error else "")
                    )
                if state == "ready":
                    return build.build_id
            self._tick("the build")

    def _wait_uploads(self, build_id: str) -> None:
        store = self.ctx.data.images.store.uploads
        pending = set(self.providers)
        while pending:
            self._check_build_current(build_id)
            for provider in sorted(pending):
                uploads = store.uploads(self.image, build_id, provider)
                if any(u.state == UploadState.READY for u in uploads):
                    self._say(f"upload to {provider}", "ready")
                    pending.discard(provider)
                    continue
                if not uploads:
                    continue
                latest = max(uploads, key=lambda u: (u.state_time or 0.0, u.id or ""))
                attempt = latest.extra.get("attempt")
                label = str(latest.state) + (f" (attempt {attempt})" if attempt else "")
                if latest.state == UploadState.FAILED:
                    error = str(latest.extra.get("error") or "unknown error")
                    self.last_error[provider] = error
                    label += f": {error}; the builder retries"
                self._say(f"upload to {provider}", label)
            if pending:
                self._tick(self._waiting_for(pending))

    def _waiting_for(self, pending: set[str]) -> str:
        parts = []
        for provider in sorted(pending):
            error = self.last_error.get(provider)
            parts.append(f"{provider} (last attempt failed: {error})" if error else provider)
        return "upload to " + ", ".join(parts)

    def _check_build_current(self, build_id: str) -> None:
        """Fail when the builder will never upload this build: deleted or superseded."""
        builds = self.ctx.data.images.store.builds.builds(self.image)
        mine = next((b for b in builds if b.id == build_id), None)
        if mine is None or mine.state != BuildState.READY:
            state = "deleted" if mine is None else str(mine.state)
            raise CommandError(f"image {self.image}: build {build_id} was {state} before upload")
        newer = [
            b
            for b in builds
            if b.state == BuildState.READY and (b.state_time or 0) > (mine.state_time or 0)
        ]
        if newer:
            raise CommandError(
                f"image {self.image}: build {build_id} was superseded by build {newer[-1].id} "
                "before its uploads finished (only the newest build is uploaded)"
            )


def cmd_alien_image_list(ctx: AdminContext, args: argparse.Namespace) -> None:
    from nodepool_ng.drivers import registry
    from nodepool_ng.drivers.base import META_BUILD_ID
    from nodepool_ng.statusdata import provider_adapter

    table = Table((("provider", "Provider"), ("name", "Name"), ("image_id", "Image ID")))
    ready = ctx.data.images.ready_upload_ids()
    names = sorted(ctx.config.providers)
    if args.provider:
        if args.provider not in ctx.config.providers:
            raise CommandError(f"provider {args.provider!r} is not in {ctx.config_path}")
        names = [args.provider]
    for name in names:
        if registry.get(ctx.config.providers[name].driver).make_image_adapter is None:
            continue  # a driver without images has no alien ones
        adapter = provider_adapter(ctx.config, name, ctx.clouds_yaml)
        try:
            for res in adapter.list_resources():
                if res.kind != "image" or META_BUILD_ID not in res.metadata:
                    continue
                if (name, res.external_id) in ready:
                    continue
                image_name = _image_name(adapter, res)
                table.rows.append(
                    {"provider": name, "name": image_name, "image_id": res.external_id}
                )
        finally:
            adapter.stop()
    ctx.show(table)


def _image_name(adapter: Any, res: Any) -> str | None:
    """The cloud's name for an alien image (not part of the driver's Resource record)."""
    name = getattr(res, "name", None) or res.metadata.get("name")
    if name:
        return str(name)
    try:
        return str(adapter.conn.image.get_image(res.external_id).name)
    except Exception as e:  # a name is nice to have; the id is what matters
        log.debug("Could not read the name of image %s: %s", res.external_id, e)
        return None


def cmd_export(ctx: AdminContext, args: argparse.Namespace) -> None:
    data = ctx.data.images.export_image_data()
    # Image data may name internal infrastructure: owner-only, as upstream does.
    fd = os.open(args.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
    os.chmod(args.path, 0o600)
    _report(ctx, {"path": args.path, "records": len(data)}, f"Exported {len(data)} records")


def cmd_import(ctx: AdminContext, args: argparse.Namespace) -> None:
    try:
        with open(args.path) as f:
            data = json.load(f)
    except OSError as e:
        raise CommandError(f"{args.path}: {e.strerror or e}") from None
    except ValueError as e:
        raise CommandError(f"{args.path}: not JSON: {e}") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise CommandError(f"{args.path}: expected a JSON object of znode path -> data string")
    count = ctx.data.images.import_image_data(data)
    _report(ctx, {"path": args.path, "records": count}, f"Imported {count} records")
