"""Flavor choice, quota arithmetic, error classification and the shared list cache."""

from __future__ import annotations

import json
import math
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from openstack import exceptions as os_exc
from openstack.compute.v2.limits import AbsoluteLimits

from nodepool_ng.drivers.cache import LazyListCache, TTLMemo
from nodepool_ng.drivers.openstack.quota import (
    FlavorInfo,
    classify_create_error,
    classify_fault,
    flavor_quota,
    limits_quota,
    select_flavor,
)
from nodepool_ng.errors import LaunchError, QuotaExceeded

FLAVORS = [
    FlavorInfo("1", "m1.small", 1, 2048),
    FlavorInfo("2", "m1.medium", 2, 4096),
    FlavorInfo("3", "m1.large", 4, 8192),
    FlavorInfo("4", "gpu.medium", 2, 4096),
    FlavorInfo("5", "m1.tiny", 1, 512),
]


@pytest.mark.parametrize(
    ("flavor_name", "min_ram", "expected"),
    [
        ("m1.medium", None, "m1.medium"),
        ("2", None, "m1.medium"),  # by id
        (None, 3000, "m1.medium"),  # smallest with enough RAM
        (None, 512, "m1.tiny"),
        ("gpu", 3000, "gpu.medium"),  # name containing flavor-name
        ("m1", 5000, "m1.large"),
    ],
)
def test_select_flavor(flavor_name: str | None, min_ram: int | None, expected: str) -> None:
    assert select_flavor(FLAVORS, flavor_name, min_ram).name == expected


def test_select_flavor_errors_name_the_label() -> None:
    with pytest.raises(LaunchError, match="label big: no flavor matches min-ram 99999"):
        select_flavor(FLAVORS, None, 99999, label="big")
    with pytest.raises(LaunchError, match=re.escape("flavor-name 'm1.huge'")):
        select_flavor(FLAVORS, "m1.huge", None, label="x")
    with pytest.raises(LaunchError, match="neither flavor-name nor min-ram"):
        select_flavor(FLAVORS, None, None, label="x")


def test_flavor_quota() -> None:
    q = flavor_quota(FLAVORS[1])
    assert q.as_dict() == {"cores": 2, "instances": 1, "ram": 4096}
    q = flavor_quota({"vcpus": 4, "ram": 100}, boot_from_volume=True, volume_size=20)
    assert q.as_dict() == {"cores": 4, "instances": 1, "ram": 100, "volumes": 1,
                           "volume-gb": 20}


def test_limits_minus_one_is_unlimited() -> None:
    limits = AbsoluteLimits(maxTotalCores=-1, maxTotalInstances=10, maxTotalRAMSize=51200)
    q = limits_quota(limits)
    assert math.isinf(q.get("cores"))
    assert q.get("instances") == 10
    assert q.get("ram") == 51200


def _http_error(status: int, details: str) -> os_exc.HttpException:
    response = requests.Response()
    response.status_code = status
    response.headers["Content-Type"] = "application/json"
    response._content = json.dumps({"forbidden": {"message": details, "code": status}}).encode()
    response.url = "http://127.0.0.1/compute/v2.1/servers"
    try:
        os_exc.raise_from_response(response)  # what openstacksdk raises for this answer
    except os_exc.HttpException as e:
        return e
    raise AssertionError("not raised")


def test_quota_recognised_by_status_first() -> None:
    assert isinstance(classify_create_error(_http_error(403, "Quota exceeded for cores"), "s"),
                      QuotaExceeded)
    # a 403 without the word quota is still a quota refusal for server create
    assert isinstance(classify_create_error(_http_error(413, "over limit"), "s"), QuotaExceeded)
    # ...but not when the cloud says it is about policy
    err = classify_create_error(_http_error(403, "Policy doesn't allow this"), "s")
    assert type(err) is LaunchError
    # a 400 mentioning quota is not a quota refusal: the status wins
    assert type(classify_create_error(_http_error(400, "bad quota arg"), "s")) is LaunchError
    # no status: text is the last resort
    assert isinstance(classify_create_error(os_exc.SDKException("Quota exceeded"), "s"),
                      QuotaExceeded)
    assert type(classify_create_error(os_exc.SDKException("no such image"), "s")) is LaunchError


def test_classify_fault() -> None:
    err = classify_fault({"message": "No valid host was found", "code": 500}, "server x")
    assert type(err) is LaunchError and "No valid host was found" in str(err)
    err = classify_fault({"message": "Maximum number of ports exceeded", "code": 500}, "x")
    assert isinstance(err, QuotaExceeded)
    assert type(classify_fault(None, "x")) is LaunchError


def test_lazy_list_cache_shares_one_fetch() -> None:
    calls = []
    gate = threading.Event()

    def fetch() -> list[int]:
        calls.append(1)
        gate.wait(5)
        return [len(calls)]

    with ThreadPoolExecutor(4) as ex:
        cache: LazyListCache[list[int]] = LazyListCache(fetch, ex, ttl=60)
        assert all(cache.peek() is None for _ in range(50))  # one refresh in flight
        gate.set()
        assert cache.get() == [1]
        assert cache.peek() is not None
        assert len(calls) == 1
        snap = cache.peek()
        assert snap is not None
        assert cache.peek(newer_than=snap.started + 1) is None  # not newer: still cached
        assert len(calls) == 1


def test_lazy_list_cache_refreshes_after_ttl_and_survives_errors() -> None:
    results: list[object] = [RuntimeError("cloud down"), [2]]

    def fetch() -> list[int]:
        item = results.pop(0)
        if isinstance(item, Exception):
            raise item
        return item  # type: ignore[return-value]

    with ThreadPoolExecutor(2) as ex:
        cache: LazyListCache[list[int]] = LazyListCache(fetch, ex, ttl=0.0)
        with pytest.raises(RuntimeError):
            cache.get()
        assert isinstance(cache.last_error, RuntimeError)
        assert cache.get() == [2]
        assert cache.last_error is None


def test_ttl_memo_caches_values_not_errors() -> None:
    memo: TTLMemo[str, int] = TTLMemo(ttl=60)
    calls = []

    def compute() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("flaky")
        return 7

    with pytest.raises(RuntimeError):
        memo.get("k", compute)
    assert memo.get("k", compute) == 7
    assert memo.get("k", compute) == 7
    assert len(calls) == 2


def test_ttl_memo_concurrent_misses_share_one_lookup() -> None:
    memo: TTLMemo[str, int] = TTLMemo(ttl=60)
    calls: list[int] = []
    release = threading.Event()

    def slow_lookup() -> int:
        calls.append(1)
        release.wait(10)
        return 42

    with ThreadPoolExecutor(5) as ex:
        futures = [ex.submit(memo.get, "image", slow_lookup) for _ in range(5)]
        deadline = time.monotonic() + 10
        while not calls and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # let the other four reach the memo while the lookup runs
        release.set()
        assert [f.result(10) for f in futures] == [42] * 5
    assert len(calls) == 1


def test_ttl_memo_shares_a_failure_then_retries() -> None:
    memo: TTLMemo[str, int] = TTLMemo(ttl=60)
    outcomes: list[Exception | int] = [RuntimeError("cloud down"), 3]
    with pytest.raises(RuntimeError, match="cloud down"):
        memo.get("k", lambda: _pop(outcomes))
    assert memo.get("k", lambda: _pop(outcomes)) == 3


def _pop(items: list[Exception | int]) -> int:
    item = items.pop(0)
    if isinstance(item, Exception):
        raise item
    return item
