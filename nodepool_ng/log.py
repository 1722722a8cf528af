"""Logger adapter adding request / node / provider ids to every message.

Upstream annotates log records with `event_id`, `node_request_id` and `node_id`; we do the
same (as record attributes) and also prefix the message so plain formatters show them.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any


class IdsAdapter(logging.LoggerAdapter[logging.Logger]):
    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(self.extra or {})
        prefix = " ".join(f"[{k}: {v}]" for k, v in extra.items() if v is not None)
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return (f"{prefix} {msg}" if prefix else msg), kwargs


def get_logger(
    name: str,
    request_id: str | None = None,
    node_id: str | None = None,
    provider: str | None = None,
    event_id: str | None = None,
) -> IdsAdapter:
    extra: dict[str, Any] = {}
    if event_id:
        extra["event_id"] = event_id
    if request_id:
        extra["node_request_id"] = request_id
    if node_id:
        extra["node_id"] = node_id
    if provider:
        extra["provider"] = provider
    return IdsAdapter(logging.getLogger(name), extra)
