"""The AWS API side every part of the driver shares: boto3 clients, rate limits, error
mapping.

- Credentials, region and endpoints come from the standard AWS configuration (environment,
  `~/.aws/config`, instance profile...) through a `boto3.Session` (the provider's
  `profile-name`, `region-name`); `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_EC2` and friends
  redirect the clients (moto_server in the tests), or pass `endpoint_url`.
- `rate` is API calls per second (upstream aws meaning): mutating EC2 calls wait for a
  token of a `rate`/s limiter, describes/gets/lists for one of `10 * rate`/s (upstream's
  split). EBS block uploads are not limited.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import boto3
import botocore.config
import botocore.exceptions

from nodepool_ng.drivers.aws.config import AwsProviderConfig
from nodepool_ng.drivers.aws.quota import error_code
from nodepool_ng.errors import PermanentCloudError, TemporaryCloudError

R = TypeVar("R")

TEMPORARY_CODES = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException",
                             "InternalError", "InternalFailure", "ServiceUnavailable",
                             "Unavailable", "RequestTimeout", "RequestTimeoutException"})
READ_PREFIXES = ("Describe", "Get", "List")


class RateLimiter:
    """At most `rate` calls per second, spaced evenly; callers sleep for their turn."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            turn = max(now, self._next)
            self._next = turn + self.interval
        if turn > now:
            time.sleep(turn - now)


class AwsApi:
    """The provider's boto3 clients (`ec2`, `ebs`, `quotas`) and the synchronous call
    helpers the other parts use (they run in the adapter's executor or the builder)."""

    def __init__(self, provider: AwsProviderConfig, *, session: boto3.Session | None = None,
                 endpoint_url: str | None = None, max_connections: int = 20,
                 max_attempts: int = 3) -> None:
        self.session = session or boto3.Session(profile_name=provider.profile_name,
                                                region_name=provider.region_name)
        client_config = botocore.config.Config(
            region_name=provider.region_name,
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            max_pool_connections=max_connections,
            connect_timeout=10, read_timeout=60, user_agent_extra="nodepool_ng")
        self.ec2 = self.session.client("ec2", endpoint_url=endpoint_url, config=client_config)
        self.ebs = self.session.client("ebs", endpoint_url=endpoint_url, config=client_config)
        self.quotas = self.session.client("service-quotas", endpoint_url=endpoint_url,
                                          config=client_config)
        self._write_limiter = RateLimiter(provider.rate)
        self._read_limiter = RateLimiter(provider.rate * 10.0)
        self.ec2.meta.events.register("before-call.ec2.*", self._rate_limit)

    def close(self) -> None:
        for client in (self.ec2, self.ebs, self.quotas):
            try:
                client.close()
            except Exception:
                pass

    def _rate_limit(self, model: Any = None, **kwargs: Any) -> None:
        name = getattr(model, "name", "")
        (self._read_limiter if name.startswith(READ_PREFIXES) else self._write_limiter).wait()

    def paginate(self, operation: str, key: str, **kwargs: Any) -> list[Any]:
        """Every item under `key` of an EC2 describe call, over all its pages."""
        client = self.ec2
        out: list[Any] = []
        if client.can_paginate(operation):
            for page in client.get_paginator(operation).paginate(**kwargs):
                out.extend(page.get(key) or [])
        else:
            out.extend(getattr(client, operation)(**kwargs).get(key) or [])
        return out

    def call(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """A synchronous API call with errors mapped onto our exception tree."""
        try:
            return fn(*args, **kwargs)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
            raise cloud_error(e, getattr(fn, "__name__", "API call")) from e

    def ignore_not_found(self, fn: Callable[..., Any], **kwargs: Any) -> None:
        """`call`, where "it does not exist (any more)" counts as done."""
        try:
            fn(**kwargs)
        except botocore.exceptions.ClientError as e:
            if is_gone(e):
                return
            raise cloud_error(e, getattr(fn, "__name__", "API call")) from e
        except botocore.exceptions.BotoCoreError as e:
            raise cloud_error(e, getattr(fn, "__name__", "API call")) from e

    @staticmethod
    def wait_for(read: Callable[[], dict[str, Any]], good: Callable[[Any], bool],
                 bad: Callable[[Any], bool], deadline: float, what: str) -> dict[str, Any]:
        """Re-read (backing off to 5 s) until `good`; TemporaryCloudError when `bad` or
        past `deadline`."""
        delay = 0.2
        while True:
            item = read()
            if good(item):
                return item
            if bad(item):
                raise TemporaryCloudError(f"{what} failed: {item.get('StateReason') or item}")
            if time.monotonic() + delay > deadline:
                raise TemporaryCloudError(f"{what} not ready in time (state "
                                          f"{item.get('State')})")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def cloud_error(e: BaseException, what: str) -> Exception:
    """A boto3 failure as TemporaryCloudError (throttling, 5xx, timeouts) or
    PermanentCloudError."""
    if isinstance(e, botocore.exceptions.ClientError):
        code = error_code(e)
        status = int((e.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
        if code in TEMPORARY_CODES or status >= 500 or status == 429:
            return TemporaryCloudError(f"{what}: {e}")
        return PermanentCloudError(f"{what}: {e}")
    return TemporaryCloudError(f"{what}: {e}")


def is_gone(e: BaseException) -> bool:
    """The error says the resource does not exist (any more)."""
    code = error_code(e)
    return code.endswith("NotFound") or code == "InvalidAMIID.Unavailable"


def tags_dict(tags: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    return {str(t["Key"]): str(t.get("Value") or "") for t in tags or [] if "Key" in t}
