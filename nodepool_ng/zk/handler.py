"""kazoo's threading handler with a select() that costs a system call, not an epoll object.

kazoo's connection thread calls `handler.select()` before every read and every write. Its
stock implementation (`kazoo.handlers.utils.selector_select`) builds a `selectors`
`DefaultSelector` each time: an epoll file descriptor created, registered, and closed per call.
Under a burst of requests that was ~20% of the launcher's CPU (py-spy, bench scenario (a)).
`select.poll()` has the same semantics without the 1024-descriptor limit of `select.select`,
and a poll object is a plain allocation, so one is built per call.
"""

from __future__ import annotations

import select
from typing import Any

from kazoo.handlers.threading import SequentialThreadingHandler

_READ_MASK = select.POLLIN | select.POLLPRI
_WRITE_MASK = select.POLLOUT


def _fileno(obj: Any) -> int:
    return obj if isinstance(obj, int) else int(obj.fileno())


def poll_select(rlist: list[Any], wlist: list[Any], xlist: list[Any],
                timeout: float | None = None) -> tuple[list[Any], list[Any], list[Any]]:
    """`select.select`'s contract on `poll`, answering like kazoo's `selector_select`: an
    error or hang-up counts as readable (a registered reader then sees it on recv)."""
    if timeout is not None and timeout < 0:
        raise ValueError("timeout must be non-negative")
    masks: dict[int, int] = {}
    readers: dict[int, list[Any]] = {}
    writers: dict[int, list[Any]] = {}
    for objs, mask, by_fd in ((rlist, _READ_MASK, readers), (wlist, _WRITE_MASK, writers)):
        for obj in objs:
            fd = _fileno(obj)
            masks[fd] = masks.get(fd, 0) | mask
            by_fd.setdefault(fd, []).append(obj)
    poller = select.poll()
    for fd, mask in masks.items():
        poller.register(fd, mask)
    ready = poller.poll(None if timeout is None else timeout * 1000.0)
    readable: list[Any] = []
    writable: list[Any] = []
    for fd, revents in ready:
        # The same reading selectors.PollSelector gives, then kazoo's read-before-write choice.
        if revents & ~select.POLLOUT and fd in readers:
            readable.extend(readers[fd])
        elif revents & ~select.POLLIN and fd in writers:
            writable.extend(writers[fd])
    return readable, writable, []


class PollingThreadingHandler(SequentialThreadingHandler):
    """`SequentialThreadingHandler` whose connection loop waits with `poll_select`."""

    def select(self, *args: Any, **kwargs: Any) -> tuple[list[Any], list[Any], list[Any]]:
        return poll_select(*args, **kwargs)
