"""Kept for callers of the old place; the rule lives in `nodepool_ng.znode_names` (the web app
checks the same names, and nothing outside `cmd` may import `cmd`)."""

from nodepool_ng.znode_names import znode_name_problem

__all__ = ["znode_name_problem"]
