"""Component registration records (`/nodepool/components/<kind>/<hostname><seq>`, spec §1.6)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

# Upstream nodepool 11 data model version; bump with doc/zookeeper.md when the layout changes.
MODEL_API = 0


class ComponentState(StrEnum):
    INITIALIZING = "initializing"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


class ComponentKind(StrEnum):
    LAUNCHER = "launcher"
    BUILDER = "builder"
    POOL = "pool"


BASE_KEYS = ("hostname", "state", "kind", "version", "model_api")
POOL_KEYS = ("id", "name", "provider_name", "supported_labels", "priority", "paused")


@dataclass
class Component:
    """A registered component; `path` (the znode) is local, not serialized."""

    KIND: ClassVar[ComponentKind] = ComponentKind.LAUNCHER

    hostname: str
    state: ComponentState = ComponentState.INITIALIZING
    version: str | None = None
    model_api: int = MODEL_API
    extra: dict[str, Any] = field(default_factory=dict, kw_only=True, repr=False)
    path: str | None = field(default=None, kw_only=True, compare=False)

    @property
    def kind(self) -> ComponentKind:
        return self.KIND

    @property
    def name_in_zk(self) -> str | None:
        """The znode name (`<hostname><seq10>`), once registered."""
        return self.path.rsplit("/", 1)[-1] if self.path else None

    def to_dict(self) -> dict[str, Any]:
        """The registration JSON object (known keys plus unknown keys kept)."""
        d: dict[str, Any] = dict(self.extra)
        d.update(
            hostname=self.hostname,
            state=ComponentState(self.state).value,
            kind=self.kind.value,
            version=self.version,
            model_api=self.model_api,
        )
        return d

    def to_json(self) -> bytes:
        """Sorted-keys JSON, as upstream writes components."""
        return json.dumps(self.to_dict(), sort_keys=True).encode("utf-8")

    @classmethod
    def _base_kwargs(cls, data: dict[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
        state = data.get("state", ComponentState.STOPPED.value)
        try:
            state = ComponentState(state)
        except ValueError:
            state = ComponentState.STOPPED
        return {
            "hostname": data.get("hostname") or "",
            "state": state,
            "version": data.get("version"),
            "model_api": int(data.get("model_api") or 0),
            "extra": {k: v for k, v in data.items() if k not in known},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: str | None = None) -> Component:
        """Build from JSON."""
        return cls(**cls._base_kwargs(data, BASE_KEYS), path=path)


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
    supported_labels: list[str] = field(default_factory=list)
    priority: int = 100
    paused: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.update(
            id=self.id,
            name=self.name,
            provider_name=self.provider_name,
            supported_labels=list(self.supported_labels),
            priority=self.priority,
            paused=self.paused,
        )
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: str | None = None) -> PoolComponent:
        return cls(
            **cls._base_kwargs(data, BASE_KEYS + POOL_KEYS),
            id=data.get("id"),
            name=data.get("name"),
            provider_name=data.get("provider_name"),
            supported_labels=list(data.get("supported_labels") or []),
            priority=int(data.get("priority", 100) if data.get("priority") is not None else 100),
            paused=bool(data.get("paused", False)),
            path=path,
        )


COMPONENT_TYPES: dict[ComponentKind, type[Component]] = {
    ComponentKind.LAUNCHER: LauncherComponent,
    ComponentKind.BUILDER: BuilderComponent,
    ComponentKind.POOL: PoolComponent,
}
