"""What every `nodepool` command shares: lazily loaded config, ZooKeeper, output."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from nodepool_ng.output import render
from nodepool_ng.status import Table

if TYPE_CHECKING:
    from nodepool_ng.statusdata import ZooKeeperData


class CommandError(Exception):
    """A user-facing failure: printed as `nodepool: error: <message>`, exit status 1."""


class AdminContext:
    """Config and ZooKeeper connection, created on first use and closed by `close()`."""

    def __init__(
        self,
        config_path: str,
        secure_path: str | None = None,
        as_json: bool = False,
        out: TextIO | None = None,
        clouds_yaml: str | None = None,
    ) -> None:
        self.clouds_yaml = clouds_yaml
        self.config_path = config_path
        self.secure_path = secure_path
        self.as_json = as_json
        self.out = out or sys.stdout
        self._config: Any = None
        self._zk: Any = None
        self._data: ZooKeeperData | None = None

    @property
    def config(self) -> Any:
        if self._config is None:
            from nodepool_ng.config import load_config

            self._config = load_config(self.config_path, self.secure_path)
        return self._config

    @property
    def data(self) -> ZooKeeperData:
        """The ZooKeeper records, connected on first use (CLI: no caches, bounded waits)."""
        if self._data is None:
            from nodepool_ng.config.checks import check_zookeeper_user
            from nodepool_ng.statusdata import ZooKeeperData, connect

            for field, message in check_zookeeper_user(self.config):
                raise CommandError(f"{self.config_path}: {field}: {message}")
            self._zk = connect(self.config)
            self._data = ZooKeeperData(self._zk, lambda: self.config)
        return self._data

    def close(self) -> None:
        if self._zk is not None:
            try:
                self._zk.stop()
            finally:
                self._zk = None
                self._data = None

    def print(self, text: str = "") -> None:
        print(text, file=self.out)

    def show(self, table: Table, fields: Sequence[str] | None = None) -> None:
        self.print(render(table, self.as_json, fields))
