"""The AWS EC2 provider adapter: the driver interface over its collaborating parts.

- `api.AwsApi`: boto3 clients (credentials, region and endpoints from the standard AWS
  configuration or `endpoint_url`), `rate` limits, error mapping.
- `instances.AwsInstances`: RunInstances / TerminateInstances and the shared, TTL-cached
  DescribeInstances the state machines poll.
- `limits.AwsQuotas`: instance-type costs, the account's vCPU limits (Service Quotas).
- `resources.AwsResources`: volumes, snapshots, leak candidates.
- `images.AwsImages`: the builder's uploads (EBS snapshot -> AMI) and deletes.

Slow calls of the state machines run in one bounded `PriorityExecutor`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar, cast

import boto3

from nodepool_ng.drivers.aws.api import AwsApi
from nodepool_ng.drivers.aws.config import AwsProviderConfig
from nodepool_ng.drivers.aws.images import AwsImages
from nodepool_ng.drivers.aws.instances import AwsInstances
from nodepool_ng.drivers.aws.limits import AwsQuotas
from nodepool_ng.drivers.aws.resources import AwsResources
from nodepool_ng.drivers.aws.statemachine import (
    AwsCloud,
    AwsCreateStateMachine,
    AwsDeleteStateMachine,
)
from nodepool_ng.drivers.base import ImageAdapter, Instance, LaunchSpec, ProviderAdapter, Resource
from nodepool_ng.drivers.cache import LazyListCache
from nodepool_ng.drivers.executor import Priority, PriorityExecutor
from nodepool_ng.drivers.statemachine import Log
from nodepool_ng.errors import PermanentCloudError
from nodepool_ng.model.quota import Quota

R = TypeVar("R")


class AwsAdapter:
    def __init__(
        self,
        provider: AwsProviderConfig,
        *,
        session: boto3.Session | None = None,
        endpoint_url: str | None = None,
        executor_workers: int = 10,
        poll_interval: float = 2.0,
        delete_timeout: float = 600.0,
        cache_ttl: float = 300.0,
        quota_ttl: float = 300.0,
        max_attempts: int = 3,
        upload_workers: int = 8,
    ) -> None:
        self.provider = provider
        self.poll_interval = poll_interval
        self.delete_timeout = delete_timeout
        self.api = AwsApi(provider, session=session, endpoint_url=endpoint_url,
                          max_connections=executor_workers + upload_workers + 2,
                          max_attempts=max_attempts)
        self._executor = PriorityExecutor(executor_workers, f"aws-{provider.name}")
        self.quotas = AwsQuotas(self.api, provider, quota_ttl)
        self.ec2_instances = AwsInstances(self.api, provider, self.quotas,
                                          self._executor.at(Priority.POLL), poll_interval,
                                          cache_ttl)
        self.images = AwsImages(self.api, provider, upload_workers)
        self.resources = AwsResources(self.api, provider, self.images)

    @property
    def instances(self) -> LazyListCache[dict[str, dict[str, Any]]]:
        """The shared instance list the state machines poll."""
        return self.ec2_instances.cache

    # ProviderAdapter ----------------------------------------------------------------------

    def get_create_state_machine(self, spec: LaunchSpec, log: Log) -> AwsCreateStateMachine:
        return AwsCreateStateMachine(self, spec, log, float(self.provider.launch_timeout))

    def get_delete_state_machine(self, external_id: str, log: Log) -> AwsDeleteStateMachine:
        return AwsDeleteStateMachine(self, external_id, log, self.delete_timeout)

    def list_instances(self) -> list[Instance]:
        return self.ec2_instances.list_instances()

    def probe(self) -> None:
        """One cheap call to see whether the cloud answers (the launcher's health probe)."""
        self.instances.get(max_age=0.0, retry_now=True)

    def get_quota_limits(self) -> Quota:
        return self.quotas.get_quota_limits()

    def get_quota_for_label(self, spec: LaunchSpec) -> Quota:
        return self.quotas.get_quota_for_label(spec)

    def list_resources(self) -> list[Resource]:
        return self.resources.list_resources()

    def leak_candidates(self) -> list[Resource]:
        return self.resources.leak_candidates()

    def delete_resource(self, resource: Resource) -> None:
        self.resources.delete_resource(resource)

    def get_console_log(self, external_id: str) -> str:
        """The instance's console (GetConsoleOutput, base64-decoded); "" when there is none."""
        try:
            answer = self.api.call(self.api.ec2.get_console_output, InstanceId=external_id)
        except PermanentCloudError:
            return ""
        output = answer.get("Output") or ""
        try:
            return base64.b64decode(output, validate=True).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            return str(output)  # some EC2 look-alikes (moto) answer in plain text

    def set_progress_listener(self, listener: Callable[[], None] | None) -> None:
        self._executor.listener = listener

    def stop(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.api.close()

    # ImageAdapter (builder) ---------------------------------------------------------------

    @property
    def image_format(self) -> str:
        return "raw"

    def upload_image(self, name: str, filename: str, disk_format: str | None,
                     metadata: Mapping[str, str], timeout: float,
                     md5: str | None = None, sha256: str | None = None,
                     diskimage: str | None = None) -> str:
        return self.images.upload_image(name, filename, disk_format, metadata, timeout,
                                        md5=md5, sha256=sha256, diskimage=diskimage)

    def delete_image(self, external_id: str) -> None:
        self.images.delete_image(external_id)

    def list_images(self) -> list[Resource]:
        return self.images.list_images()

    # AwsCloud: what the state machines call (in the executor) -----------------------------

    def submit(self, fn: Callable[..., R], *args: Any,
               priority: Priority = Priority.START) -> Future[R]:
        return self._executor.submit(fn, *args, priority=priority)

    def create_instance(self, spec: LaunchSpec) -> dict[str, Any]:
        return self.ec2_instances.create_instance(spec)

    def terminate_instance(self, external_id: str) -> tuple[bool, str | None]:
        return self.ec2_instances.terminate_instance(external_id)

    def delete_leftover_volumes(self, node_id: str) -> list[str]:
        return self.resources.delete_leftover_volumes(node_id)

    def instance_from_raw(self, raw: Mapping[str, Any], pool_name: str | None = None) -> Instance:
        return self.ec2_instances.instance_from_raw(raw, pool_name)


if TYPE_CHECKING:  # mypy proves the adapter satisfies the driver interfaces
    _check_adapter: ProviderAdapter = cast(AwsAdapter, None)
    _check_image: ImageAdapter = cast(AwsAdapter, None)
    _check_cloud: AwsCloud = cast(AwsAdapter, None)
