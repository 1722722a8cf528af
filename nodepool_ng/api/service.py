"""`LeaseService`: the REST request API's operations, free of HTTP. Each takes the caller's
token (`ApiTokenConfig`, from `auth.authenticate`) and returns the JSON view of a lease
(`views.py`), or raises `ApiError`.

- `create`: checks the body (`validate.py`) and the token's limits (allowed labels: 403;
  `max-nodes` over the nodes its unfinished leases hold or asked for: 429), then submits
  an ordinary node request (requestor: the token's name; every launcher serves it as it
  serves Zuul's) and writes the lease record named by the request's id.
- `get` (optionally waiting up to `wait` seconds for the shown state to differ from
  `since`, the state the client saw last, or else from the state when the call came),
  `list_leases`.
- `renew`: a new expiry, `lease_seconds` from now.
- `release`: a waiting lease's node request is deleted (as Zuul cancels one); a fulfilled
  lease is marked `returned` and its keeper gives the nodes back.

A lease is seen only by its own token (403 for another's). Records come from the lease
cache, or straight from ZooKeeper when the cache has not seen them yet.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from nodepool_ng.api import validate
from nodepool_ng.api.errors import ApiError
from nodepool_ng.api.views import lease_view, shown_state
from nodepool_ng.api.waiters import Waiters
from nodepool_ng.config.models import ApiTokenConfig, Config
from nodepool_ng.errors import RecordNotFound
from nodepool_ng.model.lease import (
    API_REQUESTOR_DATA,
    WAITING_LEASE_STATES,
    Lease,
    LeaseState,
)
from nodepool_ng.model.node import Node
from nodepool_ng.model.request import NodeRequest, is_request_id
from nodepool_ng.zk.leases import LeaseStore
from nodepool_ng.zk.nodes import NodeStore
from nodepool_ng.zk.requests import RequestStore

log = logging.getLogger("nodepool_ng.api.service")

MAX_WAIT = 60.0  # seconds a GET may wait for a change


class LeaseService:
    def __init__(self, config: Callable[[], Config], leases: LeaseStore,
                 requests: RequestStore, nodes: NodeStore) -> None:
        self._config = config
        self._leases = leases
        self._requests = requests
        self._nodes = nodes
        self._waiters = Waiters()
        leases.add_listener(self._waiters.on_lease)
        # One create at a time in this process, so two cannot both pass max-nodes; and the
        # leases created here that the cache has not shown yet (they count too).
        self._create_lock = threading.Lock()
        self._fresh: dict[str, Lease] = {}
        self._fresh_lock = threading.Lock()

    def tokens(self) -> tuple[ApiTokenConfig, ...]:
        return self._config().webapp.api_tokens

    # -- operations --------------------------------------------------------------------------
    def create(self, token: ApiTokenConfig, body: Any) -> dict[str, Any]:
        spec = validate.create_spec(body, self._config())
        if token.labels is not None:
            refused = sorted(set(spec.labels) - set(token.labels))
            if refused:
                raise ApiError(403, "labels", f"labels: token {token.name!r} may not request "
                               f"{', '.join(refused)}")
        with self._create_lock:
            if token.max_nodes is not None:
                held = self.nodes_counted(token.name)
                if held + len(spec.labels) > token.max_nodes:
                    raise ApiError(429, "labels", (
                        f"token {token.name!r} holds or has requested {held} node(s); "
                        f"{len(spec.labels)} more would exceed its max-nodes "
                        f"({token.max_nodes})"))
            now = time.time()
            request = NodeRequest(node_types=list(spec.labels), requestor=token.name,
                                  provider=spec.provider, requestor_data=dict(API_REQUESTOR_DATA),
                                  created_time=now)
            request_id = self._requests.submit(request, spec.priority)
            lease = Lease(id=request_id, requestor=token.name, labels=list(spec.labels),
                          provider=spec.provider, lease_seconds=spec.lease_seconds,
                          expires=now + spec.lease_seconds, created_time=now)
            try:
                self._leases.create(lease)
            except Exception:
                self._requests.delete(request_id)  # nobody would ever accept it
                raise
            with self._fresh_lock:
                self._fresh[request_id] = lease
        log.info("Lease %s for %s: %s for %ss", request_id, token.name,
                 ",".join(spec.labels), spec.lease_seconds)
        return self._view(lease)

    def get(self, token: ApiTokenConfig, lease_id: str, wait: float = 0.0,
            since: LeaseState | None = None) -> dict[str, Any]:
        """The lease; with `wait`, once its shown state differs from `since` (the state the
        client saw last; None: the state when the call came), or after `wait` seconds. A
        lease that already differs from `since` is answered at once."""
        lease = self._lease(token, lease_id)
        if wait <= 0:
            return self._view(lease)
        first = shown_state(lease) if since is None else since
        deadline = time.monotonic() + min(wait, MAX_WAIT)
        with self._waiters.watching(lease_id) as changed:
            while True:
                changed.clear()
                lease = self._lease(token, lease_id)
                now = time.time()
                remaining = deadline - time.monotonic()
                if shown_state(lease, now) is not first or remaining <= 0:
                    return self._view(lease, now)
                # A valid lease's shown state turns `expired` at its expiry, unwritten.
                until_expiry = lease.expires - now if lease.keeps_nodes(now) else math.inf
                changed.wait(min(remaining, until_expiry + 0.01))

    def state(self, token: ApiTokenConfig, lease_id: str) -> LeaseState:
        """The lease's shown state now (cheaper than its view: no nodes read)."""
        return shown_state(self._lease(token, lease_id))

    def list_leases(self, token: ApiTokenConfig,
                    requestor: str | None = None) -> list[dict[str, Any]]:
        """The token's own leases (`requestor`, if given, must be the token's name)."""
        if requestor is not None and requestor != token.name:
            raise ApiError(403, "requestor", f"requestor: token {token.name!r} may list only "
                           "its own leases")
        mine = [lease for lease in self._all_leases() if lease.requestor == token.name]
        return [self._view(lease) for lease in sorted(mine, key=lambda lease: lease.id or "")]

    def renew(self, token: ApiTokenConfig, lease_id: str, body: Any) -> dict[str, Any]:
        lease = self._fresh_lease(token, lease_id)
        seconds = validate.renew_seconds(body, lease.lease_seconds)

        def change(current: Lease) -> bool:
            now = time.time()
            if current.finished or current.lapsed(now):
                state = shown_state(current, now).value
                raise ApiError(409, "state", f"lease {lease_id} is {state}: it cannot be "
                               "renewed")
            current.expires = now + seconds
            current.lease_seconds = seconds
            return True

        self._update(lease, change)
        return self._view(lease)

    def release(self, token: ApiTokenConfig, lease_id: str) -> dict[str, Any]:
        """Return the nodes, or cancel the request still waiting. A finished lease stays
        as it is (the call is answered with it)."""
        lease = self._fresh_lease(token, lease_id)
        cancelled: list[bool] = []

        def change(current: Lease) -> bool:
            cancelled.clear()
            if current.finished:
                return False
            waiting = current.state in WAITING_LEASE_STATES
            current.state = LeaseState.RETURNED
            current.released = waiting  # nothing taken yet (a keeper mid-accept conflicts)
            cancelled.append(waiting)
            return True

        self._update(lease, change)
        if cancelled and cancelled[0]:
            self._requests.delete(lease_id)  # the launchers stop serving it
        return self._view(lease)

    # -- the caller's leases -------------------------------------------------------------------
    def nodes_counted(self, requestor: str) -> int:
        """Nodes the requestor's unfinished leases hold or asked for (max-nodes)."""
        return sum(lease.node_count() for lease in self._all_leases()
                   if lease.requestor == requestor)

    def _all_leases(self) -> list[Lease]:
        cached = {lease.id: lease for lease in self._leases.cached_leases()}
        with self._fresh_lock:
            for lease_id in [i for i in self._fresh if i in cached]:
                del self._fresh[lease_id]  # the cache has it now
            return [*cached.values(), *self._fresh.values()]

    def _lease(self, token: ApiTokenConfig, lease_id: str) -> Lease:
        lease = None if not is_request_id(lease_id) else self._leases.cached_lease(lease_id)
        if lease is None and is_request_id(lease_id):
            lease = self._read(lease_id)
        return self._mine(token, lease_id, lease)

    def _fresh_lease(self, token: ApiTokenConfig, lease_id: str) -> Lease:
        """Read from ZooKeeper (a copy to change and write back)."""
        lease = self._read(lease_id) if is_request_id(lease_id) else None
        return self._mine(token, lease_id, lease)

    def _read(self, lease_id: str) -> Lease | None:
        try:
            return self._leases.get(lease_id)
        except RecordNotFound:
            return None

    def _mine(self, token: ApiTokenConfig, lease_id: str, lease: Lease | None) -> Lease:
        if lease is None:
            raise ApiError(404, "id", f"no request {lease_id!r}")
        if lease.requestor != token.name:
            raise ApiError(403, "id", f"request {lease_id} belongs to another token")
        return lease

    def _update(self, lease: Lease, change: Callable[[Lease], bool]) -> None:
        try:
            self._leases.update(lease, change)
        except RecordNotFound:
            raise ApiError(404, "id", f"no request {lease.id!r}") from None

    def _view(self, lease: Lease, now: float | None = None) -> dict[str, Any]:
        return lease_view(lease, self._node, now)

    def _node(self, node_id: str) -> Node | None:
        node = self._nodes.cached_node(node_id) if self._nodes.cache_started else None
        if node is not None:
            return node
        try:
            return self._nodes.get(node_id)
        except RecordNotFound:
            return None
