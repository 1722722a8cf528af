"""Signal helpers for daemons: SIGTERM/SIGINT stop cleanly, SIGHUP re-reads the config
(`systemctl reload`), SIGUSR2 dumps thread stacks."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("nodepool_ng.signals")


def dump_threads(logger: logging.Logger = log) -> str:
    """Log (and return) the stack of every thread, upstream's SIGUSR2 behaviour."""
    names = {t.ident: t.name for t in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        stack = "".join(traceback.format_stack(frame))
        parts.append(f"Thread: {names.get(ident, '?')} ({ident})\n{stack}")
    text = "\n".join(parts)
    logger.warning("Thread dump:\n%s", text)
    return text


def install_signal_handlers(
    stop: Callable[[], None], reload: Callable[[], None] | None = None
) -> None:
    """Install handlers; must be called from the main thread.

    `reload` must only hand the work to another thread (wake a worker): handlers run in the
    main thread between two bytecodes. Without it SIGHUP is still caught, because its
    default action kills the process with an exit that systemd counts as clean, so
    `Restart=on-failure` would not bring the daemon back.
    """

    def _stop(signum: int, frame: FrameType | None) -> None:
        log.info("Received signal %s, stopping", signum)
        stop()

    def _reload(signum: int, frame: FrameType | None) -> None:
        if reload is None:
            log.info("SIGHUP received; nothing to reload")
            return
        log.info("reloading on SIGHUP")
        try:
            reload()
        except Exception:
            # An exception here would be raised in the main thread and end the daemon.
            log.exception("Reload on SIGHUP failed")

    def _dump(signum: int, frame: FrameType | None) -> None:
        dump_threads()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, _reload)
    signal.signal(signal.SIGUSR2, _dump)
