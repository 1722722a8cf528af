"""Host-key scanning and reachability checks for freshly booted nodes.

`scan_host_keys()` blocks (for tools and tests). `NodeScanner` is what the launcher uses: one
thread waits for TCP ports with non-blocking connects (so hundreds of booting nodes cost no
thread each), and a small bounded pool runs the short SSH key negotiations.

A scan returns one "<type> <base64>" string per host-key type the server offers, like
upstream's `host_keys` node field. For connection types other than ssh/network_cli only the
TCP connect is checked and the result is an empty list.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import paramiko

from nodepool_ng.errors import NodeScanError

log = logging.getLogger(__name__)
# paramiko logs a traceback at ERROR for every refused key type; those are expected here, so
# our transports log on their own channel, quiet below CRITICAL.
_PARAMIKO_CHANNEL = "paramiko.transport.nodescan"
logging.getLogger(_PARAMIKO_CHANNEL).setLevel(logging.CRITICAL)

SSH_CONNECTION_TYPES = frozenset({"ssh", "network_cli"})
# One entry per key family; within a family the first algorithm the server accepts wins
# (RSA keys are offered as rsa-sha2-* by modern sshd, ssh-rsa by old ones: same key).
KEY_FAMILIES: tuple[tuple[str, ...], ...] = (
    ("ssh-ed25519",),
    ("ecdsa-sha2-nistp256",),
    ("ecdsa-sha2-nistp384",),
    ("ecdsa-sha2-nistp521",),
    ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
)
ATTEMPT_TIMEOUT = 10.0  # upper bound for one TCP connect or one SSH negotiation
RETRY_DELAY = 0.5  # pause between attempts while the node boots


def _sockaddr(ip: str, port: int) -> tuple[int, tuple[str, int] | tuple[str, int, int, int]]:
    family, _, _, _, addr = socket.getaddrinfo(ip, port, 0, socket.SOCK_STREAM)[0]
    return family, addr  # type: ignore[return-value]


def _negotiate(ip: str, port: int, key_types: Sequence[str], timeout: float) -> str | None:
    """One SSH key exchange restricted to `key_types`; None if the server offers none of them."""
    family, addr = _sockaddr(ip, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    transport: paramiko.Transport | None = None
    try:
        sock.connect(addr)
        transport = paramiko.Transport(sock)
        transport.set_log_channel(_PARAMIKO_CHANNEL)
        transport.banner_timeout = timeout
        transport.handshake_timeout = timeout
        known = [k for k in key_types if k in getattr(paramiko.Transport, "_key_info", {})]
        if not known:
            return None
        transport.get_security_options().key_types = tuple(known)
        try:
            transport.start_client(timeout=timeout)
        except paramiko.ssh_exception.IncompatiblePeer:
            return None
        key = transport.get_remote_server_key()
        return f"{key.get_name()} {key.get_base64()}"
    finally:
        if transport is not None:
            transport.close()
        sock.close()


def collect_host_keys(ip: str, port: int, timeout: float = ATTEMPT_TIMEOUT) -> list[str]:
    """Every host key the server offers, one SSH negotiation per key family.

    Raises OSError or paramiko.SSHException when the server cannot be talked to at all.
    """
    keys: list[str] = []
    for family in KEY_FAMILIES:
        key = _negotiate(ip, port, family, timeout)
        if key is not None and key not in keys:
            keys.append(key)
    if not keys:
        raise NodeScanError(f"{ip}:{port} offered no host key type we support")
    return keys


def _tcp_probe(ip: str, port: int, timeout: float) -> None:
    family, addr = _sockaddr(ip, port)
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(addr)


def wait_for_port(ip: str, port: int, timeout: float) -> None:
    """Block until `ip:port` accepts a TCP connection (retrying refusals and timeouts);
    NodeScanError once `timeout` seconds have passed."""
    scan_host_keys(ip, port, timeout, connection_type="tcp")


def scan_host_keys(
    ip: str,
    port: int = 22,
    timeout: float = 60.0,
    connection_type: str = "ssh",
    attempt_timeout: float = ATTEMPT_TIMEOUT,
) -> list[str]:
    """Block until the node answers (or `timeout` seconds pass) and return its host keys.

    Retries on connection refused/unreachable/timeouts and failed SSH negotiations; raises
    NodeScanError naming the address and the last error once the time is up.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise NodeScanError(
                f"timeout after {timeout:g}s scanning {ip}:{port} ({last_error or 'no answer'})"
            )
        per_attempt = max(0.1, min(attempt_timeout, remaining))
        try:
            if connection_type not in SSH_CONNECTION_TYPES:
                _tcp_probe(ip, port, per_attempt)
                return []
            return collect_host_keys(ip, port, per_attempt)
        except NodeScanError:
            raise
        except (OSError, paramiko.SSHException, EOFError) as e:
            last_error = e
        time.sleep(max(0.0, min(RETRY_DELAY, deadline - time.monotonic())))


@dataclass
class _Scan:
    ip: str
    port: int
    connection_type: str
    deadline: float
    timeout: float
    future: Future[list[str]]
    next_attempt: float = 0.0
    sock: socket.socket | None = None
    connect_deadline: float = 0.0
    last_error: str = "no answer"
    attempts: int = field(default=0)


