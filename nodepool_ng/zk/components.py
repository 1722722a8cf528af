"""ComponentRegistry: ephemeral registrations under `/nodepool/components/<kind>/` (upstream's).

Each process registers its launcher/builder and one `pool` component per provider-pool. The
znodes are ephemeral: after a session expiry the registry re-creates every component it
registered (session listener of the client). Updates are versioned `set`s of the whole JSON.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kazoo.exceptions import BadVersionError

from nodepool_ng.errors import RecordNotFound, ZooKeeperError
from nodepool_ng.model.component import (
    COMPONENT_TYPES,
    MODEL_API,
    Component,
    ComponentKind,
    PoolComponent,
)
from nodepool_ng.model.record import decode_json
from nodepool_ng.zk import paths
from nodepool_ng.zk.cache import CachedStore, RecordCache
from nodepool_ng.zk.client import ZooKeeperClient

log = logging.getLogger("nodepool_ng.zk.components")


def _parse(path: str) -> tuple[str, str | None] | None:
    parsed = paths.parse_component_path(path)
    if parsed is None or parsed[0] not in ComponentKind.__members__.values():
        return None
    return "/".join(parsed), None


def _decode(key: str, raw: bytes | None) -> Component:
    kind, _, _name = key.partition("/")
    return COMPONENT_TYPES[ComponentKind(kind)].from_dict(
        decode_json(raw, f"component {key}"), path=f"{paths.COMPONENTS_ROOT}/{key}"
    )


class ComponentRegistry(CachedStore[Component]):
    """Register this process's components and see everybody's (cached once started)."""

    def __init__(self, client: ZooKeeperClient) -> None:
        super().__init__(client, RecordCache(
            client, paths.COMPONENTS_ROOT, _parse, _decode
        ))
        self._mine: list[Component] = []
        self._versions: dict[int, int] = {}
        self._lock = threading.RLock()
        client.add_session_listener(self._on_new_session)

    # -- own components ----------------------------------------------------------------------
    def register(self, component: Component) -> str:
        """Create the ephemeral-sequential znode `<kind>/<hostname><seq10>`; sets and returns
        `component.path`. The component is re-registered automatically after a session
        expiry."""
        with self._lock:
            component.model_api = MODEL_API
            self._create(component)
            if not any(c is component for c in self._mine):
                self._mine.append(component)
            return component.path or ""

    def _create(self, component: Component) -> None:
        created = self.client.create(
            paths.component_prefix(component.kind.value, component.hostname),
            component.to_json(),
            ephemeral=True,
            sequence=True,
            what=f"{component.kind.value} component {component.hostname}",
        )
        component.path = created
        self._versions[id(component)] = 0

    def update(self, component: Component, **changes: Any) -> None:
        """Set attributes (e.g. `paused=True`, `supported_labels=[...]`, `state=...`) and
        write the component with a versioned set. Local values stay changed even if ZooKeeper
        is unreachable (ZooKeeperError is raised); the next update or re-registration writes
        them."""
        with self._lock:
            for name, value in changes.items():
                if not hasattr(component, name):
                    raise AttributeError(f"{type(component).__name__} has no field {name!r}")
                setattr(component, name, value)
            if component.path is None:
                raise ZooKeeperError(f"component {component.hostname}: not registered")
            version = self._versions.get(id(component), -1)
            try:
                stat = self.client.set(component.path, component.to_json(), version)
            except BadVersionError:
                # Someone else (an admin) touched it: ours is the truth, write it anyway.
                stat = self.client.set(component.path, component.to_json())
            except RecordNotFound:
                # The session expired under us; the session listener re-registers, but do it
                # now so the update is not lost.
                self._create(component)
                return
            self._versions[id(component)] = stat.version

    def unregister(self, component: Component) -> None:
        """Delete the component's znode and forget it."""
        with self._lock:
            self._mine = [c for c in self._mine if c is not component]
            self._versions.pop(id(component), None)
            if component.path:
                self.client.delete(component.path)
                component.path = None

    def unregister_all(self) -> None:
        """Unregister every component registered through this registry."""
        for component in list(self._mine):
            try:
                self.unregister(component)
            except ZooKeeperError as e:
                log.warning("could not unregister %s: %s", component.path, e)

    def _on_new_session(self) -> None:
        with self._lock:
            for component in self._mine:
                old = component.path
                try:
                    # The old ephemeral may linger if the expiry was only seen by us.
                    if old and self.client.exists(old) is not None:
                        continue
                    self._create(component)
                    log.info("re-registered component %s as %s", old, component.path)
                except ZooKeeperError as e:
                    log.error("could not re-register component %s: %s", old, e)

    # -- everybody's components --------------------------------------------------------------
    def components(self, kind: ComponentKind | str) -> list[Component]:
        """Registered components of `kind` (cache if started, else a direct read)."""
        kind = ComponentKind(kind)
        if self.cache_started:
            prefix = f"{kind.value}/"
            return [c for key, c in sorted(self.cache.items()) if key.startswith(prefix)]
        out: list[Component] = []
        root = paths.component_root(kind.value)
        for name in sorted(self.client.get_children(root)):
            try:
                data, _ = self.client.get(f"{root}/{name}")
                out.append(_decode(f"{kind.value}/{name}", data))
            except RecordNotFound:
                continue
            except ValueError as e:
                log.warning("skipping component %s/%s: %s", root, name, e)
        return out

    def pools(self) -> list[PoolComponent]:
        """All registered pool components (id, supported_labels, priority, paused, ...)."""
        return [c for c in self.components(ComponentKind.POOL) if isinstance(c, PoolComponent)]

    def pool_ids(self) -> set[str]:
        """Ids of all registered pools (a request declined by all of them fails)."""
        return {p.id for p in self.pools() if p.id}

    def minimum_model_api(self) -> int:
        """The lowest `model_api` among registered components (ours if none)."""
        versions = [c.model_api for kind in ComponentKind for c in self.components(kind)]
        return min([MODEL_API, *versions])
