"""Shared base for ZooKeeper records: state/state_time bookkeeping and unknown-key keeping.

Every record is a dataclass. Setting `state` (by assignment or `set_state`) after construction
stamps `state_time`, as upstream's models do. Keys this code does not know (Zuul adds some)
are kept in `extra` and written back untouched, after the known keys.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar


@dataclass(eq=False)
class Record:
    """Base of every record: subclasses set `STATE_TYPE` and the known JSON keys."""

    STATE_TYPE: ClassVar[type[StrEnum]]

    extra: dict[str, Any] = field(default_factory=dict, kw_only=True, repr=False)

    def __post_init__(self) -> None:
        state = getattr(self, "state", None)
        if state is not None and not isinstance(state, self.STATE_TYPE):
            object.__setattr__(self, "state", self._coerce_state(state))
        # From now on assigning `state` also stamps `state_time`.
        object.__setattr__(self, "_initialized", True)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "state" and self.__dict__.get("_initialized"):
            value = self._coerce_state(value)
            object.__setattr__(self, name, value)
            object.__setattr__(self, "state_time", time.time())
            return
        object.__setattr__(self, name, value)

    @classmethod
    def _coerce_state(cls, value: Any) -> Any:
        if value is None:
            return None
        try:
            return cls.STATE_TYPE(value)
        except ValueError:
            raise ValueError(
                f"{cls.__name__}.state: {value!r} is not one of "
                f"{', '.join(s.value for s in cls.STATE_TYPE)}"
            ) from None

    def set_state(self, state: Any) -> None:
        """Set `state` and stamp `state_time` with the current time."""
        self.state = state

    def _known_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """The upstream JSON object: known keys in upstream order, then unknown keys kept."""
        d = self._known_dict()
        for key, value in self.extra.items():
            if key not in d:
                d[key] = value
        return d

    def to_json(self) -> bytes:
        """UTF-8 JSON bytes as upstream writes them (`json.dumps(toDict())`)."""
        return json.dumps(self.to_dict()).encode("utf-8")

    @staticmethod
    def _split(data: dict[str, Any], known: set[str]) -> dict[str, Any]:
        return {k: v for k, v in data.items() if k not in known}


def decode_json(raw: bytes | None, what: str) -> dict[str, Any]:
    """Decode a znode payload into a dict, naming `what` in the error."""
    if not raw:
        return {}
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{what}: payload is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what}: payload is not a JSON object")
    return data
