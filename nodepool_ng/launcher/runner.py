"""`ProviderRunner`: one thread per provider advancing every create and delete StateMachine.

No thread per node: `advance()` never blocks (the driver runs API calls in its own bounded
executor), and host-key scans are polled the same way. The runner is woken when work is
submitted; while machines are in flight it polls them every `poll_interval`.

A launch: create machine -> (host-key scan) -> READY. The node record gets the cloud's
external id as soon as the machine has one (no leaked server). Cloud-side timeouts belong to
the machines: a create machine raises LaunchTimeout past the provider's `launch-timeout`, a
delete machine TemporaryCloudError past its delete timeout (then the runner retries with
backoff); the runner's own `DELETE_TIMEOUT` is how long the deleter's request is retried
before it is handed back, not a cloud timeout. Failures other than quota are
retried `launch-retries` times, each after an exponential backoff with jitter; then the node
is `failed`. A failed attempt's server is deleted in the background, retried with backoff
until it is gone. A QuotaExceeded makes the node `aborted` at once (the request handler
relaunches).

Provider health (`health.CircuitBreaker`): cloud failures in a row open the breaker. While it
is open the pools take no launches here (`accepting`, `launch_allowed`), a launch waiting for
another attempt fails at once (its request goes to other providers), deletes wait, and a
probe (one server listing) is sent at backed-off intervals; a good probe lets launches ramp
up again (1 in flight, doubled by every successful launch). Each change is logged once.

A launch's final record (READY/FAILED/ABORTED) is written by a small store pool, not the
runner's thread: each write is a ZooKeeper round trip, and a burst of launches finishing
together would otherwise queue them in front of every other machine's progress. The launch
counts as finished (`result`, `on_done`) only once that record is stored, so a request is
never fulfilled with a node that ZooKeeper still shows building. A failed write is retried
with backoff (ZooKeeper reconnects meanwhile) while the node's lock is still ours; a node
whose record is gone, or whose lock went with an expired session, is reported FAILED.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from nodepool_ng.drivers.base import Instance, LaunchSpec, ProviderAdapter, StateMachine
from nodepool_ng.errors import (
    LaunchTimeout,
    NodeScanError,
    QuotaExceeded,
    RecordNotFound,
    ZooKeeperError,
)
from nodepool_ng.launcher.health import Backoff, BreakerState, CircuitBreaker, backoff_delay
from nodepool_ng.launcher.stats import LauncherStats
from nodepool_ng.log import get_logger
from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.runtime.loop import Worker

DELETE_TIMEOUT = 600.0  # a delete the deleter asked for; then it unlocks and tries again
STORE_THREADS = 4  # final node records written concurrently (ZooKeeper I/O)
ATTEMPT_BACKOFF = (0.5, 30.0)  # (base, cap) seconds before another launch attempt
DELETE_BACKOFF = (1.0, 30.0)  # (base, cap) seconds before retrying a failed server delete
STORE_BACKOFF = (0.2, 5.0)  # (base, cap) seconds between writes of a final node record
STORE_GIVE_UP = 300.0  # a final record not written in this long: the launch is FAILED


# (host, port, timeout, connection_type) -> a Future of the host keys (nodescan.NodeScanner);
# it fails with NodeScanError when the node does not answer within the timeout.
ScanStarter = Callable[[str, int, float, str], "Future[list[str]]"]
NodeWriter = Callable[[Node], None]


@dataclass
class LaunchOptions:
    """What the runner needs besides the LaunchSpec (from provider/pool/label config)."""

    host_key_checking: bool = True
    connection_type: str = "ssh"
    connection_port: int = 22
    # Not enforced here: the driver's create machine owns launch-timeout (it knows the id
    # the cloud assigned, so a LaunchTimeout still lets the server be deleted).
    launch_timeout: float = 3600.0
    boot_timeout: float = 60.0
    retries: int = 3
    requestor: str | None = None


@dataclass
class LaunchTask:
    node: Node
    spec: LaunchSpec
    options: LaunchOptions
    on_done: Callable[[LaunchTask], None]
    attempts: int = 0
    machine: StateMachine | None = None
    next_attempt_at: float = 0.0  # monotonic; a retried attempt waits for its backoff
    scan: Future[list[str]] | None = None
    instance: Instance | None = None
    phase_started: float = 0.0
    started: float = field(default_factory=time.monotonic)
    result: NodeState | None = None  # READY, FAILED or ABORTED once done (and stored)
    error: str | None = None
    finishing: bool = False  # the final record is being stored


@dataclass
class DeleteTask:
    """Deleting one server; retried with backoff until it is gone or `deadline` passes
    (None: until gone, for servers of failed launch attempts that nobody else knows)."""

    node_id: str | None
    external_id: str
    on_done: Callable[[bool], None]
    deadline: float | None
    machine: StateMachine | None = None
    retry: Backoff = field(default_factory=lambda: Backoff(*DELETE_BACKOFF))


@dataclass(frozen=True)
class Relock:
    """After a ZooKeeper session expiry: the node of a launch in flight is locked by `lock`
    again (None: it could not be re-taken). The runner owns the task, so the runner's
    thread sets it."""

    task: LaunchTask
    lock: Any


class ProviderRunner(Worker):
    def __init__(
        self,
        provider_name: str,
        adapter: ProviderAdapter,
        store_node: NodeWriter,
        scan_starter: ScanStarter | None = None,
        stats: LauncherStats | None = None,
        poll_interval: float = 0.05,
        paused: Callable[[], bool] | None = None,
        health: CircuitBreaker | None = None,
    ) -> None:
        super().__init__(f"ProviderRunner.{provider_name}", interval=60.0, paused=paused)
        self.provider_name = provider_name
        self.adapter = adapter
        self.store_node = store_node
        self.scan_starter = scan_starter
        self.stats = stats or LauncherStats()
        self.poll_interval = poll_interval
        self._incoming: queue.SimpleQueue[LaunchTask | DeleteTask | Relock] = queue.SimpleQueue()
        self._launches: list[LaunchTask] = []
        self._deletes: list[DeleteTask] = []
        self._count_lock = threading.Lock()
        self._active_launches = 0
        self._stores = ThreadPoolExecutor(STORE_THREADS, f"store-{provider_name}")
        self._probes = ThreadPoolExecutor(1, f"probe-{provider_name}")
        # Called when `accepting` or `launch_allowed` may have changed: the pools look again.
        self.on_health_change: Callable[[], None] = lambda: None
        self.health = health or CircuitBreaker()
        self.health.on_change = self._health_changed
        self._log = get_logger("nodepool_ng.launcher.runner", provider=provider_name)
        adapter.set_progress_listener(self.wake)

    # -- submitting work (any thread) ------------------------------------------------------
    def launch(self, task: LaunchTask) -> None:
        with self._count_lock:
            self._active_launches += 1
        self._incoming.put(task)
        self.wake()

    def delete(
        self, external_id: str, node_id: str | None, on_done: Callable[[bool], None]
    ) -> None:
        deadline = time.monotonic() + DELETE_TIMEOUT
        self._incoming.put(DeleteTask(node_id, external_id, on_done, deadline))
        self.wake()

    def relock(self, task: LaunchTask, lock: Any) -> None:
        """The node of `task` is locked by `lock` now (None: lost); see `Relock`."""
        self._incoming.put(Relock(task, lock))
        self.wake()

    @property
    def active_launches(self) -> int:
        with self._count_lock:
            return self._active_launches

    @property
    def accepting(self) -> bool:
        """Whether the cloud is taking launches at all; the pools publish `paused` while not,
        so that requests go to other providers."""
        return self.health.accepting

    def launch_allowed(self, in_flight: int) -> bool:
        """Whether a pool may start another launch with `in_flight` already under way."""
        return self.health.launch_allowed(in_flight)

    def _health_changed(self, old: BreakerState, new: BreakerState, why: str) -> None:
        if new is BreakerState.OPEN:
            self._log.warning("Provider %s is failing (%s): no launches until a probe "
                              "succeeds", self.provider_name, why)
        elif new is BreakerState.RAMPING:
            self._log.info("Provider %s answers again (%s): launches ramp up",
                           self.provider_name, why)
        else:
            self._log.info("Provider %s is healthy again (%s)", self.provider_name, why)
        self.stats.provider_health(self.provider_name, new.value)
        self.wake()
        self.on_health_change()

    # -- the loop --------------------------------------------------------------------------
    def run_once(self) -> float | None:
        while True:
            try:
                item = self._incoming.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, LaunchTask):
                self._launches.append(item)
            elif isinstance(item, Relock):
                item.task.node.lock = item.lock
            else:
                self._deletes.append(item)
        if self.health.probe_due():
            self._start_probe()
        self._launches = [t for t in self._launches if not self._advance_launch(t)]
        self._deletes = [t for t in self._deletes if not self._advance_delete(t)]
        return self._next_pass()

    def _next_pass(self) -> float | None:
        """The poll interval while machines run; else the earliest backoff or probe."""
        now = time.monotonic()
        waits: list[float] = []
        for launch in self._launches:
            if launch.machine is not None or launch.scan is not None:
                return self.poll_interval
            waits.append(launch.next_attempt_at - now)
        for delete in self._deletes:
            if delete.machine is not None:
                return self.poll_interval
            if self.health.accepting:
                waits.append(delete.retry.wait())
        probe = self.health.probe_wait()
        if probe is not None:
            waits.append(probe)
        return max(self.poll_interval, min(waits)) if waits else None

    def on_stop(self) -> None:
        # Unfinished work stays in ZooKeeper: our locks go with the session or are released by
        # the service, and another pass (or launcher) picks the nodes up.
        self._stores.shutdown(wait=True)
        self._probes.shutdown(wait=False, cancel_futures=True)
        self._launches.clear()
        self._deletes.clear()

    # -- probes ----------------------------------------------------------------------------
    def _start_probe(self) -> None:
        def probe() -> None:
            try:
                probe_call = getattr(self.adapter, "probe", None)  # a call despite backoffs
                if probe_call is not None:
                    probe_call()
                else:
                    list(self.adapter.list_instances())
            except Exception as e:
                self._log.debug("Probe of provider %s failed: %s", self.provider_name, e)
                self.stats.api_error(self.provider_name, "probe")
                self.health.probe_result(False)
            else:
                self.health.probe_result(True, "a server listing succeeded")
            self.wake()

        try:
            self._probes.submit(probe)
        except RuntimeError:  # stopping
            self.health.probe_result(False)

    # -- launches --------------------------------------------------------------------------
    def _advance_launch(self, task: LaunchTask) -> bool:
        """Advance one launch; True when it is finished (result set, on_done called)."""
        log = get_logger(
            "nodepool_ng.launcher.runner", node_id=task.node.id, provider=self.provider_name
        )
        try:
            if task.machine is None:
                if task.attempts and not self.health.accepting:
                    self._finish(task, NodeState.FAILED, "provider is failing (circuit open)",
                                 "error.unknown")
                    return True
                if time.monotonic() < task.next_attempt_at:
                    return False
                self._start_attempt(task, log)
            elif task.scan is None and task.instance is None:
                self._advance_create(task, log)
            if task.instance is not None:
                self._advance_scan(task)
        except RecordNotFound as e:
            log.warning("Launch given up, the node record is gone: %s", e)
            self._finish(task, NodeState.FAILED, str(e), "error.zksession")
        except ZooKeeperError as e:
            # ZooKeeper trouble is not the launch's fault: keep it, try again next pass.
            log.warning("Could not record launch progress in ZooKeeper: %s", e)
            return False
        except QuotaExceeded as e:
            self.health.success()  # the cloud answered
            log.info("Launch aborted, cloud quota exceeded: %s", e)
            self._finish(task, NodeState.ABORTED, f"quota: {e}", "error.quota")
        except Exception as e:
            result = _error_stat(e)
            if not isinstance(e, NodeScanError):  # the node's fault, not the cloud's
                self.stats.api_error(self.provider_name, "launch")
                self.health.failure(str(e))
            if task.attempts < task.options.retries:
                log.warning(
                    "Launch attempt %s/%s failed: %s", task.attempts, task.options.retries, e
                )
                self.stats.launch(
                    result,
                    self.provider_name,
                    task.node.az,
                    task.options.requestor,
                    _ms(task.phase_started),
                )
                self._retry(task)
            else:
                log.error("Launch failed after %s attempts: %s", task.attempts, e)
                self._finish(task, NodeState.FAILED, str(e), result)
        return task.result is not None or task.finishing

    def _start_attempt(self, task: LaunchTask, log: logging.LoggerAdapter[logging.Logger]) -> None:
        task.attempts += 1
        task.phase_started = time.monotonic()
        task.instance = None
        task.scan = None
        task.machine = self.adapter.get_create_state_machine(task.spec, log)
        self._advance_create(task, log)

    def _advance_create(self, task: LaunchTask, log: logging.LoggerAdapter[logging.Logger]) -> None:
        assert task.machine is not None
        instance = task.machine.advance()
        if task.machine.external_id and task.node.external_id != task.machine.external_id:
            # Record the server before anything else can fail: no leaked server.
            previous = task.node.external_id
            task.node.external_id = task.machine.external_id
            try:
                self.store_node(task.node)
            except ZooKeeperError:
                task.node.external_id = previous  # stored again next pass
                raise
        if instance is None:
            return  # launch-timeout is the machine's: it raises LaunchTimeout with the id
        task.instance = instance
        task.phase_started = time.monotonic()
        _fill_node(task.node, instance)
        self.health.success(launched=True)
        if task.options.host_key_checking and self.scan_starter is not None:
            ip = instance.interface_ip
            if not ip:
                raise NodeScanError("server has no interface_ip to scan")
            task.scan = self.scan_starter(
                ip,
                task.options.connection_port,
                task.options.boot_timeout,
                task.options.connection_type,
            )

    def _advance_scan(self, task: LaunchTask) -> None:
        if task.scan is not None:
            if not task.scan.done():
                return
            task.node.host_keys = list(task.scan.result())
        self._finish(task, NodeState.READY, None, "ready")

    def _retry(self, task: LaunchTask) -> None:
        """Another attempt after a backoff; the failed attempt's server is deleted in the
        background until it is gone (the next attempt need not wait for that)."""
        external_id = task.machine.external_id if task.machine else None
        task.machine = None
        task.instance = None
        task.scan = None
        task.next_attempt_at = time.monotonic() + backoff_delay(task.attempts, *ATTEMPT_BACKOFF)
        if external_id:
            # The node record keeps this id until the next attempt's server replaces it: a
            # launcher dying meanwhile leaves it to the deleter, not to chance.
            self._deletes.append(DeleteTask(task.node.id, external_id, lambda ok: None, None))

    def _finish(self, task: LaunchTask, state: NodeState, error: str | None, stat: str) -> None:
        task.node.state = state
        if task.machine is not None and task.machine.external_id:
            task.node.external_id = task.machine.external_id
        task.finishing = True  # the runner is done with it; nothing else writes the node now

        def store_then_report() -> None:
            try:
                stored = self._store_final(task, state)
            except Exception:  # a bug: still report, or the launch never ends
                self._log.exception("Storing node %s failed", task.node.id)
                stored = NodeState.FAILED
            task.error = error
            if stored is not state:
                # The handler reads the node's state: never READY unless stored as such.
                task.node.state = stored
                task.error = f"{error or state}: the record could not be stored"
            task.result = stored
            self.stats.launch(
                stat if stored is state else "error.zksession", self.provider_name,
                task.node.az, task.options.requestor, _ms(task.started)
            )
            with self._count_lock:
                self._active_launches -= 1
            task.on_done(task)

        try:
            self._stores.submit(store_then_report)
        except RuntimeError:  # stopping: the pool is shut down
            store_then_report()

    def _store_final(self, task: LaunchTask, state: NodeState) -> NodeState:
        """Write the launch's final record, retrying through a ZooKeeper outage; the state to
        report: `state` once written, FAILED when the node is no longer ours to write."""
        log = get_logger(
            "nodepool_ng.launcher.runner", node_id=task.node.id, provider=self.provider_name
        )
        retry = Backoff(*STORE_BACKOFF)
        give_up_at = time.monotonic() + STORE_GIVE_UP
        while True:
            try:
                self.store_node(task.node)
                if retry.failures:
                    log.info("Stored the node as %s after %s failed writes", state,
                             retry.failures)
                return state
            except RecordNotFound:
                log.warning("The node record is gone; not reporting it %s", state)
                return NodeState.FAILED
            except ZooKeeperError as e:
                if not retry.failures:
                    log.warning("Could not store the node as %s (%s); retrying", state, e)
            if _lock_held(task.node) is False:
                log.warning("The node's lock was lost (ZooKeeper session expired); not "
                            "reporting it %s", state)
                return NodeState.FAILED
            if time.monotonic() > give_up_at or self.stopped:
                log.warning("Giving up storing the node as %s", state)
                return NodeState.FAILED
            self._stopped.wait(retry.failed())

    # -- deletes ---------------------------------------------------------------------------
    def _advance_delete(self, task: DeleteTask) -> bool:
        """True when finished (gone, or given up at its deadline; on_done called)."""
        log = get_logger(
            "nodepool_ng.launcher.runner", node_id=task.node_id, provider=self.provider_name
        )
        if task.machine is None:
            if task.deadline is not None and time.monotonic() > task.deadline:
                log.warning("Giving up deleting server %s for now after %s failures",
                            task.external_id, task.retry.failures)
                task.on_done(False)
                return True
            # While the breaker is open only its probe talks to the cloud.
            if not task.retry.ready() or not self.health.accepting:
                return False
            task.machine = self.adapter.get_delete_state_machine(task.external_id, log)
        try:
            task.machine.advance()
        except Exception as e:
            task.machine = None
            self.stats.api_error(self.provider_name, "delete")
            delay = task.retry.failed()
            if task.retry.failures == 1:
                # One failing delete counts once: a single undeletable server must not keep
                # a provider's breaker open.
                self.health.failure(f"deleting server {task.external_id}: {e}")
                log.warning("Deleting server %s failed (%s); retrying with backoff",
                            task.external_id, e)
            else:
                log.debug("Deleting server %s failed again (%s); next try in %.1fs",
                          task.external_id, e, delay)
            return False
        if not task.machine.complete:
            return False
        self.health.success()
        if task.retry.failures:
            log.info("Deleted server %s after %s failed tries", task.external_id,
                     task.retry.failures)
        task.on_done(True)
        return True


def _lock_held(node: Node) -> bool | None:
    """Whether this process still holds the node's lock: False when it is gone (the session
    expired, or the pool could not re-take it), None when ZooKeeper cannot tell now."""
    lock = node.lock
    if lock is None or not getattr(lock, "is_acquired", False):
        return False
    path = getattr(lock, "contender_path", None)
    client = getattr(lock, "client", None)
    if path is None or client is None:
        return None
    try:
        return client.exists(path) is not None
    except ZooKeeperError:
        return None


def _fill_node(node: Node, instance: Instance) -> None:
    node.external_id = instance.external_id
    node.interface_ip = instance.interface_ip
    node.public_ipv4 = instance.public_ipv4
    node.private_ipv4 = instance.private_ipv4
    node.public_ipv6 = instance.public_ipv6
    node.host_id = instance.host_id
    node.cloud = instance.cloud or node.cloud
    node.region = instance.region or node.region
    node.az = instance.az or node.az
    if instance.resources is not None:
        node.resources = instance.resources.as_dict()


def _error_stat(e: Exception) -> str:
    if isinstance(e, LaunchTimeout):
        return "error.servercreatetimeout"
    if isinstance(e, NodeScanError):
        return "error.keyscan"
    return "error.unknown"


def _ms(since: float) -> float:
    return (time.monotonic() - since) * 1000.0
