"""Upstream's status paths (`/node-list`, `/request-list`, `/label-list`, `/image-list`,
`/dib-image-list`, `/image-status`): their query parameters, their bodies (the CLI's text
table, or JSON) and the one-second answer cache. No HTTP here: `app` serves them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from nodepool_ng.output import render
from nodepool_ng.status import Table
from nodepool_ng.znode_names import znode_name_problem

CACHE_SECONDS = 1.0

ENDPOINTS = (
    "node-list",
    "request-list",
    "label-list",
    "image-list",
    "dib-image-list",
    "image-status",
)


class StatusSource(Protocol):
    """Where the tables come from (ZooKeeper in production)."""

    def table(self, name: str, node_id: str | None = None) -> Table: ...


class BadRequest(Exception):
    """A query parameter the app cannot use; the message names it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


class Cache:
    """Answers kept `ttl` seconds per key, so a busy dashboard does not turn into a
    ZooKeeper read storm."""

    def __init__(self, ttl: float = CACHE_SECONDS) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._items: dict[Hashable, tuple[float, Any]] = {}

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and now - hit[0] < self.ttl:
                return hit[1]
        value = make()
        with self._lock:
            # Drop stale entries so arbitrary query strings cannot grow the cache forever.
            self._items = {k: v for k, v in self._items.items() if now - v[0] < self.ttl}
            self._items[key] = (now, value)
        return value


@dataclass(frozen=True)
class Answer:
    """One answer's status, content type (UTF-8 text) and body."""

    status: int
    content_type: str
    body: str


def node_id_param(values: Sequence[str]) -> str | None:
    """`node_id` (empty values are ignored); BadRequest unless it is one znode name."""
    values = [v for v in values if v]
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest("node_id", "given more than once")
    problem = znode_name_problem(values[0])
    if problem is not None:
        raise BadRequest("node_id", f"not a node id: {problem}")
    return values[0]


def fields_param(values: Sequence[str]) -> list[str] | None:
    """`fields=a,b` (repeatable): the column keys asked for; None for all."""
    return [f for v in values for f in v.split(",") if f] or None


def check_fields(table: Table, fields: Sequence[str] | None) -> None:
    unknown = sorted(set(fields or ()) - set(table.keys))
    if unknown:
        raise BadRequest(
            "fields",
            f"unknown column {', '.join(map(repr, unknown))} (known: {', '.join(table.keys)})",
        )


def answer(
    source: Callable[[], StatusSource],
    name: str,
    node_ids: Sequence[str],
    field_values: Sequence[str],
    as_json: bool,
    cache: Cache,
) -> Answer:
    """The answer for status table `name` (one of ENDPOINTS): the table, or 400."""
    fields = fields_param(field_values)
    try:
        node_id = node_id_param(node_ids) if name == "node-list" else None

        def make() -> str:
            table = source().table(name, node_id=node_id)
            check_fields(table, fields)
            return render(table, as_json, fields)

        body = cache.get((name, node_id, tuple(fields or ()), as_json), make)
    except BadRequest as e:
        if as_json:
            return Answer(400, "application/json", json.dumps({"error": str(e)}))
        return Answer(400, "text/plain", f"{e}\n")
    if as_json:
        return Answer(200, "application/json", body)
    return Answer(200, "text/plain", body + "\n")
