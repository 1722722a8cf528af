"""The console scripts: `nodepool`, `nodepool-launcher`, `nodepool-builder`,
`nodepool-simcloud`."""

from __future__ import annotations

import argparse

from nodepool_ng import __version__


def add_version_option(parser: argparse.ArgumentParser) -> None:
    """`--version`: prints `nodepool_ng <version>` and exits (every console script)."""
    parser.add_argument("--version", action="version", version=f"nodepool_ng {__version__}")