class NodeScanner:
    """Scans many nodes at once: one waiter thread plus a small pool for SSH negotiation.

    `submit()` returns a Future that resolves to the host keys (an empty list for
    reachability-only scans) or fails with NodeScanError once `timeout` is spent.
    """

    def __init__(self, *, workers: int = 4, attempt_timeout: float = ATTEMPT_TIMEOUT,
                 retry_delay: float = RETRY_DELAY) -> None:
        self._attempt_timeout = attempt_timeout
        self._retry_delay = retry_delay
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nodescan-key")
        self._lock = threading.Lock()
        self._new: list[_Scan] = []
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="nodescan", daemon=True)
        self._thread.start()

    def submit(self, ip: str, port: int = 22, timeout: float = 60.0,
               connection_type: str = "ssh") -> Future[list[str]]:
        if self._stopped:
            raise RuntimeError("NodeScanner is stopped")
        future: Future[list[str]] = Future()
        future.set_running_or_notify_cancel()
        scan = _Scan(ip, port, connection_type, time.monotonic() + timeout, timeout, future)
        with self._lock:
            self._new.append(scan)
        self._wake()
        return future

    def stop(self) -> None:
        self._stopped = True
        self._wake()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    # The waiter thread -------------------------------------------------------------------

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        waiting: list[_Scan] = []  # not connecting yet (retry delay)
        try:
            while not self._stopped:
                with self._lock:
                    waiting.extend(self._new)
                    self._new.clear()
                now = time.monotonic()
                for scan in list(waiting):
                    if now >= scan.deadline:
                        waiting.remove(scan)
                        self._fail(scan)
                    elif now >= scan.next_attempt:
                        waiting.remove(scan)
                        self._start_connect(scan, sel, waiting)
                for key in list(sel.get_map().values()):
                    scan = key.data
                    if scan is not None and now >= scan.connect_deadline:
                        self._connect_failed(scan, sel, waiting, "connect timed out")
                timeout = self._next_timeout(waiting, sel, now)
                for key, _ in sel.select(timeout):
                    if key.data is None:
                        try:
                            self._wake_r.recv(4096)
                        except BlockingIOError:
                            pass
                        continue
                    self._connect_done(key.data, sel, waiting)
        except Exception:  # pragma: no cover - keep futures from hanging on a bug
            log.exception("nodescan waiter crashed")
        finally:
            for key in list(sel.get_map().values()):
                if key.data is not None:
                    key.data.sock.close()
                    waiting.append(key.data)
            with self._lock:
                waiting.extend(self._new)
            for scan in waiting:
                if not scan.future.done():
                    scan.future.set_exception(NodeScanError("node scanner stopped"))
            sel.close()

    def _next_timeout(self, waiting: list[_Scan], sel: selectors.BaseSelector,
                      now: float) -> float:
        times = [min(s.next_attempt, s.deadline) for s in waiting]
        times += [k.data.connect_deadline for k in sel.get_map().values() if k.data is not None]
        return max(0.0, min(times, default=now + 1.0) - now)

    def _start_connect(self, scan: _Scan, sel: selectors.BaseSelector,
                       waiting: list[_Scan]) -> None:
        scan.attempts += 1
        try:
            family, addr = _sockaddr(scan.ip, scan.port)
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            err = sock.connect_ex(addr)
        except OSError as e:
            scan.last_error = str(e)
            self._retry_later(scan, waiting)
            return
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            scan.last_error = f"{errno.errorcode.get(err, err)}"
            self._retry_later(scan, waiting)
            return
        scan.sock = sock
        scan.connect_deadline = min(scan.deadline, time.monotonic() + self._attempt_timeout)
        sel.register(sock, selectors.EVENT_WRITE, scan)

    def _connect_done(self, scan: _Scan, sel: selectors.BaseSelector,
                      waiting: list[_Scan]) -> None:
        assert scan.sock is not None
        err = scan.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._connect_failed(scan, sel, waiting, errno.errorcode.get(err, str(err)))
            return
        sel.unregister(scan.sock)
        scan.sock.close()
        scan.sock = None
        if scan.connection_type not in SSH_CONNECTION_TYPES:
            scan.future.set_result([])
            return
        self._pool.submit(self._keyscan, scan)

    def _connect_failed(self, scan: _Scan, sel: selectors.BaseSelector,
                        waiting: list[_Scan], reason: str) -> None:
        assert scan.sock is not None
        sel.unregister(scan.sock)
        scan.sock.close()
        scan.sock = None
        scan.last_error = reason
        self._retry_later(scan, waiting)

    def _retry_later(self, scan: _Scan, waiting: list[_Scan]) -> None:
        scan.next_attempt = time.monotonic() + self._retry_delay
        waiting.append(scan)

    def _fail(self, scan: _Scan) -> None:
        scan.future.set_exception(NodeScanError(
            f"timeout after {scan.timeout:g}s scanning {scan.ip}:{scan.port} "
            f"({scan.attempts} attempts, last: {scan.last_error})"))

    # Pool side ---------------------------------------------------------------------------

    def _keyscan(self, scan: _Scan) -> None:
        remaining = scan.deadline - time.monotonic()
        try:
            keys = collect_host_keys(scan.ip, scan.port,
                                     max(0.1, min(self._attempt_timeout, remaining)))
        except NodeScanError as e:
            scan.future.set_exception(e)
            return
        except (OSError, paramiko.SSHException, EOFError) as e:
            # sshd may accept TCP before it can talk SSH: go back to waiting
            scan.last_error = f"ssh: {e}"
            scan.next_attempt = time.monotonic() + self._retry_delay
            with self._lock:
                self._new.append(scan)
            self._wake()
            return
        except Exception as e:
            scan.future.set_exception(NodeScanError(f"scanning {scan.ip}:{scan.port}: {e}"))
            return
        scan.future.set_result(keys)
