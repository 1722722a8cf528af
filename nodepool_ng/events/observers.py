"""Who publishes which events: observers on the ZooKeeper caches (nothing on a request path).

Launchers publish node and request events; builders publish image build and upload events.
The launcher's observer also records request latency (`metrics.request_latency`) for
Prometheus, with or without MQTT: it sees every request's transitions anyway.

Exactly one publisher per transition:
- Node and request events come from the launcher that holds the stats election
  (`/nodepool/elections/stats`, `nodepool_ng/zk/election.py`). Every launcher tracks the
  states from its own caches, so a new leader continues with the right `previous_state`;
  transitions seen while no launcher leads (a failover of a few seconds) are not published.
  The leader also reports what Zuul does (in-use, used) and nodes whose launcher died.
- Build events come from the builder that made the build (`builder_id`), upload events from
  the builder that made the upload's build (the one holding the image files uploads it).
  Records of a builder that is gone produce no events until it is back.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from nodepool_ng import metrics
from nodepool_ng.config.models import Config
from nodepool_ng.errors import ConfigError
from nodepool_ng.events.publisher import EventPublisher
from nodepool_ng.events.transitions import (
    DELETED,
    TransitionTracker,
    build_payload,
    node_payload,
    request_payload,
    state_of,
    upload_payload,
)
from nodepool_ng.model.image import ImageBuild, ImageUpload
from nodepool_ng.model.node import Node
from nodepool_ng.model.request import FINAL_REQUEST_STATES, NodeRequest, RequestState
from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.images import CachedImageRecord, ImageStore
from nodepool_ng.zk.nodes import NodeStore
from nodepool_ng.zk.requests import RequestStore

log = logging.getLogger("nodepool_ng.events")


def make_publisher(config: Config, component: str, hostname: str) -> EventPublisher | None:
    """A started publisher when `mqtt` is configured; None (logged) when it cannot be used."""
    if config.mqtt is None:
        return None
    client_id = f"nodepool-{component}-{hostname}-{uuid.uuid4().hex[:8]}"
    try:
        publisher = EventPublisher(config.mqtt, client_id, component=component)
    except ConfigError as e:
        log.error("MQTT events disabled: %s", e)
        return None
    publisher.start()
    return publisher


class RequestLatency:
    """Each request's time from creation to its final state, per label (as Zuul reports
    per label), recorded as `metrics.request_latency` by the stats leader only, so the sum
    over launchers counts each request once.

    The start is Zuul's `created_time`, else the `state_time` of the request when first seen
    `requested` (requests older than the launcher and without `created_time` are skipped);
    the end is the final record's `state_time` (written by the launcher that fulfilled it).
    The provider is the one of the node given for the label (`nodes[i]` for
    `node_types[i]`, read from the node cache); for a failed request, or a node not in the
    cache, the request's own `provider` field (Zuul's preference), else "".
    """

    def __init__(self, stats: object | None = None) -> None:
        self.stats = stats if stats is not None else metrics.make_client()
        self._lock = threading.Lock()
        self._seen_at: dict[str, float] = {}

    def seen(self, request: NodeRequest) -> None:
        """A request first seen in the `requested` state (not at seed time)."""
        if request.id and request.state is RequestState.REQUESTED and request.state_time:
            with self._lock:
                self._seen_at.setdefault(request.id, request.state_time)

    def forget(self, request_id: str) -> None:
        with self._lock:
            self._seen_at.pop(request_id, None)

    def finished(
        self, request: NodeRequest, provider_of: Callable[[str], str | None] = lambda _: None
    ) -> None:
        """A request reached a final state (fulfilled, failed); provider_of: a node id's
        provider, None when unknown."""
        if not request.id or request.state not in FINAL_REQUEST_STATES:
            return
        with self._lock:
            seen_at = self._seen_at.pop(request.id, None)
        start = request.created_time or seen_at
        if start is None:
            return
        end = request.state_time or time.time()
        ms = max(0.0, end - start) * 1000.0
        nodes = list(request.nodes) if request.state is RequestState.FULFILLED else []
        pairs: dict[tuple[str, str], None] = {}
        for i, label in enumerate(request.node_types):
            provider = provider_of(nodes[i]) if i < len(nodes) else None
            pairs[(label, provider or request.provider or "")] = None
        for label, provider in pairs:
            key = metrics.request_latency(label, provider, str(request.state))
            try:
                self.stats.timing(key, ms)  # type: ignore[attr-defined]
            except Exception:  # metrics never stop events
                log.debug("metrics timing %s failed", key, exc_info=True)


class LauncherEvents:
    """Node and request transitions, published while `is_leader()` (when `publisher` is
    set: `mqtt` configured), and request latency recorded while `is_leader()`."""

    def __init__(
        self,
        publisher: EventPublisher | None,
        nodes: NodeStore,
        requests: RequestStore,
        is_leader: Callable[[], bool],
        latency: RequestLatency | None = None,
    ) -> None:
        self.publisher = publisher
        self.latency = latency if latency is not None else RequestLatency()
        self._nodes = nodes
        self._requests = requests
        self._is_leader = is_leader
        self._node_tracker: TransitionTracker[Node] = TransitionTracker(state_of)
        self._request_tracker: TransitionTracker[NodeRequest] = TransitionTracker(state_of)
        self._armed = threading.Event()

    def start(self) -> None:
        """Listen, then remember what the (started) caches already hold."""
        self._nodes.add_listener(self._on_node)
        self._requests.add_listener(self._on_request)
        self._node_tracker.seed((n.id, n) for n in self._nodes.cached_nodes() if n.id)
        self._request_tracker.seed((r.id, r) for r in self._requests.cached_requests() if r.id)
        self._armed.set()

    def stop(self) -> None:
        self._armed.clear()  # the stores have no remove_listener: go quiet instead
        if self.publisher is not None:
            self.publisher.stop()

    def _provider_of(self, node_id: str) -> str | None:
        node = self._nodes.cached_node(node_id)
        return node.provider if node is not None else None

    def _on_node(self, node_id: str, node: Node | None) -> None:
        if not self._armed.is_set() or self.publisher is None:
            return
        t = self._node_tracker.update(node_id, node)
        if t is not None and self._is_leader():
            self.publisher.publish(f"node/{t.state}", node_payload(t.record, t.previous, t.state))

    def _on_request(self, request_id: str, request: NodeRequest | None) -> None:
        if not self._armed.is_set():
            return
        t = self._request_tracker.update(request_id, request)
        if t is None:
            return
        if t.previous is None:
            self.latency.seen(t.record)
        leader = self._is_leader()
        if t.state == DELETED:
            self.latency.forget(request_id)
        elif leader:
            self.latency.finished(t.record, self._provider_of)
        if leader and self.publisher is not None:
            self.publisher.publish(
                f"request/{t.state}", request_payload(t.record, t.previous, t.state)
            )


class BuilderEvents:
    """Build and upload transitions of this builder's builds, from its own image cache."""

    def __init__(
        self,
        publisher: EventPublisher,
        zk: ZooKeeperClient,
        builder_id: str,
        timeout: float | None = None,
    ) -> None:
        self.publisher = publisher
        self.builder_id = builder_id
        self._timeout = timeout
        self._store = ImageStore(zk)
        self._tracker: TransitionTracker[CachedImageRecord] = TransitionTracker(state_of)
        self._armed = threading.Event()

    def start(self) -> None:
        self._store.add_listener(self._on_record)
        if not self._store.start_cache(self._timeout):
            log.warning("Image cache for events not loaded yet; events follow once it is")
        self._tracker.seed(self._store.cache.items())
        self._armed.set()

    def stop(self) -> None:
        self._armed.clear()
        self._store.stop_cache()
        self.publisher.stop()

    def _build_is_ours(self, image: str | None, build_id: str | None) -> bool:
        build = self._tracker.last(f"{image}/builds/{build_id}")
        return isinstance(build, ImageBuild) and build.builder_id == self.builder_id

    def _on_record(self, key: str, record: Any) -> None:
        if not self._armed.is_set():
            return
        t = self._tracker.update(key, record)
        if t is None:
            return
        record, previous, state = t.record, t.previous, t.state
        if isinstance(record, ImageBuild) and record.builder_id == self.builder_id:
            self.publisher.publish(f"image/build/{state}", build_payload(record, previous, state))
        elif isinstance(record, ImageUpload) and self._build_is_ours(
            record.image_name, record.build_id
        ):
            payload = upload_payload(record, previous, state)
            self.publisher.publish(f"image/upload/{state}", payload)
