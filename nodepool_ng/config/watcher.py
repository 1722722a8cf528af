"""Pick up config edits without a restart. Daemons call `check()` from their main loop.

An edit that does not validate is logged (once) and ignored: the daemon keeps running on the
last good config. So is an empty main file (a write in progress, almost always). Compare
`old.providers[name] == new.providers[name]` to find what changed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from nodepool_ng.config.loader import load_config
from nodepool_ng.config.models import Config
from nodepool_ng.errors import ConfigError

log = logging.getLogger("nodepool_ng.config")

_Snapshot = tuple[bytes | None, bytes | None]


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


class ConfigWatcher:
    """Reloads `path` (and `secure_path`) when their content changes and they validate."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        secure_path: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.secure_path = os.fspath(secure_path) if secure_path is not None else None
        self.env = env
        self.config: Config | None = None
        self.last_error: ConfigError | None = None
        self._seen: _Snapshot | None = None

    def load(self) -> Config:
        """Initial load for daemon start-up; raises ConfigError if the files are invalid."""
        snapshot = self._snapshot()
        config = load_config(self.path, self.secure_path, env=self.env)
        self.config, self._seen, self.last_error = config, snapshot, None
        return config

    def check(self) -> Config | None:
        """A new Config if the files changed to a valid, different config; otherwise None."""
        # The files are small; comparing their bytes is cheaper than being fooled by
        # coarse mtimes or editors that restore them.
        snapshot = self._snapshot()
        if snapshot == self._seen:
            return None
        self._seen = snapshot
        if snapshot[0] is not None and not snapshot[0].strip():
            # An empty file would be a valid config with no providers, and applying it
            # would stop every provider: far more likely a write caught between truncate
            # and write (or a mistake) than a wish. `providers: []` says it on purpose.
            log.error("Ignoring configuration change in %s: the file is empty", self.path)
            return None
        try:
            config = load_config(self.path, self.secure_path, env=self.env)
        except ConfigError as exc:
            self.last_error = exc
            log.error("Ignoring invalid configuration change in %s: %s", self.path, exc)
            return None
        self.last_error = None
        if config == self.config:
            return None
        self.config = config
        log.info("Loaded new configuration from %s", self.path)
        return config

    def _snapshot(self) -> _Snapshot:
        return _read(self.path), _read(self.secure_path)
