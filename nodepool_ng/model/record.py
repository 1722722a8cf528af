"""Shared base of the ZooKeeper records: fields declared once, JSON derived from them.

Every record is a dataclass whose fields, in declaration order, are its JSON keys in
upstream's order: `to_dict`, `to_json`, `from_dict` (`_read`) and `json_keys()` follow them.
What is special about one field is said next to it, as field metadata
(`field(..., metadata=key(...))`, see `Key`): a converter when reading or writing, a key
upstream leaves out, a second key written with the same value, the value read when the key
is absent, the type checked on read. Fields that are no JSON key say so: `IDENTITY` (the
record's identity, the parts of its znode path) and `LOCAL` / `KEPT_LOCAL` (this process's
bookkeeping: the znode version read, a held lock). Keys this code does not know (Zuul adds
some) are kept in `extra` and written back untouched, after the known keys.

`Record` adds upstream's state bookkeeping: setting `state` (by assignment or `set_state`)
after construction stamps `state_time`.
"""

from __future__ import annotations

import dataclasses
import json
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

_META = "nodepool_ng.record"
_NO_VALUE: Any = object()


class MalformedRecord(ValueError):
    """A record's JSON decodes but a field has the wrong type. `raw` is the decoded object,
    so a caller can still act on the record (fail a request) without rewriting its fields."""

    def __init__(self, message: str, raw: dict[str, Any]) -> None:
        super().__init__(message)
        self.raw = raw


@dataclass(frozen=True)
class Key:
    """How one field is read from and written to the JSON object (defaults: as it is).

    `missing`: the value read when the key is absent (default: the field's default).
    `read` / `write`: converters applied when reading (also to `missing`) and writing.
    `omit`: upstream leaves the key out when this is true of the value.
    `also`: further keys written with the same value, read when the field's key is absent.
    `check`: the type a read value must have (default: the field's annotation); None: not
    checked. `check_read`: check the converted value instead of the raw one.
    `derived`: written but never read (the value comes from the class).
    """

    missing: Any = _NO_VALUE
    read: Callable[[Any], Any] | None = None
    write: Callable[[Any], Any] | None = None
    omit: Callable[[Any], bool] | None = None
    also: tuple[str, ...] = ()
    check: Any = _NO_VALUE
    check_read: bool = False
    derived: bool = False


@dataclass(frozen=True)
class _NotInJson:
    """Marks a field that is no JSON key: part of the record's identity (its znode path),
    or local bookkeeping; `kept` local fields survive a store's `refresh`."""

    identity: bool = False
    kept: bool = False


def key(**how: Any) -> dict[str, Any]:
    """Field metadata for a JSON key with a special case (see `Key`):
    `field(default=..., metadata=key(...))`."""
    return {_META: Key(**how)}


def derived(**how: Any) -> dict[str, Any]:
    """Field metadata for a key written from the object, never read (see `Key`)."""
    return {_META: Key(derived=True, **how)}


# Converters shared by several fields.
def _list(value: Any) -> list[Any]:
    return list(value or [])


def enum_value(member: StrEnum | None) -> str | None:
    """An enum member as its string (None stays None)."""
    return member.value if member is not None else None


def int_or_zero(value: Any) -> int:
    """Upstream's `int(value or 0)`."""
    return int(value or 0)


# Field metadata shared by every record.
# No JSON key: the record's identity, in znode path order (`identity()`).
IDENTITY: dict[str, Any] = {_META: _NotInJson(identity=True)}
# No JSON key: local bookkeeping.
LOCAL: dict[str, Any] = {_META: _NotInJson()}
# Local and belonging to this object, not to the znode (a held lock): re-reading the record
# leaves it as it is.
KEPT_LOCAL: dict[str, Any] = {_META: _NotInJson(kept=True)}
# `state`: written as its string; absent from the JSON reads as None.
STATE = key(missing=None, write=enum_value)
# `state_time`: absent from the JSON reads as None (a new record defaults to now).
STATE_TIME = key(missing=None)
# A list of strings: null reads as [], written as a copy.
LIST = key(read=_list, write=list)


def identity_names(cls: type) -> tuple[str, ...]:
    """The names of a record class's identity fields, in declaration (= znode path) order."""
    return tuple(f.name for f in dataclasses.fields(cls)
                 if f.metadata.get(_META) == _NotInJson(identity=True))


def identity(record: Any) -> tuple[str | None, ...]:
    """The values of the record's identity fields, in znode path order."""
    return tuple(getattr(record, name) for name in identity_names(type(record)))


