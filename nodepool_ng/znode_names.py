"""A name a user gives for one znode (a node id, an image name), checked before it goes
into a ZooKeeper path: `../../x` or `a/b` would name another place in the tree, and
ZooKeeper refuses some characters outright (kazoo raises, the caller would see a traceback).

ZooKeeper's rules: not empty, no `/`, not `.` or `..`, none of U+0000-U+001F,
U+007F-U+009F, U+D800-U+F8FF, U+FFF0-U+FFFF.
"""

from __future__ import annotations

import re

_FORBIDDEN = re.compile("[\u0000-\u001f\u007f-\u009f\ud800-\uf8ff\ufff0-\uffff]")


def znode_name_problem(name: str) -> str | None:
    """Why `name` cannot be one znode's name, or None if it can."""
    if not name:
        return "must not be empty"
    if "/" in name:
        return f"{name!r} must not contain '/'"
    if name in (".", ".."):
        return f"{name!r} is not a valid name"
    bad = _FORBIDDEN.search(name)
    if bad is not None:
        return f"{name!r}: character U+{ord(bad.group()):04X} is not allowed"
    return None
