"""The AWS EC2 provider adapter: boto3 clients, a bounded API executor, shared caches.

- Credentials, region and endpoints come from the standard AWS configuration (environment,
  `~/.aws/config`, instance profile...) through a `boto3.Session` (the provider's
  `profile-name`, `region-name`); `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_EC2` and friends
  redirect the clients (moto_server in the tests), or pass `endpoint_url`.
- `rate` is API calls per second (upstream aws meaning): mutating EC2 calls wait for a
  token of a `rate`/s limiter, describes/gets/lists for one of `10 * rate`/s (upstream's
  split). EBS block uploads are not limited.
- One paginated DescribeInstances, shared by every state machine, refreshed in the executor
  at most once per `poll_interval` (`LazyListCache`, with backoff after failures).
- Instance types (vCPUs, cores, RAM) are remembered for good; image lookups (filters, root
  device) for `cache_ttl`; the vCPU quotas for `quota_ttl`.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
import time
import uuid
from collections.abc import Callable, Container, Iterable, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar, cast

import boto3
import botocore.config
import botocore.exceptions

from nodepool_ng.drivers.aws.config import (
    AwsLabelConfig,
    AwsPoolConfig,
    AwsProviderConfig,
    AwsProviderDiskImageConfig,
)
from nodepool_ng.drivers.aws.ebs import tag_list, upload_snapshot
from nodepool_ng.drivers.aws.quota import ON_DEMAND, SPOT, InstanceTypeInfo, error_code, quota_code
from nodepool_ng.drivers.aws.statemachine import (
    AwsCreateStateMachine,
    AwsDeleteStateMachine,
    Log,
)
from nodepool_ng.drivers.base import (
    META_BUILD_ID,
    META_NODE_ID,
    META_POOL_NAME,
    META_PROVIDER_NAME,
    META_UPLOAD_ID,
    ImageAdapter,
    Instance,
    LaunchSpec,
    QuotaReportingAdapter,
    Resource,
)
from nodepool_ng.drivers.executor import Priority, PriorityExecutor
from nodepool_ng.drivers.openstack.cache import LazyListCache, TTLMemo
from nodepool_ng.errors import LaunchError, PermanentCloudError, TemporaryCloudError
from nodepool_ng.model.quota import Quota

R = TypeVar("R")
log = logging.getLogger(__name__)

STATUS_MAP = {"pending": "building", "running": "ready", "shutting-down": "deleting",
              "terminated": "deleting", "stopping": "error", "stopped": "error"}
TEMPORARY_CODES = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException",
                             "InternalError", "InternalFailure", "ServiceUnavailable",
                             "Unavailable", "RequestTimeout", "RequestTimeoutException"})
READ_PREFIXES = ("Describe", "Get", "List")
ROOT_DEVICE = "/dev/sda1"


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
        self.quota_ttl = quota_ttl
        self.upload_workers = upload_workers
        self.session = session or boto3.Session(profile_name=provider.profile_name,
                                                region_name=provider.region_name)
        client_config = botocore.config.Config(
            region_name=provider.region_name,
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            max_pool_connections=executor_workers + upload_workers + 2,
            connect_timeout=10, read_timeout=60, user_agent_extra="nodepool_ng")
        self.ec2 = self.session.client("ec2", endpoint_url=endpoint_url, config=client_config)
        self.ebs = self.session.client("ebs", endpoint_url=endpoint_url, config=client_config)
        self.quotas = self.session.client("service-quotas", endpoint_url=endpoint_url,
                                          config=client_config)
        self._write_limiter = RateLimiter(provider.rate)
        self._read_limiter = RateLimiter(provider.rate * 10.0)
        self.ec2.meta.events.register("before-call.ec2.*", self._rate_limit)
        self._executor = PriorityExecutor(executor_workers, f"aws-{provider.name}")
        self.instances: LazyListCache[dict[str, dict[str, Any]]] = LazyListCache(
            self._fetch_instances, self._executor.at(Priority.POLL), poll_interval,
            name=f"{provider.name} instances")
        self._types: dict[str, InstanceTypeInfo] = {}
        self._types_lock = threading.Lock()
        self._images: TTLMemo[Any, Any] = TTLMemo(cache_ttl)
        self._quota_lock = threading.Lock()
        self._quota_values: dict[str, float] | None = None
        self._quota_read_at = float("-inf")
        self._quota_unavailable_logged = False

    # ProviderAdapter ----------------------------------------------------------------------

    def get_create_state_machine(self, spec: LaunchSpec, log: Log) -> AwsCreateStateMachine:
        return AwsCreateStateMachine(self, spec, log, float(self.provider.launch_timeout))

    def get_delete_state_machine(self, external_id: str, log: Log) -> AwsDeleteStateMachine:
        return AwsDeleteStateMachine(self, external_id, log, self.delete_timeout)

    def list_instances(self) -> list[Instance]:
        """Every instance but terminated ones, with its tags as metadata."""
        return [self.instance_from_raw(raw) for raw in self.instances.get().values()
                if (raw.get("State") or {}).get("Name") != "terminated"]

    def probe(self) -> None:
        """One cheap call to see whether the cloud answers (the launcher's health probe)."""
        self.instances.get(max_age=0.0, retry_now=True)

    def get_quota_limits(self) -> Quota:
        """The account's vCPU limits (Service Quotas) for the quota codes of this provider's
        labels; cores, instances and ram are unlimited (EC2 counts vCPUs). When Service
        Quotas does not answer, there is no cloud quota (the configured limits apply)."""
        values = self._ec2_quotas()
        limits: dict[str, float | None] = {}
        if values is not None:
            for code in self._label_quota_codes():
                if code in values:
                    limits[code] = values[code]
        return Quota.limits(**limits)

    def get_unmanaged_quota_used(self, known_node_ids: Container[str] | None = None) -> Quota:
        """What instances this provider does not manage use: other owners' instances, and
        ours whose node id is not in `known_node_ids` (leaked) when that is given."""
        used = []
        for inst in self.list_instances():
            ours = inst.provider_name == self.provider.name
            if ours and (known_node_ids is None or inst.node_id in known_node_ids):
                continue
            if inst.resources is not None:
                used.append(inst.resources)
        return Quota.total(used)

    def get_available_quota(self, known_node_ids: Container[str] | None = None) -> Quota:
        return self.get_quota_limits().headroom(self.get_unmanaged_quota_used(known_node_ids))

    def get_quota_for_label(self, spec: LaunchSpec) -> Quota:
        label = self.provider.label(spec.pool_name, spec.label_name)
        info = self._call(self.instance_type_info, label.instance_type)
        return info.quota(SPOT if label.use_spot else ON_DEMAND)

    def list_resources(self) -> list[Resource]:
        """For leak cleanup: this provider's unattached volumes (kind "volume"), our AMIs
        ("image") and the snapshots of our uploads ("snapshot"), with their tags."""
        out: list[Resource] = []
        volumes = self._paginate("describe_volumes", "Volumes", Filters=[
            {"Name": "tag:" + META_PROVIDER_NAME, "Values": [self.provider.name]},
            {"Name": "status", "Values": ["available"]}])
        for vol in volumes:
            out.append(Resource("volume", str(vol["VolumeId"]), tags_dict(vol.get("Tags")),
                                status=vol.get("State")))
        out.extend(self.list_images())
        snapshots = self._paginate("describe_snapshots", "Snapshots", OwnerIds=["self"],
                                   Filters=[{"Name": "tag-key",
                                             "Values": [META_BUILD_ID, META_UPLOAD_ID]}])
        for snap in snapshots:
            out.append(Resource("snapshot", str(snap["SnapshotId"]),
                                tags_dict(snap.get("Tags")), status=snap.get("State")))
        return out

    def delete_resource(self, resource: Resource) -> None:
        if resource.kind == "volume":
            self._ignore_not_found(self.ec2.delete_volume, VolumeId=resource.external_id)
        elif resource.kind == "snapshot":
            self._ignore_not_found(self.ec2.delete_snapshot, SnapshotId=resource.external_id)
        elif resource.kind == "image":
            self.delete_image(resource.external_id)
        else:
            raise PermanentCloudError(f"unknown resource kind {resource.kind!r}")

    def get_console_log(self, external_id: str) -> str:
        """The instance's console (GetConsoleOutput, base64-decoded); "" when there is none."""
        try:
            answer = self._call(self.ec2.get_console_output, InstanceId=external_id)
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
        for client in (self.ec2, self.ebs, self.quotas):
            try:
                client.close()
            except Exception:
                pass

    # Images (builder) ---------------------------------------------------------------------

    @property
    def image_format(self) -> str:
        return "raw"

    def upload_image(self, name: str, filename: str, disk_format: str | None,
                     metadata: Mapping[str, str], timeout: float,
                     md5: str | None = None, sha256: str | None = None,
                     diskimage: str | None = None) -> str:
        """Raw image -> EBS snapshot (EBS direct APIs) -> AMI; returns the AMI id.

        Tags from `metadata` (nodepool_build_id, nodepool_upload_id, ...) go on both. The
        provider diskimage `diskimage` (when given) sets architecture, ENA, the root volume
        type/size/iops/throughput, IMDS support and extra tags. One attempt: on failure the
        snapshot made so far is deleted and TemporaryCloudError (or PermanentCloudError)
        raised."""
        if disk_format not in (None, "raw"):
            raise PermanentCloudError(
                f"uploading image {name}: AWS takes raw images (EBS direct), not {disk_format}")
        pdi = self.provider.diskimage(diskimage) if diskimage else None
        pdi = pdi or AwsProviderDiskImageConfig(name=diskimage or name)
        deadline = time.monotonic() + timeout
        tags = {**pdi.tags, **{str(k): str(v) for k, v in metadata.items()}, "Name": name}
        made: list[str] = []
        try:
            snapshot_id, blocks = upload_snapshot(
                self.ebs, filename, tags=tags, description=f"nodepool image {name}",
                deadline=deadline, workers=self.upload_workers, volume_size=pdi.volume_size,
                on_started=made.append)
            log.debug("image %s: wrote %s blocks into snapshot %s", name, blocks, snapshot_id)
            snap = self._wait_for(
                lambda: self.ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0],
                lambda s: s.get("State") == "completed", lambda s: s.get("State") == "error",
                deadline, f"snapshot {snapshot_id}")
            ebs: dict[str, Any] = {"SnapshotId": snapshot_id, "DeleteOnTermination": True,
                                   "VolumeType": pdi.volume_type,
                                   "VolumeSize": int(snap.get("VolumeSize") or 1)}
            if pdi.iops:
                ebs["Iops"] = pdi.iops
            if pdi.throughput:
                ebs["Throughput"] = pdi.throughput
            args: dict[str, Any] = dict(
                Name=name, Description=f"nodepool image {name}",
                Architecture=pdi.architecture, EnaSupport=pdi.ena_support,
                RootDeviceName=ROOT_DEVICE, VirtualizationType="hvm",
                BlockDeviceMappings=[{"DeviceName": ROOT_DEVICE, "Ebs": ebs}],
                TagSpecifications=[{"ResourceType": "image", "Tags": tag_list(tags)}])
            if pdi.imds_support:
                args["ImdsSupport"] = pdi.imds_support
            ami_id = str(self.ec2.register_image(**args)["ImageId"])
            made.append(ami_id)
            # Some EC2 look-alikes ignore TagSpecifications on RegisterImage (moto): tag
            # again; on AWS this changes nothing.
            self.ec2.create_tags(Resources=[ami_id], Tags=tag_list(tags))
            self._wait_for(
                lambda: (self.ec2.describe_images(ImageIds=[ami_id])["Images"] or [{}])[0],
                lambda i: i.get("State") == "available",
                lambda i: i.get("State") in ("failed", "error", "invalid"),
                deadline, f"image {ami_id}")
        except Exception as e:
            self._undo_upload(made)
            if isinstance(e, TemporaryCloudError | PermanentCloudError):
                raise
            raise self._cloud_error(e, f"uploading image {name}") from e
        return ami_id

    def delete_image(self, external_id: str) -> None:
        """Deregister the AMI, then delete its snapshots: those its block device mappings
        name, and those tagged with the same upload (nodepool_build_id/upload_id)."""
        try:
            images = self.ec2.describe_images(ImageIds=[external_id])["Images"]
        except botocore.exceptions.ClientError as e:
            if is_gone(e) or error_code(e).startswith("InvalidAMIID"):
                return
            raise self._cloud_error(e, f"deleting image {external_id}") from e
        except botocore.exceptions.BotoCoreError as e:
            raise self._cloud_error(e, f"deleting image {external_id}") from e
        snapshots: set[str] = set()
        for image in images:
            for bdm in image.get("BlockDeviceMappings") or []:
                snap = (bdm.get("Ebs") or {}).get("SnapshotId")
                if snap:
                    snapshots.add(str(snap))
            tags = tags_dict(image.get("Tags"))
            filters = [{"Name": f"tag:{key}", "Values": [tags[key]]}
                       for key in (META_BUILD_ID, META_UPLOAD_ID) if tags.get(key)]
            if filters:
                for snap in self._paginate("describe_snapshots", "Snapshots",
                                           OwnerIds=["self"], Filters=filters):
                    snapshots.add(str(snap["SnapshotId"]))
        self._ignore_not_found(self.ec2.deregister_image, ImageId=external_id)
        for snapshot_id in sorted(snapshots):
            self._ignore_not_found(self.ec2.delete_snapshot, SnapshotId=snapshot_id)

    def list_images(self) -> list[Resource]:
        """AMIs owned by this account, tags as metadata."""
        images = self._call(self.ec2.describe_images, Owners=["self"])["Images"]
        return [Resource("image", str(i["ImageId"]), tags_dict(i.get("Tags")),
                         status=i.get("State")) for i in images]

    # Used by the state machines (run in the executor) -------------------------------------

    def submit(self, fn: Callable[..., R], *args: Any,
               priority: Priority = Priority.START) -> Future[R]:
        return self._executor.submit(fn, *args, priority=priority)

    def create_instance(self, spec: LaunchSpec) -> dict[str, Any]:
        """RunInstances for `spec`; returns the new instance as RunInstances answered.

        Raises botocore's ClientError (the state machine classifies it) or LaunchError."""
        label = self.provider.label(spec.pool_name, spec.label_name)
        pool = self.provider.pool(spec.pool_name)
        self.instance_type_info(label.instance_type)  # unknown types fail before launching
        image_id = self.resolve_image(label, spec.image)
        tags = {**label.tags, **{str(k): str(v) for k, v in spec.metadata.items()},
                META_NODE_ID: spec.node_id, META_POOL_NAME: spec.pool_name,
                META_PROVIDER_NAME: spec.provider_name}
        if spec.hostname:
            tags["Name"] = spec.hostname
        interface: dict[str, Any] = {"DeviceIndex": 0,
                                     "AssociatePublicIpAddress": pool.public_ipv4}
        if pool.public_ipv6:
            interface["Ipv6AddressCount"] = 1
        if pool.subnet_id:
            interface["SubnetId"] = pool.subnet_id
        if pool.security_group_id:
            interface["Groups"] = [pool.security_group_id]
        args: dict[str, Any] = dict(
            ImageId=image_id, MinCount=1, MaxCount=1, InstanceType=label.instance_type,
            ClientToken=uuid.uuid4().hex,  # botocore's own retries must not launch twice
            NetworkInterfaces=[interface],
            TagSpecifications=[{"ResourceType": "instance", "Tags": tag_list(tags)},
                               {"ResourceType": "volume", "Tags": tag_list(tags)}])
        key_name = label.key_name or spec.key_name
        if key_name:
            args["KeyName"] = key_name
        if label.ebs_optimized:
            args["EbsOptimized"] = True
        userdata = label.userdata or spec.userdata
        if userdata:
            args["UserData"] = userdata  # botocore base64-encodes it
        if label.iam_instance_profile is not None:
            args["IamInstanceProfile"] = label.iam_instance_profile.as_boto()
        if label.use_spot:
            args["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {"SpotInstanceType": "one-time",
                                "InstanceInterruptionBehavior": "terminate"}}
        if label.imdsv2:
            args["MetadataOptions"] = {"HttpTokens": label.imdsv2, "HttpEndpoint": "enabled"}
        if label.volume_size or label.volume_type or label.iops or label.throughput:
            args["BlockDeviceMappings"] = [self._root_mapping(image_id, label)]
        answer = self.ec2.run_instances(**args)
        return cast(dict[str, Any], answer["Instances"][0])

    def terminate_instance(self, external_id: str) -> tuple[bool, str | None]:
        """TerminateInstances; (False, ...) when the instance was gone already. The second
        value is the instance's node id (its tag), to find its leftover volumes."""
        snap = self.instances.peek()
        raw = snap.value.get(external_id) if snap is not None else None
        if raw is None:
            try:
                found = self.ec2.describe_instances(InstanceIds=[external_id])
            except botocore.exceptions.ClientError as e:
                if error_code(e) == "InvalidInstanceID.NotFound":
                    return False, None
                raise
            listed = [i for r in found.get("Reservations") or [] for i in r.get("Instances")
                      or []]
            if not listed:
                return False, None
            raw = listed[0]
        node_id = tags_dict(raw.get("Tags")).get(META_NODE_ID)
        if (raw.get("State") or {}).get("Name") == "terminated":
            return False, node_id
        try:
            self.ec2.terminate_instances(InstanceIds=[external_id])
        except botocore.exceptions.ClientError as e:
            if error_code(e) == "InvalidInstanceID.NotFound":
                return False, node_id
            raise
        return True, node_id

    def delete_leftover_volumes(self, node_id: str) -> list[str]:
        """Delete this provider's `available` volumes tagged with `node_id`; their ids."""
        volumes = self._paginate("describe_volumes", "Volumes", Filters=[
            {"Name": "tag:" + META_NODE_ID, "Values": [node_id]},
            {"Name": "tag:" + META_PROVIDER_NAME, "Values": [self.provider.name]},
            {"Name": "status", "Values": ["available"]}])
        deleted = []
        for vol in volumes:
            self._ignore_not_found(self.ec2.delete_volume, VolumeId=vol["VolumeId"])
            deleted.append(str(vol["VolumeId"]))
        return deleted

    def instance_type_info(self, name: str) -> InstanceTypeInfo:
        with self._types_lock:
            info = self._types.get(name)
        if info is not None:
            return info
        self._load_instance_types([name])
        with self._types_lock:
            info = self._types.get(name)
        if info is None:
            raise LaunchError(f"instance type {name!r} is not offered here")
        return info

    def resolve_image(self, label: AwsLabelConfig, image: str) -> str:
        """The AMI id to boot: a diskimage label's upload (`image`), or the label's cloud
        image: its image-id, or the newest AMI matching its image-filters."""
        if label.diskimage:
            return image
        cloud_image = self.provider.cloud_image(label.cloud_image or image)
        if cloud_image is None:
            if image.startswith("ami-"):
                return image
            raise LaunchError(f"label {label.name}: no cloud image {label.cloud_image!r}")
        if cloud_image.image_id:
            return cloud_image.image_id
        filters = tuple(cloud_image.image_filters or ())
        found = self._images.get(("filters", filters), lambda: self._paginate(
            "describe_images", "Images", Filters=[f.as_boto() for f in filters]))
        available = [i for i in found if i.get("State", "available") == "available"]
        if not available:
            raise LaunchError(f"cloud image {cloud_image.name}: no AMI matches its "
                              f"image-filters")
        newest = max(available, key=lambda i: (i.get("CreationDate") or "", i["ImageId"]))
        return str(newest["ImageId"])

    def instance_from_raw(self, raw: Mapping[str, Any], pool_name: str | None = None) -> Instance:
        tags = tags_dict(raw.get("Tags"))
        state = (raw.get("State") or {}).get("Name", "")
        private_v4 = raw.get("PrivateIpAddress") or None
        public_v4 = raw.get("PublicIpAddress") or None
        public_v6 = None
        for iface in (raw.get("NetworkInterfaces") or [])[:1]:
            for addr in iface.get("Ipv6Addresses") or []:
                public_v6 = addr.get("Ipv6Address") or None
                break
        pool = self._pool(pool_name or tags.get(META_POOL_NAME))
        if pool is not None and pool.use_internal_ip and private_v4:
            interface_ip = private_v4
        else:
            interface_ip = public_v4 or public_v6 or private_v4
        resources = None
        itype = raw.get("InstanceType")
        if itype:
            with self._types_lock:
                info = self._types.get(str(itype))
            if info is not None:
                market = SPOT if raw.get("InstanceLifecycle") == "spot" else ON_DEMAND
                resources = info.quota(market)
        fault = None
        if state in ("shutting-down", "terminated", "stopping", "stopped"):
            fault = (raw.get("StateReason") or {}).get("Message") or None
        return Instance(
            external_id=str(raw["InstanceId"]),
            name=tags.get("Name") or str(raw["InstanceId"]),
            status=STATUS_MAP.get(state, "building"),
            metadata=tags,
            interface_ip=interface_ip,
            public_ipv4=public_v4,
            private_ipv4=private_v4,
            public_ipv6=public_v6,
            cloud="AWS",
            region=self.provider.region_name,
            az=(raw.get("Placement") or {}).get("AvailabilityZone") or None,
            fault=fault,
            resources=resources,
        )

    # Internals ----------------------------------------------------------------------------

    def _rate_limit(self, model: Any = None, **kwargs: Any) -> None:
        name = getattr(model, "name", "")
        (self._read_limiter if name.startswith(READ_PREFIXES) else self._write_limiter).wait()

    def _pool(self, name: str | None) -> AwsPoolConfig | None:
        if not name:
            return None
        for pool in self.provider.pools:
            if pool.name == name:
                return pool
        return None

    def _fetch_instances(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for reservation in self._paginate("describe_instances", "Reservations"):
            for raw in reservation.get("Instances") or []:
                out[str(raw["InstanceId"])] = raw
        with self._types_lock:
            unknown = {str(raw["InstanceType"]) for raw in out.values()
                       if raw.get("InstanceType")} - set(self._types)
        if unknown:
            try:  # for the instances' resources; the listing is good without them
                self._load_instance_types(sorted(unknown))
            except Exception as e:
                log.warning("%s: cannot describe instance types %s: %s", self.provider.name,
                            ", ".join(sorted(unknown)), e)
        return out

    def _load_instance_types(self, names: list[str]) -> None:
        for start in range(0, len(names), 100):
            chunk = names[start:start + 100]
            try:
                found = self._paginate("describe_instance_types", "InstanceTypes",
                                       InstanceTypes=chunk)
            except botocore.exceptions.ClientError as e:
                if error_code(e) != "InvalidInstanceType" or len(chunk) == 1:
                    if len(chunk) == 1 and error_code(e) == "InvalidInstanceType":
                        raise LaunchError(
                            f"instance type {chunk[0]!r} is not offered here") from e
                    raise
                for name in chunk:  # one bad name spoils the batch: one by one
                    try:
                        self._load_instance_types([name])
                    except LaunchError:
                        pass
                continue
            with self._types_lock:
                for raw in found:
                    info = InstanceTypeInfo.from_boto(raw)
                    self._types[info.name] = info

    def _root_mapping(self, image_id: str, label: AwsLabelConfig) -> dict[str, Any]:
        """The image's root device mapping with the label's volume settings applied."""
        images = self._images.get(("image", image_id), lambda: self.ec2.describe_images(
            ImageIds=[image_id])["Images"])
        image = images[0] if images else {}
        device = image.get("RootDeviceName") or ROOT_DEVICE
        ebs: dict[str, Any] = {}
        for bdm in image.get("BlockDeviceMappings") or []:
            if bdm.get("DeviceName") == device and "Ebs" in bdm:
                ebs = {k: v for k, v in bdm["Ebs"].items() if k not in ("Encrypted",
                                                                        "OutpostArn")}
        if label.volume_type:
            ebs["VolumeType"] = label.volume_type
        if label.volume_size:
            ebs["VolumeSize"] = label.volume_size
        if label.iops:
            ebs["Iops"] = label.iops
        if label.throughput:
            ebs["Throughput"] = label.throughput
        volume_type = ebs.get("VolumeType")
        if volume_type not in ("io1", "io2", "gp3"):
            ebs.pop("Iops", None)
        if volume_type != "gp3":
            ebs.pop("Throughput", None)
        ebs["DeleteOnTermination"] = True
        return {"DeviceName": device, "Ebs": ebs}

    def _label_quota_codes(self) -> set[str]:
        codes = set()
        for pool in self.provider.pools:
            for label in pool.labels:
                code = quota_code(label.instance_type, SPOT if label.use_spot else ON_DEMAND)
                if code:
                    codes.add(code)
        return codes

    def _ec2_quotas(self) -> dict[str, float] | None:
        """{quota code: value} of EC2's Service Quotas, re-read every `quota_ttl`; None
        when the service never answered (no cloud quota). After a failure the last good
        answer is kept."""
        with self._quota_lock:
            if time.monotonic() - self._quota_read_at < self.quota_ttl:
                return self._quota_values
            self._quota_read_at = time.monotonic()
        try:
            values: dict[str, float] = {}
            for page in self.quotas.get_paginator("list_service_quotas").paginate(
                    ServiceCode="ec2"):
                for quota in page.get("Quotas") or []:
                    if quota.get("QuotaCode") and quota.get("Value") is not None:
                        values[str(quota["QuotaCode"])] = float(quota["Value"])
        except Exception as e:
            with self._quota_lock:
                if not self._quota_unavailable_logged:
                    log.info("%s: Service Quotas does not answer for EC2 (%s): no cloud "
                             "quota, the configured limits apply", self.provider.name, e)
                    self._quota_unavailable_logged = True
                return self._quota_values
        with self._quota_lock:
            self._quota_values = values
            self._quota_unavailable_logged = False
        return values

    def _paginate(self, operation: str, key: str, **kwargs: Any) -> list[Any]:
        client = self.ec2
        out: list[Any] = []
        if client.can_paginate(operation):
            for page in client.get_paginator(operation).paginate(**kwargs):
                out.extend(page.get(key) or [])
        else:
            out.extend(getattr(client, operation)(**kwargs).get(key) or [])
        return out

    def _wait_for(self, read: Callable[[], dict[str, Any]], good: Callable[[Any], bool],
                  bad: Callable[[Any], bool], deadline: float, what: str) -> dict[str, Any]:
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

    def _undo_upload(self, made: list[str]) -> None:
        for resource in reversed(made):
            try:
                if resource.startswith("ami-"):
                    self.ec2.deregister_image(ImageId=resource)
                else:
                    self.ec2.delete_snapshot(SnapshotId=resource)
            except Exception as e:
                log.warning("could not remove %s after a failed upload: %s", resource, e)

    def _ignore_not_found(self, fn: Callable[..., Any], **kwargs: Any) -> None:
        try:
            fn(**kwargs)
        except botocore.exceptions.ClientError as e:
            if is_gone(e):
                return
            raise self._cloud_error(e, getattr(fn, "__name__", "API call")) from e
        except botocore.exceptions.BotoCoreError as e:
            raise self._cloud_error(e, getattr(fn, "__name__", "API call")) from e

    def _call(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """A synchronous API call with errors mapped onto our exception tree."""
        try:
            return fn(*args, **kwargs)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
            raise self._cloud_error(e, getattr(fn, "__name__", "API call")) from e

    @staticmethod
    def _cloud_error(e: BaseException, what: str) -> Exception:
        if isinstance(e, botocore.exceptions.ClientError):
            code = error_code(e)
            status = int((e.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
            if code in TEMPORARY_CODES or status >= 500 or status == 429:
                return TemporaryCloudError(f"{what}: {e}")
            return PermanentCloudError(f"{what}: {e}")
        if isinstance(e, TimeoutError | botocore.exceptions.BotoCoreError):
            return TemporaryCloudError(f"{what}: {e}")
        return TemporaryCloudError(f"{what}: {e}")


def is_gone(e: BaseException) -> bool:
    """The error says the resource does not exist (any more)."""
    code = error_code(e)
    return code.endswith("NotFound") or code == "InvalidAMIID.Unavailable"


def tags_dict(tags: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    return {str(t["Key"]): str(t.get("Value") or "") for t in tags or [] if "Key" in t}


if TYPE_CHECKING:  # mypy proves the adapter satisfies the driver interfaces
    _check_quota: QuotaReportingAdapter = cast(AwsAdapter, None)
    _check_image: ImageAdapter = cast(AwsAdapter, None)
