"""systemd's notification protocol (`sd_notify(3)`), without a dependency.

A service of `Type=notify` tells systemd it is ready (`READY=1`), what it is doing
(`STATUS=...`), that it is stopping (`STOPPING=1`) and, under `WatchdogSec=`, that it is alive
(`WATCHDOG=1`). Each message is one datagram of newline-separated `KEY=VALUE` lines sent to the
Unix socket named by `$NOTIFY_SOCKET`: a path, or an abstract socket written with a leading
`@` (the `@` stands for the leading NUL byte of the address).

Without `$NOTIFY_SOCKET` (not started by systemd, or `Type=simple`) every call does nothing
and returns False; a socket that cannot be reached is logged once at DEBUG and never raised:
notifications must not stop a daemon.

`$WATCHDOG_USEC` is the watchdog timeout systemd expects pings within; `$WATCHDOG_PID`, when
set, names the process it applies to (a child process that inherited the environment must not
ping for its parent).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("nodepool_ng.runtime.sdnotify")


def socket_address(env: Mapping[str, str] | None = None) -> str | None:
    """The address `$NOTIFY_SOCKET` names, ready for `socket.connect` (abstract: leading NUL);
    None when unset or of a kind not supported here (systemd's `vsock:` addresses)."""
    value = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def notify(*lines: str, env: Mapping[str, str] | None = None) -> bool:
    """Send `lines` (e.g. "READY=1", "STATUS=serving") as one datagram; True when sent."""
    address = socket_address(env)
    if address is None or not lines:
        return False
    message = "\n".join(lines).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message)
    except OSError as e:
        log.debug("sd_notify to %r failed: %s", address, e)
        return False
    return True


def watchdog_timeout(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds systemd waits for a `WATCHDOG=1` (`$WATCHDOG_USEC`), or None when no watchdog
    applies to this process (unset, not a positive integer, or `$WATCHDOG_PID` is another
    process's)."""
    env = os.environ if env is None else env
    pid = env.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1_000_000 if usec > 0 else None
