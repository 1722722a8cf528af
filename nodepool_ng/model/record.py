"""Shared base for ZooKeeper records: state/state_time bookkeeping and unknown-key keeping.

Every record is a dataclass. Setting `state` (by assignment or `set_state`) after construction
stamps `state_time`, as upstream's models do. Keys this code does not know (Zuul adds some)
are kept in `extra` and written back untouched, after the known keys.
"""

from __future__ import annotations

import json
import time
import types
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints


class MalformedRecord(ValueError):
    """A record's JSON decodes but a field has the wrong type. `raw` is the decoded object,
    so a caller can still act on the record (fail a request) without rewriting its fields."""

    def __init__(self, message: str, raw: dict[str, Any]) -> None:
        super().__init__(message)
        self.raw = raw


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

    @classmethod
    def check_types(cls, data: dict[str, Any], keys: tuple[str, ...], what: str,
                     stricter: dict[str, Any] | None = None) -> None:
        """Raise MalformedRecord naming the first of `keys` whose value in `data` does not
        fit the field's declared type, or its type in `stricter` (an absent or null key
        takes the field's default)."""
        hints = {**_field_types(cls), **(stricter or {})}
        for key in keys:
            value = data.get(key)
            if value is not None and key in hints and not _conforms(value, hints[key]):
                raise MalformedRecord(
                    f"{what}: {key}: {data[key]!r} is not {_describe(hints[key])}", data)


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


_FIELD_TYPES: dict[type, dict[str, Any]] = {}


def _field_types(cls: type) -> dict[str, Any]:
    if cls not in _FIELD_TYPES:
        _FIELD_TYPES[cls] = get_type_hints(cls)
    return _FIELD_TYPES[cls]


def _conforms(value: Any, tp: Any) -> bool:
    """Whether a JSON value fits a declared field type (bool is no int; int is a float)."""
    origin = get_origin(tp)
    if tp is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_conforms(value, arg) for arg in get_args(tp))
    if tp is type(None):
        return value is None
    if origin is list:
        (item,) = get_args(tp)
        return isinstance(value, list) and all(_conforms(v, item) for v in value)
    if origin is dict:
        key, item = get_args(tp)
        return isinstance(value, dict) and all(
            _conforms(k, key) and _conforms(v, item) for k, v in value.items())
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type) and issubclass(tp, StrEnum):
        return isinstance(value, str)  # the value itself is checked by _coerce_state
    return isinstance(tp, type) and isinstance(value, tp)


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in get_args(tp))
    if tp is type(None):
        return "null"
    if origin is list:
        return f"a list of {_describe(get_args(tp)[0])}"
    if origin is dict:
        return f"an object of {_describe(get_args(tp)[1])}"
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))
