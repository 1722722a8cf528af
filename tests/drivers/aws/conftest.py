"""Fixtures of the AWS driver tests: one moto_server and fault proxy per test process, reset
before every test (see tests/fixtures/moto.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.moto import AwsCloud, FaultProxy, MotoServer, moto_behind_proxy


@pytest.fixture(scope="session")
def _moto_and_proxy() -> Iterator[tuple[MotoServer, FaultProxy]]:
    with moto_behind_proxy() as servers:
        yield servers


@pytest.fixture
def aws(_moto_and_proxy: tuple[MotoServer, FaultProxy],
        monkeypatch: pytest.MonkeyPatch) -> AwsCloud:
    """An empty moto cloud; the standard AWS settings point at the fault proxy before it."""
    cloud = AwsCloud(*_moto_and_proxy)
    cloud.reset()
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for key, value in cloud.env.items():
        monkeypatch.setenv(key, value)
    return cloud
