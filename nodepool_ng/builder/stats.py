"""What the builder reports to statsd and Prometheus (upstream's statsd families); the names live in
`nodepool_ng.metrics`.

A failing statsd never affects a build or an upload: errors are logged at debug level.
`...image.<image>.build.state` and `...provider.<p>.upload.state` use upstream's values
(`metrics.IMAGE_STATE_VALUES`: 0 idle, 1 building, 2 uploading, 3 paused).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping

from nodepool_ng import metrics

log = logging.getLogger("nodepool_ng.builder.stats")


class BuilderStats:
    def __init__(self, hostname: str, client: object | None = None) -> None:
        self.hostname = hostname
        self.client = client if client is not None else metrics.make_client()
        self._lock = threading.Lock()
        self._current = {"current_builds": 0, "current_uploads": 0}
        self._paused: set[str] = set()

    def _send(self, kind: str, key: str, value: float) -> None:
        try:
            if kind == "incr":
                self.client.incr(key)  # type: ignore[attr-defined]
            else:
                getattr(self.client, kind)(key, value)
        except Exception:  # stats must never break the builder
            log.debug("statsd %s %s failed", kind, key, exc_info=True)

    def workers(self, build_workers: int, upload_workers: int) -> None:
        self._send("gauge", metrics.builder_gauge(self.hostname, "build_workers"), build_workers)
        self._send("gauge", metrics.builder_gauge(self.hostname, "upload_workers"), upload_workers)

    def _current_changed(self, name: str, delta: int) -> None:
        with self._lock:
            self._current[name] += delta
            value = self._current[name]
        self._send("gauge", metrics.builder_gauge(self.hostname, name), value)

    def _state(self, key: str, state: str) -> None:
        self._send("gauge", key, metrics.IMAGE_STATE_VALUES[state])

    def build_requests(self, requested: Mapping[str, bool]) -> None:
        """requested: each configured image -> whether a manual build request (`nodepool
        image-build`) is outstanding. Gauges `image_build_requests` (how many) and
        `image.<image>.image_build_requests` (0 or 1)."""
        for image, flag in requested.items():
            self._send("gauge", metrics.image_image_build_requests(image), int(flag))
        self._send("gauge", metrics.image_build_requests(), sum(map(bool, requested.values())))

    def image_paused(self, image: str, paused: bool) -> None:
        """`build.state` 3 when `image` becomes paused, 0 (idle) when it is no longer; sent
        on changes only, so a pass over the images never hides a running build's 1."""
        with self._lock:
            if (image in self._paused) == paused:
                return
            if paused:
                self._paused.add(image)
            else:
                self._paused.discard(image)
        key = metrics.builder_build_state(self.hostname, image)
        self._state(key, "paused" if paused else "idle")

    def build_started(self, image: str | None = None) -> None:
        """With `image`: its `build.state` is 1 (building) until build_finished."""
        self._current_changed("current_builds", 1)
        if image is not None:
            self._state(metrics.builder_build_state(self.hostname, image), "building")

    def build_finished(
        self, image: str, ok: bool, seconds: float, output_base: str, formats: Iterable[str]
    ) -> None:
        """rc is 0 for a good build, 1 for a failed one; sizes of the files written."""
        self._current_changed("current_builds", -1)
        self._state(metrics.builder_build_state(self.hostname, image), "idle")
        if ok:
            for fmt in formats:
                try:
                    size = os.path.getsize(f"{output_base}.{fmt}")
                except OSError:
                    continue
                self._send("gauge", metrics.dib_image_build_size(image, fmt), size)
        self._send("gauge", metrics.dib_image_build_status(image, "rc"), 0 if ok else 1)
        self._send("timing", metrics.dib_image_build_status(image, "duration"), int(seconds * 1000))
        self._send("gauge", metrics.dib_image_build_status(image, "last_build"), int(time.time()))

    def upload_started(self, image: str | None = None, provider: str | None = None) -> None:
        """With `image` and `provider`: `upload.state` is 2 (uploading) until the end."""
        self._current_changed("current_uploads", 1)
        if image is not None and provider is not None:
            key = metrics.builder_upload_state(self.hostname, image, provider)
            self._state(key, "uploading")

    def upload_finished(self, image: str, provider: str, ok: bool, seconds: float) -> None:
        """Like upstream, `image_update` counts and times successful uploads only."""
        self._current_changed("current_uploads", -1)
        self._state(metrics.builder_upload_state(self.hostname, image, provider), "idle")
        if ok:
            key = metrics.image_update(image, provider)
            self._send("timing", key, int(seconds * 1000))
            self._send("incr", key, 1)
