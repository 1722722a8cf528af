"""`ProviderRunner`: one thread per provider advancing every create and delete StateMachine.

No thread per node: `advance()` never blocks (the driver runs API calls in its own bounded
executor), and host-key scans are polled the same way. The runner is woken when work is
submitted; while machines are in flight it polls them every `poll_interval`.

A launch: create machine -> (host-key scan) -> READY. The node record gets the cloud's
external id as soon as the machine has one (no leaked server). Failures other than quota are
retried `launch-retries` times (the half-built server is deleted first); then the node is
`failed`. A QuotaExceeded makes the node `aborted` at once (the request handler relaunches).

A launch's final record (READY/FAILED/ABORTED) is written by a small store pool, not the
runner's thread: each write is a ZooKeeper round trip, and a burst of launches finishing
together would otherwise queue them in front of every other machine's progress. The launch
counts as finished (`result`, `on_done`) only once that record is stored, so a request is
never fulfilled with a node that ZooKeeper still shows building.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from nodepool_ng.drivers.base import Instance, LaunchSpec, ProviderAdapter, StateMachine
from nodepool_ng.errors import (
    LaunchTimeout,
    NodeScanError,
    QuotaExceeded,
    RecordNotFound,
    ZooKeeperError,
)
from nodepool_ng.launcher.stats import LauncherStats
from nodepool_ng.log import get_logger
from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.runtime.loop import Worker

DELETE_TIMEOUT = 600.0
STORE_THREADS = 4  # final node records written concurrently (ZooKeeper I/O)


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
    cleanup: StateMachine | None = None  # deleting the previous attempt's server
    scan: Future[list[str]] | None = None
    instance: Instance | None = None
    phase_started: float = 0.0
    started: float = field(default_factory=time.monotonic)
    result: NodeState | None = None  # READY, FAILED or ABORTED once done (and stored)
    error: str | None = None
    finishing: bool = False  # the final record is being stored


@dataclass
class DeleteTask:
    node_id: str | None
    external_id: str
    on_done: Callable[[bool], None]
    machine: StateMachine | None = None
    started: float = field(default_factory=time.monotonic)


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
    ) -> None:
        super().__init__(f"ProviderRunner.{provider_name}", interval=60.0, paused=paused)
        self.provider_name = provider_name
        self.adapter = adapter
        self.store_node = store_node
        self.scan_starter = scan_starter
        self.stats = stats or LauncherStats()
        self.poll_interval = poll_interval
        self._incoming: queue.SimpleQueue[LaunchTask | DeleteTask] = queue.SimpleQueue()
        self._launches: list[LaunchTask] = []
        self._deletes: list[DeleteTask] = []
        self._count_lock = threading.Lock()
        self._active_launches = 0
        self._stores = ThreadPoolExecutor(STORE_THREADS, f"store-{provider_name}")
        # Called when `accepting` or `launch_allowed` may have changed: the pools look again.
        self.on_health_change: Callable[[], None] = lambda: None
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
        self._incoming.put(DeleteTask(node_id, external_id, on_done))
        self.wake()

    @property
    def active_launches(self) -> int:
        with self._count_lock:
            return self._active_launches

    @property
    def accepting(self) -> bool:
        """Whether the cloud is taking launches at all; the pools publish `paused` while not,
        so that requests go to other providers."""
        return True

    def launch_allowed(self, in_flight: int) -> bool:
        """Whether a pool may start another launch with `in_flight` already under way."""
        return True

    # -- the loop --------------------------------------------------------------------------
    def run_once(self) -> float | None:
        while True:
            try:
                item = self._incoming.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, LaunchTask):
                self._launches.append(item)
            else:
                self._deletes.append(item)
        self._launches = [t for t in self._launches if not self._advance_launch(t)]
        self._deletes = [t for t in self._deletes if not self._advance_delete(t)]
        return self.poll_interval if (self._launches or self._deletes) else None

    def on_stop(self) -> None:
        # Unfinished work stays in ZooKeeper: our locks go with the session or are released by
        # the service, and another pass (or launcher) picks the nodes up.
        self._stores.shutdown(wait=True)
        self._launches.clear()
        self._deletes.clear()

    # -- launches --------------------------------------------------------------------------
    def _advance_launch(self, task: LaunchTask) -> bool:
        """Advance one launch; True when it is finished (result set, on_done called)."""
        log = get_logger(
            "nodepool_ng.launcher.runner", node_id=task.node.id, provider=self.provider_name
        )
        try:
            if task.cleanup is not None:
                self._advance_cleanup(task, log)
            elif task.machine is None:
                self._start_attempt(task, log)
            elif task.scan is None and task.instance is None:
                self._advance_create(task, log)
            if task.instance is not None:
                self._advance_scan(task)
        except RecordNotFound as e:
            log.error("Launch given up, the node record is gone: %s", e)
            self._finish(task, NodeState.FAILED, str(e), "error.zksession")
        except ZooKeeperError as e:
            # ZooKeeper trouble is not the launch's fault: keep it, try again next pass.
            log.warning("Could not record launch progress in ZooKeeper: %s", e)
            return False
        except QuotaExceeded as e:
            log.info("Launch aborted, cloud quota exceeded: %s", e)
            self._finish(task, NodeState.ABORTED, f"quota: {e}", "error.quota")
        except Exception as e:
            result = _error_stat(e)
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
                self._retry(task, log)
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
            task.node.external_id = task.machine.external_id
            try:
                self.store_node(task.node)
            except ZooKeeperError:
                task.node.external_id = None  # stored again next pass
                raise
        if instance is None:
            if time.monotonic() - task.phase_started > task.options.launch_timeout:
                raise LaunchTimeout(
                    f"server not ACTIVE within launch-timeout {task.options.launch_timeout}s"
                )
            return
        task.instance = instance
        task.phase_started = time.monotonic()
        _fill_node(task.node, instance)
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

    def _retry(self, task: LaunchTask, log: logging.LoggerAdapter[logging.Logger]) -> None:
        external_id = task.machine.external_id if task.machine else None
        task.machine = None
        task.instance = None
        task.scan = None
        if external_id:
            task.cleanup = self.adapter.get_delete_state_machine(external_id, log)
            task.phase_started = time.monotonic()
        # else: the next pass starts a new attempt

    def _advance_cleanup(
        self, task: LaunchTask, log: logging.LoggerAdapter[logging.Logger]
    ) -> None:
        assert task.cleanup is not None
        try:
            task.cleanup.advance()
            done = task.cleanup.complete
        except Exception as e:
            log.warning("Could not delete server of failed attempt: %s", e)
            done = True  # the leak cleanup finds it later
        if done or time.monotonic() - task.phase_started > DELETE_TIMEOUT:
            task.cleanup = None
            task.node.external_id = None
            self.store_node(task.node)

    def _finish(self, task: LaunchTask, state: NodeState, error: str | None, stat: str) -> None:
        task.node.state = state
        if task.machine is not None and task.machine.external_id:
            task.node.external_id = task.machine.external_id
        task.finishing = True  # the runner is done with it; nothing else writes the node now

        def store_then_report() -> None:
            try:
                self.store_node(task.node)
            except Exception:
                logging.getLogger("nodepool_ng.launcher.runner").exception(
                    "Could not store node %s as %s", task.node.id, state
                )
            task.error = error
            task.result = state
            self.stats.launch(
                stat, self.provider_name, task.node.az, task.options.requestor, _ms(task.started)
            )
            with self._count_lock:
                self._active_launches -= 1
            task.on_done(task)

        try:
            self._stores.submit(store_then_report)
        except RuntimeError:  # stopping: the pool is shut down
            store_then_report()

    # -- deletes ---------------------------------------------------------------------------
    def _advance_delete(self, task: DeleteTask) -> bool:
        log = get_logger(
            "nodepool_ng.launcher.runner", node_id=task.node_id, provider=self.provider_name
        )
        try:
            if task.machine is None:
                task.machine = self.adapter.get_delete_state_machine(task.external_id, log)
            task.machine.advance()
            if task.machine.complete:
                task.on_done(True)
                return True
            if time.monotonic() - task.started > DELETE_TIMEOUT:
                log.error("Deleting server %s timed out", task.external_id)
                task.on_done(False)
                return True
        except Exception as e:
            log.warning("Deleting server %s failed: %s", task.external_id, e)
            task.on_done(False)
            return True
        return False


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
