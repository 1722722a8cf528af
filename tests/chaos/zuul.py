"""Zuul's side of the chaos test: submit requests, watch them, check each handover, use and
return the nodes. Plain kazoo, as tests/launcher/harness.py's submit_request/accept_and_use
(the same JSON and moves), made to survive ZooKeeper outages and to record everything.

Per request (`RequestRecord`): when it is seen `fulfilled`, each node is read at once and
judged against the request's own write: the node must exist, be `ready`, be allocated to
this request, and not have been written after the `fulfilled` write (its mzxid below the
request's), so what was read is what the node was at handover. A node id already handed to
another request is a double handover. Then Zuul's acceptNodes + job: lock each node, delete
the request, `in-use`, hold a moment, `used`, unlock. A failed request is recorded with its
`declined_by` (the protocol's reason) and deleted.

ZooKeeper errors on this side (ConnectionLoss while the ensemble restarts) are retried and
counted in `zuul_errors`, never as launcher failures. A create whose answer was lost is
looked up by its unique `job_uuid` before it is retried, so no request is written twice.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import (
    ConnectionLoss,
    LockTimeout,
    NoNodeError,
    OperationTimeoutError,
    SessionExpiredError,
)
from kazoo.protocol.states import ZnodeStat
from kazoo.recipe.watchers import DataWatch
from kazoo.retry import KazooRetry

log = logging.getLogger("chaos.zuul")

REQUESTS = "/nodepool/requests"
NODES = "/nodepool/nodes"
TRANSIENT = (ConnectionLoss, OperationTimeoutError, SessionExpiredError)


@dataclass
class NodeSeen:
    """One node of a fulfilled request, as read right after the `fulfilled` was seen."""

    id: str
    exists: bool
    state: str | None = None
    allocated_to: str | None = None
    provider: str | None = None
    external_id: str | None = None
    node_mzxid: int = 0
    request_mzxid: int = 0

    @property
    def written_after_handover(self) -> bool:
        return self.exists and self.node_mzxid > self.request_mzxid


@dataclass
class RequestRecord:
    token: str
    labels: list[str]
    submitted: float
    rid: str | None = None
    final_state: str | None = None
    final_time: float | None = None
    declined_by: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    seen: list[NodeSeen] = field(default_factory=list)
    not_ready: list[str] = field(default_factory=list)  # launcher defects, one line each
    double: list[str] = field(default_factory=list)
    changed_before_lock: list[str] = field(default_factory=list)
    lock_failed: list[str] = field(default_factory=list)
    zuul_errors: list[str] = field(default_factory=list)
    done: bool = False  # Zuul finished with it (returned nodes / deleted the request)

    @property
    def latency(self) -> float | None:
        return None if self.final_time is None else self.final_time - self.submitted


class Zuul:
    def __init__(self, hosts: str, hold: tuple[float, float] = (0.2, 1.5),
                 workers: int = 8) -> None:
        self.kz = KazooClient(
            hosts=hosts,
            timeout=20.0,
            connection_retry=KazooRetry(max_tries=-1, delay=0.1, max_delay=1.0),
            command_retry=KazooRetry(max_tries=-1, delay=0.1, max_delay=1.0, deadline=90),
        )
        self.hold = hold
        self.records: dict[str, RequestRecord] = {}  # by token
        self.by_rid: dict[str, RequestRecord] = {}
        self.handed: dict[str, str] = {}  # node id -> first request it was handed to
        self.zuul_errors: list[str] = []
        self._lock = threading.Lock()
        self._queued: set[str] = set()
        self._queue: queue.Queue[tuple[str, dict[str, Any], ZnodeStat] | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._worker, name=f"zuul-{i}", daemon=True)
            for i in range(workers)
        ]
        self._threads.append(threading.Thread(target=self._poller, name="zuul-poll", daemon=True))

    def start(self) -> None:
        self.kz.start(timeout=30)
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(10)
        try:
            self.kz.stop()
            self.kz.close()
        except Exception:
            pass

    def _zuul_error(self, rec: RequestRecord | None, what: str, e: BaseException) -> None:
        line = f"{what}: {type(e).__name__} {e}"
        with self._lock:
            self.zuul_errors.append(line)
            if rec is not None:
                rec.zuul_errors.append(line)

    def _retry(self, rec: RequestRecord | None, what: str, func: Any, *args: Any,
               **kw: Any) -> Any:
        """Run one idempotent ZooKeeper call until it succeeds (Zuul-side errors counted)."""
        while True:
            try:
                return self.kz.retry(func, *args, **kw)
            except TRANSIENT as e:
                self._zuul_error(rec, what, e)
                time.sleep(0.5)

    # -- submit ----------------------------------------------------------------------------
    def submit(self, labels: list[str]) -> RequestRecord:
        rec = RequestRecord(token=uuid.uuid4().hex, labels=labels, submitted=time.monotonic())
        with self._lock:
            self.records[rec.token] = rec
        now = time.time()
        data = {  # harness.submit_request's JSON; job_uuid is ours to find a lost create
            "requestor_data": {"build_set_uuid": "abc", "tenant_name": "t",
                               "pipeline_name": "check", "job_uuid": rec.token,
                               "job_name": "job", "span_info": None},
            "node_types": labels, "requestor": "zuul-scheduler-1", "created_time": now,
            "provider": None, "state": "requested", "state_time": now,
            "relative_priority": 0, "event_id": None, "tenant_name": "t",
        }
        body = json.dumps(data).encode()
        while rec.rid is None:
            try:
                path = self.kz.create(f"{REQUESTS}/200-", body, makepath=True, sequence=True)
                rec.rid = path.rsplit("/", 1)[-1]
            except TRANSIENT as e:
                self._zuul_error(rec, "create request", e)
                rec.rid = self._find(rec)
        with self._lock:
            self.by_rid[rec.rid] = rec
        DataWatch(self.kz, f"{REQUESTS}/{rec.rid}", self._watch_cb(rec.rid))
        return rec

    def _find(self, rec: RequestRecord) -> str | None:
        """After a lost create answer: the request with our token, if it was written."""
        for child in self._retry(rec, "list requests", self.kz.get_children, REQUESTS):
            try:
                data, _ = self._retry(rec, "read request", self.kz.get, f"{REQUESTS}/{child}")
            except NoNodeError:
                continue
            try:
                token = json.loads(data)["requestor_data"]["job_uuid"]
            except (ValueError, KeyError, TypeError):
                continue
            if token == rec.token:
                return str(child)
        return None

    # -- watch -----------------------------------------------------------------------------
    def _watch_cb(self, rid: str) -> Any:
        def cb(data: bytes | None, stat: ZnodeStat | None, event: Any = None) -> bool | None:
            if data is None or stat is None:
                return False  # deleted (by us): stop watching
            try:
                req = json.loads(data)
            except ValueError:
                return None
            if req.get("state") in ("fulfilled", "failed"):
                self._enqueue(rid, req, stat)
                return False
            return None

        return cb

    def _enqueue(self, rid: str, req: dict[str, Any], stat: ZnodeStat) -> None:
        with self._lock:
            if rid in self._queued:
                return
            self._queued.add(rid)
        self._queue.put((rid, req, stat))

    def _poller(self) -> None:
        """A safety net for watches lost in an outage: every 3 s read the open requests."""
        while not self._stop.wait(3.0):
            with self._lock:
                open_rids = [r for r, rec in self.by_rid.items()
                             if r not in self._queued and time.monotonic() - rec.submitted > 3]
            for rid in open_rids:
                try:
                    data, stat = self.kz.get_async(f"{REQUESTS}/{rid}").get(timeout=10)
                except Exception:
                    continue
                try:
                    req = json.loads(data)
                except ValueError:
                    continue
                if req.get("state") in ("fulfilled", "failed"):
                    self._enqueue(rid, req, stat)

    # -- handle ----------------------------------------------------------------------------
    def _worker(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            rid, req, stat = item
            rec = self.by_rid[rid]
            try:
                self._handle(rec, req, stat)
            except Exception as e:  # a bug in this test's Zuul: visible, not silent
                log.exception("handling %s", rid)
                self._zuul_error(rec, "handler crashed", e)
            finally:
                rec.done = True

    def _handle(self, rec: RequestRecord, req: dict[str, Any], stat: ZnodeStat) -> None:
        rid = rec.rid
        assert rid is not None
        rec.final_time = time.monotonic()
        rec.final_state = req["state"]
        rec.declined_by = list(req.get("declined_by") or [])
        rec.nodes = list(req.get("nodes") or [])
        if rec.final_state == "failed":
            self._delete_request(rec)
            return
        for nid in rec.nodes:
            seen = self._read_node(rec, nid, stat.mzxid)
            rec.seen.append(seen)
            if not seen.exists:
                rec.not_ready.append(f"node {nid} missing at handover")
            elif seen.state != "ready" or seen.allocated_to != rid:
                rec.not_ready.append(
                    f"node {nid} at handover: state {seen.state}, allocated_to "
                    f"{seen.allocated_to}")
            elif seen.written_after_handover:
                rec.not_ready.append(
                    f"node {nid} written after the request was fulfilled "
                    f"(node mzxid {seen.node_mzxid:#x} > request {seen.request_mzxid:#x})")
            with self._lock:
                first = self.handed.setdefault(nid, rid)
            if first != rid:
                rec.double.append(f"node {nid} also handed to {first}")
        self._accept_and_use(rec)

    def _read_node(self, rec: RequestRecord, nid: str, request_mzxid: int) -> NodeSeen:
        try:
            data, nstat = self._retry(rec, "read node", self.kz.get, f"{NODES}/{nid}")
        except NoNodeError:
            return NodeSeen(nid, exists=False, request_mzxid=request_mzxid)
        node = json.loads(data)
        return NodeSeen(nid, True, node.get("state"), node.get("allocated_to"),
                        node.get("provider"), node.get("external_id"), nstat.mzxid,
                        request_mzxid)

    def _delete_request(self, rec: RequestRecord) -> None:
        try:
            self._retry(rec, "delete request", self.kz.delete, f"{REQUESTS}/{rec.rid}")
        except NoNodeError:
            pass

    def _set_state(self, rec: RequestRecord, nid: str, state: str) -> None:
        try:
            data, _ = self._retry(rec, "read node", self.kz.get, f"{NODES}/{nid}")
        except NoNodeError:
            rec.changed_before_lock.append(f"node {nid} vanished while Zuul held its lock")
            return
        node = json.loads(data)
        node["state"] = state
        self._retry(rec, f"set node {state}", self.kz.set, f"{NODES}/{nid}",
                    json.dumps(node).encode())

    def _accept_and_use(self, rec: RequestRecord) -> None:
        """harness.accept_and_use, with recorded checks instead of asserts."""
        locks = []
        for seen in rec.seen:
            if not seen.exists:
                continue
            lock = self.kz.Lock(f"{NODES}/{seen.id}/lock", "zuul")
            got = False
            t0 = time.monotonic()
            while not got and time.monotonic() - t0 < 30:
                try:
                    got = lock.acquire(timeout=30)
                except LockTimeout:
                    break
                except TRANSIENT as e:
                    self._zuul_error(rec, "lock node", e)
                    time.sleep(0.5)
            if not got:
                rec.lock_failed.append(f"node {seen.id}: lock not obtained in 30 s")
                continue
            locks.append((seen.id, lock))
        self._delete_request(rec)
        for nid, _ in locks:
            try:
                data, _ = self._retry(rec, "read node", self.kz.get, f"{NODES}/{nid}")
                node = json.loads(data)
            except NoNodeError:
                node = None
            if node is None or node.get("state") != "ready" or node.get("allocated_to") != rec.rid:
                rec.changed_before_lock.append(
                    f"node {nid} after Zuul locked it: "
                    + ("missing" if node is None else
                       f"state {node.get('state')}, allocated_to {node.get('allocated_to')}"))
            self._set_state(rec, nid, "in-use")
        time.sleep(random.uniform(*self.hold))  # the job
        for nid, lock in locks:
            self._set_state(rec, nid, "used")
            try:
                lock.release()
            except TRANSIENT as e:
                self._zuul_error(rec, "unlock node", e)  # lock node goes with the session

    # -- queries ---------------------------------------------------------------------------
    def read_request(self, rid: str) -> dict[str, Any] | None:
        try:
            data, _ = self.kz.get_async(f"{REQUESTS}/{rid}").get(timeout=10)
        except NoNodeError:
            return None
        return json.loads(data)  # type: ignore[no-any-return]

    def all_nodes(self) -> dict[str, dict[str, Any]]:
        out = {}
        for nid in self._retry(None, "list nodes", self.kz.get_children, NODES):
            try:
                data, _ = self._retry(None, "read node", self.kz.get, f"{NODES}/{nid}")
            except NoNodeError:
                continue
            out[str(nid)] = json.loads(data) if data else {}
        return out

    def lock_holders(self, path: str) -> list[str]:
        try:
            return list(self._retry(None, "list lock", self.kz.get_children, path))
        except NoNodeError:
            return []
