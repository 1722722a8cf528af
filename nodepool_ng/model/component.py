"""Component registration records (`/nodepool/components/<kind>/<hostname><seq>`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Self

from nodepool_ng.model.record import (
    LIST,
    LOCAL,
    JsonObject,
    derived,
    enum_value,
    int_or_zero,
    key,
)

# Upstream nodepool 11 data model version; bump with doc/zookeeper.md when the layout changes.
MODEL_API = 0


class ComponentState(StrEnum):
    """A daemon's (or pool's) life: registered while starting, then running; paused pools
    take no requests. Unknown values read as stopped."""

    INITIALIZING = "initializing"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


class ComponentKind(StrEnum):
    """The registry's subtrees (`/nodepool/components/<kind>`)."""

    LAUNCHER = "launcher"
    BUILDER = "builder"
    POOL = "pool"


def _state(value: Any) -> ComponentState:
    # Unknown or absent: a component that says nothing usable is as good as stopped.
    try:
        return ComponentState(value)
    except ValueError:
        return ComponentState.STOPPED


def _state_value(state: ComponentState | str) -> str:
    return ComponentState(state).value


def _or_empty(value: Any) -> str:
    return value or ""


def _priority(value: Any) -> int:
    return 100 if value is None else int(value)


@dataclass
class Component(JsonObject):
    """A registered component; `path` (the znode) is local, not serialized."""

    KIND: ClassVar[ComponentKind] = ComponentKind.LAUNCHER
    SORT_KEYS = True

    hostname: str = field(metadata=key(read=_or_empty))
    state: ComponentState = field(default=ComponentState.INITIALIZING, metadata=key(
        missing=ComponentState.STOPPED, read=_state, write=_state_value))
    # Written from the class (KIND); the znode's parent names it too.
    kind: ComponentKind = field(init=False, default=ComponentKind.LAUNCHER, compare=False,
                                repr=False, metadata=derived(write=enum_value))
    version: str | None = None
    model_api: int = field(default=MODEL_API, metadata=key(read=int_or_zero))
    path: str | None = field(default=None, kw_only=True, compare=False, metadata=LOCAL)

    def __post_init__(self) -> None:
        self.kind = self.KIND

    @property
    def name_in_zk(self) -> str | None:
        """The znode name (`<hostname><seq10>`), once registered."""
        return self.path.rsplit("/", 1)[-1] if self.path else None

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: str | None = None) -> Self:
        """Build from JSON."""
        return cls(**cls._read(data, f"component {path}"), path=path)


@dataclass
class LauncherComponent(Component):
    KIND: ClassVar[ComponentKind] = ComponentKind.LAUNCHER


@dataclass
class BuilderComponent(Component):
    KIND: ClassVar[ComponentKind] = ComponentKind.BUILDER


@dataclass
class PoolComponent(Component):
    """A provider-pool of a launcher; `id` is the launcher-pool id used in `declined_by`."""

    KIND: ClassVar[ComponentKind] = ComponentKind.POOL

    id: str | None = None
    name: str | None = None
    provider_name: str | None = None
    supported_labels: list[str] = field(default_factory=list, metadata=LIST)
    priority: int = field(default=100, metadata=key(read=_priority))
    paused: bool = field(default=False, metadata=key(read=bool))


COMPONENT_TYPES: dict[ComponentKind, type[Component]] = {
    ComponentKind.LAUNCHER: LauncherComponent,
    ComponentKind.BUILDER: BuilderComponent,
    ComponentKind.POOL: PoolComponent,
}
