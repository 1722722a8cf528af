"""Fuzzing the launcher's input: random request and node znodes (names and JSON) written
beside good requests. No worker pass may raise, and the good requests are still served.

One launcher (real ZooKeeper, simcloud) serves every example; each example writes its
random znodes, then a good request, and waits for it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kazoo.client import KazooClient

from nodepool_ng.model.node import NODE_KEYS
from nodepool_ng.model.request import REQUEST_KEYS
from tests.launcher import harness as h
from tests.launcher.env import Env

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=False),
    st.text(max_size=12), st.sampled_from(["small", "p1", "main", "ready", "requested",
                                           "building", "in-use", "used", "deleting", "hold"]),
)
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=8,
)


def _record(keys: tuple[str, ...], plausible: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Mostly-plausible records with a few fields replaced by anything; sometimes not even a
    JSON object, or not JSON at all."""
    fields = st.dictionaries(st.sampled_from((*keys, "zuul_extra")), _json, max_size=4)
    objects = fields.map(lambda f: json.dumps({**plausible, **f}).encode())
    return st.one_of(objects, objects, objects, _json.map(lambda v: json.dumps(v).encode()),
                     st.binary(max_size=16))


_names = st.one_of(st.from_regex(r"[0-9a-z\-]{1,16}", fullmatch=True),
                   st.from_regex(r"[0-9]{3}-[0-9]{10}", fullmatch=True))
_requests = st.lists(st.tuples(_names, _record(REQUEST_KEYS, {
    "state": "requested", "node_types": ["small"], "requestor": "fuzz"})), max_size=4)
_nodes = st.lists(st.tuples(_names, _record(NODE_KEYS, {
    "state": "ready", "provider": "p1", "pool": "main", "type": ["small"]})), max_size=4)


class _Errors(logging.Handler):
    """Collects ERROR records with a traceback: an exception escaped somewhere."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


@pytest.fixture
def errors() -> Iterator[_Errors]:
    handler = _Errors()
    logger = logging.getLogger("nodepool_ng")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


# The launcher's own threads use `random` (availability zones, jitter) while examples run.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(requests=_requests, nodes=_nodes)
def test_random_znodes_never_break_a_pass_and_good_requests_are_served(
    launcher_env: Env, kazoo_client: KazooClient, errors: _Errors,
    requests: list[tuple[str, bytes]], nodes: list[tuple[str, bytes]],
) -> None:
    kz = kazoo_client
    for name, raw in requests:
        kz.create(f"/nodepool/requests/{name}", raw, makepath=True, sequence=True)
    for name, raw in nodes:
        kz.create(f"/nodepool/nodes/{name}", raw, makepath=True, sequence=True)
    rid = h.submit_request(kz, ["small"])
    req = h.wait_request(kz, rid, timeout=30)
    assert req["state"] == "fulfilled", req
    h.accept_and_use(kz, rid)
    assert not errors.records, [r.getMessage() for r in errors.records]


@pytest.fixture
def launcher_env(env: Env) -> Env:
    env.clouds([{"name": "cloud1"}])
    env.start([h.provider("p1", "cloud1", **{"max-servers": 50})])
    return env
