"""`nodepool config-validate`: the same loading path as the daemons, errors as text."""

from __future__ import annotations

import os
from collections.abc import Mapping

from nodepool_ng.config.loader import load_config
from nodepool_ng.config.schema import ConfigErrors
from nodepool_ng.errors import ConfigError


def validate_file(
    path: str | os.PathLike[str],
    secure: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """Human-readable problems with the config (and secure file); empty when valid."""
    try:
        load_config(path, secure, env=env)
    except ConfigErrors as exc:
        return list(exc.errors)
    except ConfigError as exc:
        return [str(exc)]
    return []
