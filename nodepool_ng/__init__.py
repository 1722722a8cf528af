"""nodepool_ng: an elastic node-pool daemon for CI systems, wire-compatible with Nodepool."""

__version__ = "0.1.0"
