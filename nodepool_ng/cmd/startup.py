"""Checks a daemon runs before it detaches, so the operator sees why it cannot work.

Each returns one line (`<file>: <field>: <message>`) or None; the caller prints it and exits 1.
"""

from __future__ import annotations

import os

from nodepool_ng.config.checks import check_zookeeper_user
from nodepool_ng.config.models import Config


def config_problem(config: Config, config_path: str) -> str | None:
    """The first thing a loaded config lacks for a daemon (zookeeper-servers)."""
    for field, message in check_zookeeper_user(config):
        return f"{config_path}: {field}: {message}"
    return None


def clouds_yaml_problem(clouds_yaml: str | None) -> str | None:
    """An explicit --clouds-yaml replaces openstacksdk's search: it must be readable."""
    if clouds_yaml is None:
        return None
    if not os.path.isfile(clouds_yaml):
        return f"--clouds-yaml {clouds_yaml}: no such file"
    if not os.access(clouds_yaml, os.R_OK):
        return f"--clouds-yaml {clouds_yaml}: not readable"
    return None
