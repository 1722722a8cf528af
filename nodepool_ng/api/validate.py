"""The bodies of `POST /requests` and `POST /requests/{id}/renew`, checked: each problem is
an ApiError 400 naming the field.

A create asks for `labels` (a non-empty list of the config's labels, no more than one pool
of the chosen providers serves at once: upstream declines a request no pool can hold),
`lease_seconds` (1..MAX_LEASE_SECONDS, default DEFAULT_LEASE_SECONDS), and optionally a
`provider` and a `priority` (upstream's request priority: 0-999 or its 3-character form;
default Zuul's normal one, 200). A GET's query parameters, `wait` and `since`, are
checked here too."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nodepool_ng.api.errors import bad
from nodepool_ng.config.models import Config
from nodepool_ng.model.lease import LeaseState
from nodepool_ng.model.request import format_priority

DEFAULT_LEASE_SECONDS = 3600
MAX_LEASE_SECONDS = 7 * 24 * 3600
DEFAULT_PRIORITY = "200"  # Zuul's "normal" precedence
CREATE_FIELDS = ("labels", "lease_seconds", "provider", "priority")
RENEW_FIELDS = ("lease_seconds",)


@dataclass(frozen=True)
class CreateSpec:
    labels: tuple[str, ...]
    lease_seconds: int
    provider: str | None
    priority: str  # 3 characters, as request ids carry it


def create_spec(body: Any, config: Config) -> CreateSpec:
    fields = _object(body, CREATE_FIELDS)
    labels = _labels(fields.get("labels"), config)
    provider = fields.get("provider")
    if provider is not None and (not isinstance(provider, str)
                                 or provider not in config.providers):
        known = ", ".join(sorted(config.providers)) or "none"
        raise bad("provider", f"unknown provider {provider!r} (known: {known})")
    _fits_one_pool(labels, provider, config)
    return CreateSpec(labels, lease_seconds(fields.get("lease_seconds", DEFAULT_LEASE_SECONDS)),
                      provider, _priority(fields.get("priority", DEFAULT_PRIORITY)))


def renew_seconds(body: Any, default: int) -> int:
    """The renew body's `lease_seconds` (absent or no body: `default`, the lease's own)."""
    if body is None:
        return default
    fields = _object(body, RENEW_FIELDS)
    return lease_seconds(fields.get("lease_seconds", default))


def lease_seconds(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad("lease_seconds", f"{value!r} is not an integer number of seconds")
    if not 0 < value <= MAX_LEASE_SECONDS:
        raise bad("lease_seconds", f"{value} is not between 1 and {MAX_LEASE_SECONDS}")
    return value


def wait_seconds(value: str | None, limit: float) -> float:
    """The `wait` query parameter of a GET: 0 when absent, at most `limit`."""
    if value is None:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        raise bad("wait", f"{value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or not 0 <= seconds <= limit:
        raise bad("wait", f"{value} is not between 0 and {limit:g}")
    return seconds


def since_state(value: str | None) -> LeaseState | None:
    """The `since` query parameter of a GET: the state the client saw last (None: absent)."""
    if value is None:
        return None
    try:
        return LeaseState(value)
    except ValueError:
        known = ", ".join(s.value for s in LeaseState)
        raise bad("since", f"{value!r} is not a request state ({known})") from None


def _object(body: Any, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise bad("body", "expected a JSON object")
    for key in body:
        if key not in allowed:
            raise bad(str(key), f"unknown field (known: {', '.join(allowed)})")
    return body


def _labels(value: Any, config: Config) -> tuple[str, ...]:
    if value is None:
        raise bad("labels", "required: a non-empty list of labels")
    if not isinstance(value, list) or not value:
        raise bad("labels", "expected a non-empty list of labels")
    for i, label in enumerate(value):
        if not isinstance(label, str):
            raise bad("labels", f"labels[{i}]: {label!r} is not a label name")
        if label not in config.labels:
            raise bad("labels", f"labels[{i}]: unknown label {label!r}")
    return tuple(value)


def _fits_one_pool(labels: tuple[str, ...], provider: str | None, config: Config) -> None:
    wanted = set(labels)
    limits: list[float] = []
    for pcfg in config.providers.values():
        if provider is not None and pcfg.name != provider:
            continue
        for pool in pcfg.pools:
            if wanted <= pool.label_names:
                max_servers = getattr(pool, "max_servers", None)
                limits.append(math.inf if max_servers is None else max_servers)
    where = f" of provider {provider!r}" if provider is not None else ""
    if not limits:
        raise bad("labels", f"no pool{where} offers all of {sorted(wanted)}")
    if len(labels) > max(limits):
        raise bad("labels", f"{len(labels)} nodes are more than any pool{where} serves at "
                  f"once (at most {max(limits):g})")


def _priority(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise bad("priority", f"{value!r} is not a priority (0-999)")
    text = str(value)
    if not text.isdigit() or not 0 <= int(text) <= 999:
        raise bad("priority", f"{value!r} is not a priority (0-999)")
    try:
        return format_priority(value)
    except ValueError as e:
        raise bad("priority", str(e)) from None
