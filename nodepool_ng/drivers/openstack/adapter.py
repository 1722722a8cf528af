"""The OpenStack provider adapter: the driver interface over its collaborating parts.

openstacksdk does the cloud work (clouds.yaml and vendor profiles, `create_server`, floating
IPs, address selection, `create_image`). The parts share one Connection and one bounded
`PriorityExecutor`:

- `servers.OpenStackServers`: the calls the state machines make and the shared server list;
- `lookups.CloudLookups`: flavors, images and networks by name (TTL caches);
- `resources.OpenStackResources`: floating IPs and ports, and which of them leaked;
- `images.OpenStackImages`: the builder's uploads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

import openstack.connection

from nodepool_ng.config.models import ProviderConfig
from nodepool_ng.drivers.base import ImageAdapter, Instance, LaunchSpec, ProviderAdapter, Resource
from nodepool_ng.drivers.cache import LazyListCache
from nodepool_ng.drivers.executor import PriorityExecutor
from nodepool_ng.drivers.openstack.images import OpenStackImages
from nodepool_ng.drivers.openstack.lookups import CloudLookups
from nodepool_ng.drivers.openstack.quota import flavor_quota, limits_quota
from nodepool_ng.drivers.openstack.resources import OpenStackResources
from nodepool_ng.drivers.openstack.sdk import (
    call,
    load_cloud_region,
    remember_service_lookups,
    skip_per_call_env_lookups,
)
from nodepool_ng.drivers.openstack.servers import RECONCILE_INTERVAL, OpenStackServers
from nodepool_ng.drivers.openstack.statemachine import (
    OpenStackCreateStateMachine,
    OpenStackDeleteStateMachine,
)
from nodepool_ng.drivers.statemachine import Log
from nodepool_ng.errors import TemporaryCloudError
from nodepool_ng.launcher.health import Backoff
from nodepool_ng.model.quota import Quota


class OpenStackAdapter:
    def __init__(
        self,
        provider: ProviderConfig,
        *,
        clouds_yaml: str | None = None,
        executor_workers: int = 10,
        poll_interval: float = 1.0,
        flavor_cache_ttl: float = 300.0,
        delete_timeout: float = 600.0,
        server_reconcile_interval: float = RECONCILE_INTERVAL,
    ) -> None:
        self.provider = provider
        self.poll_interval = poll_interval
        self.delete_timeout = delete_timeout
        self.cloud_region = load_cloud_region(provider.cloud, provider.region_name, clouds_yaml)
        # rate is seconds between calls; openstacksdk wants calls per second
        rate_limit = 1.0 / provider.rate if provider.rate and provider.rate > 0 else None
        self.conn = openstack.connection.Connection(
            config=self.cloud_region, rate_limit=rate_limit, app_name="nodepool_ng")
        skip_per_call_env_lookups(self.conn.session)
        remember_service_lookups(self.conn)
        self._executor = PriorityExecutor(executor_workers, f"openstack-{provider.name}")
        self.lookups = CloudLookups(self.conn, flavor_cache_ttl)
        self.compute = OpenStackServers(
            self.conn, provider.cloud, self.cloud_region.region_name or None, self.lookups,
            self._executor, poll_interval, provider.name,
            reconcile_interval=server_reconcile_interval)
        self.images = OpenStackImages(self.conn, self.cloud_region)
        # What leak cleanup the provider asks for (stand-ins for the provider in tests may
        # have neither: no cleanup then).
        self.resources = OpenStackResources(
            self.conn, self.images,
            clean_floating_ips=bool(getattr(provider, "clean_floating_ips", False)),
            port_cleanup_interval=float(getattr(provider, "port_cleanup_interval", 0)),
            live_servers=self.compute.list_instances)
        self._limits_lock = threading.Lock()
        self._limits_retry = Backoff(1.0, 60.0)

    @property
    def servers(self) -> LazyListCache[dict[str, Any]]:
        """The shared server list the state machines poll."""
        return self.compute.servers

    # ProviderAdapter ----------------------------------------------------------------------

    def get_create_state_machine(self, spec: LaunchSpec, log: Log) -> OpenStackCreateStateMachine:
        return OpenStackCreateStateMachine(self.compute, spec, log,
                                           float(self.provider.launch_timeout))

    def get_delete_state_machine(self, external_id: str, log: Log) -> OpenStackDeleteStateMachine:
        return OpenStackDeleteStateMachine(self.compute, external_id, log, self.delete_timeout)

    def list_instances(self) -> list[Instance]:
        return self.compute.list_instances()

    def get_quota_limits(self) -> Quota:
        """The cloud's limits. After a failure the call backs off (with jitter) and raises
        at once meanwhile: every pool re-reads quota, and a dead cloud need not hear it."""
        with self._limits_lock:
            if not self._limits_retry.ready():
                raise TemporaryCloudError(
                    f"compute limits: not asked again yet after "
                    f"{self._limits_retry.failures} failures")
        try:
            limits = call(self.conn.get_compute_limits)
        except Exception:
            with self._limits_lock:
                self._limits_retry.failed()
            raise
        with self._limits_lock:
            self._limits_retry.succeeded()
        return limits_quota(limits)

    def probe(self) -> None:
        """One cheap call to see whether the cloud answers (the launcher's health probe):
        a server listing, sent even while failed listings back off."""
        self.servers.get(max_age=0.0, retry_now=True)

    def get_quota_for_label(self, spec: LaunchSpec) -> Quota:
        flavor = self.lookups.find_flavor(spec)
        return flavor_quota(flavor, boot_from_volume=spec.boot_from_volume,
                            volume_size=spec.volume_size)

    def list_resources(self) -> list[Resource]:
        return self.resources.list_resources()

    def leak_candidates(self) -> list[Resource]:
        return self.resources.leak_candidates()

    def delete_resource(self, resource: Resource) -> None:
        self.resources.delete_resource(resource)

    def get_console_log(self, external_id: str) -> str:
        return str(call(self.conn.get_server_console, external_id) or "")

    def set_progress_listener(self, listener: Callable[[], None] | None) -> None:
        self._executor.listener = listener

    def stop(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.conn.close()

    # ImageAdapter (builder) ---------------------------------------------------------------

    @property
    def image_format(self) -> str:
        return self.images.image_format

    def upload_image(self, name: str, filename: str, disk_format: str | None,
                     metadata: Mapping[str, str], timeout: float,
                     md5: str | None = None, sha256: str | None = None) -> str:
        return self.images.upload_image(name, filename, disk_format, metadata, timeout,
                                        md5=md5, sha256=sha256)

    def delete_image(self, external_id: str) -> None:
        self.images.delete_image(external_id)

    def list_images(self) -> list[Resource]:
        return self.images.list_images()


if TYPE_CHECKING:  # mypy proves the adapter satisfies the driver interfaces
    _check_adapter: ProviderAdapter = cast(OpenStackAdapter, None)
    _check_image: ImageAdapter = cast(OpenStackAdapter, None)
