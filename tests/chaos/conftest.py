"""The `chaos` marker (registered here: pyproject.toml is the lead's): `pytest -m chaos` runs
the chaos test alone."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "chaos: the launcher chaos test (kills launchers and ZooKeeper members; "
        "about 3 minutes; run alone with pytest -m chaos)")
