"""Process runtime: the `Worker` thread primitive and signal helpers."""

from nodepool_ng.runtime.loop import Worker
from nodepool_ng.runtime.signals import dump_threads, install_signal_handlers

__all__ = ["Worker", "dump_threads", "install_signal_handlers"]
