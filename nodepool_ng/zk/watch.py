"""Persistent recursive watches (ZooKeeper >= 3.6 `addWatch`), which kazoo 2.11 lacks.

One persistent recursive watch on a subtree reports every znode created, changed or deleted
under it, for as long as the connection lasts, without re-arming. kazoo's `TreeCache` instead
keeps a one-shot data watch and child watch on every znode and re-reads a znode's data *and*
children on each change: ~60 ZooKeeper round trips per request in the launcher (a lock
contender alone costs four). Zuul and upstream Nodepool use persistent watches for the same
reason; Zuul vendors a patched kazoo for it, we add the two missing pieces here:

* `AddWatch`, the request (opcode 106, path + mode), sent through kazoo's own queue;
* `WatchRouter`, which hands each notification under a registered root to that root's
  listener (`zk/connection.py` calls it before kazoo's own one-shot watch dispatch).

The server forgets persistent watches when the connection drops; the owner (the cache)
re-adds them on every reconnect and re-reads its subtree then.
"""

from __future__ import annotations

import logging
import threading
from collections import namedtuple
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient
from kazoo.protocol.paths import _prefix_root
from kazoo.protocol.serialization import int_struct, write_string
from kazoo.protocol.states import EventType

log = logging.getLogger("nodepool_ng.zk.watch")

PERSISTENT_RECURSIVE = 1  # AddWatchMode in ZooKeeper's protocol
ADD_WATCH_OPCODE = 106

# Notification type numbers on the wire -> kazoo's names (recursive watches send these three).
_EVENT_TYPES = {1: EventType.CREATED, 2: EventType.DELETED, 3: EventType.CHANGED}

WatchListener = Callable[[str, str], None]  # (EventType, path without chroot)


class AddWatch(namedtuple("AddWatch", "path mode")):
    """The `addWatch` request; the reply is a bare header (an error code or nothing)."""

    type = ADD_WATCH_OPCODE

    def serialize(self) -> bytearray:
        out = bytearray(write_string(self.path))
        out.extend(int_struct.pack(self.mode))
        return out

    @classmethod
    def deserialize(cls, buffer: bytes, offset: int) -> bool:
        return True


class WatchRouter:
    """Routes persistent-watch notifications to one listener per watched root."""

    def __init__(self) -> None:
        self._routes: dict[str, WatchListener] = {}
        self._lock = threading.Lock()

    def add(self, root: str, listener: WatchListener) -> None:
        with self._lock:
            self._routes[root.rstrip("/") or "/"] = listener

    def remove(self, root: str) -> None:
        with self._lock:
            self._routes.pop(root.rstrip("/") or "/", None)

    def dispatch(self, wire_type: int, path: str) -> None:
        """Called on kazoo's connection thread: listeners must only queue work."""
        event_type = _EVENT_TYPES.get(wire_type)
        if event_type is None:
            return  # child events belong to one-shot watches only
        with self._lock:
            routes = list(self._routes.items())
        for root, listener in routes:
            if path == root or path.startswith(root + "/") or root == "/":
                try:
                    listener(event_type, path)
                except Exception:
                    log.exception("watch listener for %s failed", root)


def add_watch_async(kazoo: KazooClient, path: str, mode: int = PERSISTENT_RECURSIVE) -> Any:
    """Send `addWatch(path, mode)`; returns kazoo's async result (True, or raises e.g.
    UnimplementedError on a server older than 3.6)."""
    result = kazoo.handler.async_result()
    kazoo._call(AddWatch(_prefix_root(kazoo.chroot, path), mode), result)
    return result