def kept_fields(cls: type) -> frozenset[str]:
    """Fields that belong to the object, not to the znode (left alone by a re-read)."""
    return frozenset(
        f.name for f in dataclasses.fields(cls)
        if f.metadata.get(_META) == _NotInJson(kept=True)
    )


@dataclass(eq=False)
class JsonObject:
    """Base of everything stored as JSON: `to_dict`/`to_json` and `_read` follow the fields.

    `CHECK_TYPES`: reading checks each value against its field's type (MalformedRecord).
    `SORT_KEYS`: written with sorted keys (components) instead of field order.
    """

    CHECK_TYPES: ClassVar[bool] = False
    SORT_KEYS: ClassVar[bool] = False

    extra: dict[str, Any] = field(default_factory=dict, kw_only=True, repr=False,
                                  metadata=LOCAL)

    @classmethod
    def json_keys(cls) -> tuple[str, ...]:
        """Every JSON key this record writes, in upstream's order."""
        return tuple(k for name, how in _json_fields(cls) for k in (name, *how.also))

    def to_dict(self) -> dict[str, Any]:
        """The upstream JSON object: known keys in upstream order, then unknown keys kept."""
        d: dict[str, Any] = {}
        for name, how in _json_fields(type(self)):
            value = getattr(self, name)
            if how.omit is not None and how.omit(value):
                continue
            if how.write is not None:
                value = how.write(value)
            for json_key in (name, *how.also):
                d[json_key] = value
        for json_key, value in self.extra.items():
            if json_key not in d:
                d[json_key] = value
        return d

    def to_json(self) -> bytes:
        """UTF-8 JSON bytes as upstream writes them (`json.dumps(toDict())`)."""
        return json.dumps(self.to_dict(), sort_keys=self.SORT_KEYS).encode("utf-8")

    @classmethod
    def _read(cls, data: dict[str, Any], what: str) -> dict[str, Any]:
        """Constructor arguments for every JSON field, and `extra`, from a JSON object."""
        kwargs: dict[str, Any] = {}
        for name, how in _json_fields(cls):
            if how.derived:
                continue
            if cls.CHECK_TYPES and not how.check_read:
                cls._check(name, data.get(name), how, what, data)
            value = _lookup(data, (name, *how.also), how.missing, cls, name)
            if how.read is not None:
                value = how.read(value)
            if cls.CHECK_TYPES and how.check_read:
                cls._check(name, value, how, what, data)
            kwargs[name] = value
        known = set(cls.json_keys())
        kwargs["extra"] = {k: v for k, v in data.items() if k not in known}
        return kwargs

    @classmethod
    def _check(cls, name: str, value: Any, how: Key, what: str, data: dict[str, Any]) -> None:
        tp = _field_types(cls).get(name) if how.check is _NO_VALUE else how.check
        if value is not None and tp is not None and not _conforms(value, tp):
            raise MalformedRecord(f"{what}: {name}: {value!r} is not {_describe(tp)}", data)


@dataclass(eq=False)
class Record(JsonObject):
    """Base of the state-carrying records: subclasses set `STATE_TYPE`."""

    STATE_TYPE: ClassVar[type[StrEnum]]

    # The znode version last read or written (-1: none).
    zk_version: int = field(default=-1, kw_only=True, compare=False, repr=False,
                            metadata=LOCAL)

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

    @classmethod
    def _read(cls, data: dict[str, Any], what: str) -> dict[str, Any]:
        # An unknown state names the record before any field's type does.
        try:
            cls._coerce_state(data.get("state"))
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from None
        return super()._read(data, what)


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


_JSON_FIELDS: dict[type, tuple[tuple[str, Key], ...]] = {}
_FIELD_TYPES: dict[type, dict[str, Any]] = {}


def _json_fields(cls: type) -> tuple[tuple[str, Key], ...]:
    """(field name, Key) of every JSON field of `cls`, in declaration order."""
    if cls not in _JSON_FIELDS:
        _JSON_FIELDS[cls] = tuple(
            (f.name, f.metadata.get(_META) or Key()) for f in dataclasses.fields(cls)
            if not isinstance(f.metadata.get(_META), _NotInJson)
        )
    return _JSON_FIELDS[cls]


def _lookup(data: dict[str, Any], keys: tuple[str, ...], missing: Any, cls: type,
            name: str) -> Any:
    """The value of the first of `keys` present in `data`, else what a missing key reads as."""
    for json_key in keys:
        if json_key in data:
            return data[json_key]
    if missing is not _NO_VALUE:
        return missing
    f = cls.__dataclass_fields__[name]  # type: ignore[attr-defined]
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


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
