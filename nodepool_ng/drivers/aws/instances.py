"""AWS instances: RunInstances and TerminateInstances for the state machines, the AMI a
label boots, and one paginated DescribeInstances shared by every machine, refreshed in the
executor at most once per `poll_interval` (`LazyListCache`, with backoff after failures)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, cast

import botocore.exceptions

from nodepool_ng.drivers.aws.api import AwsApi, tags_dict
from nodepool_ng.drivers.aws.config import AwsLabelConfig, AwsPoolConfig, AwsProviderConfig
from nodepool_ng.drivers.aws.ebs import tag_list
from nodepool_ng.drivers.aws.images import ROOT_DEVICE
from nodepool_ng.drivers.aws.limits import AwsQuotas
from nodepool_ng.drivers.aws.quota import ON_DEMAND, SPOT, error_code
from nodepool_ng.drivers.base import (
    META_NODE_ID,
    META_POOL_NAME,
    META_PROVIDER_NAME,
    Instance,
    LaunchSpec,
)
from nodepool_ng.drivers.cache import LazyListCache, Submitter, TTLMemo
from nodepool_ng.errors import LaunchError

STATUS_MAP = {"pending": "building", "running": "ready", "shutting-down": "deleting",
              "terminated": "deleting", "stopping": "error", "stopped": "error"}


class AwsInstances:
    """The provider's EC2 instances; `cache` is the shared instance list."""

    def __init__(self, api: AwsApi, provider: AwsProviderConfig, quotas: AwsQuotas,
                 poll: Submitter, poll_interval: float, cache_ttl: float = 300.0) -> None:
        self.api = api
        self.provider = provider
        self.quotas = quotas
        self.cache: LazyListCache[dict[str, dict[str, Any]]] = LazyListCache(
            self._fetch_instances, poll, poll_interval, name=f"{provider.name} instances")
        self._images: TTLMemo[Any, Any] = TTLMemo(cache_ttl)

    def list_instances(self) -> list[Instance]:
        """Every instance but terminated ones, with its tags as metadata."""
        return [self.instance_from_raw(raw) for raw in self.cache.get().values()
                if (raw.get("State") or {}).get("Name") != "terminated"]

    def create_instance(self, spec: LaunchSpec) -> dict[str, Any]:
        """RunInstances for `spec`; returns the new instance as RunInstances answered.

        Raises botocore's ClientError (the state machine classifies it) or LaunchError."""
        label: AwsLabelConfig = self.provider.label(spec.pool_name, spec.label_name)
        pool = self.provider.pool(spec.pool_name)
        self.quotas.instance_type_info(label.instance_type)  # unknown types fail before launching
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
        answer = self.api.ec2.run_instances(**args)
        return cast(dict[str, Any], answer["Instances"][0])

    def terminate_instance(self, external_id: str) -> tuple[bool, str | None]:
        """TerminateInstances; (False, ...) when the instance was gone already. The second
        value is the instance's node id (its tag), to find its leftover volumes."""
        snap = self.cache.peek()
        raw = snap.value.get(external_id) if snap is not None else None
        if raw is None:
            try:
                found = self.api.ec2.describe_instances(InstanceIds=[external_id])
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
            self.api.ec2.terminate_instances(InstanceIds=[external_id])
        except botocore.exceptions.ClientError as e:
            if error_code(e) == "InvalidInstanceID.NotFound":
                return False, node_id
            raise
        return True, node_id

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
        found = self._images.get(("filters", filters), lambda: self.api.paginate(
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
            info = self.quotas.known_type(str(itype))
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

    def _pool(self, name: str | None) -> AwsPoolConfig | None:
        if not name:
            return None
        for pool in self.provider.pools:
            if pool.name == name:
                return pool
        return None

    def _fetch_instances(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for reservation in self.api.paginate("describe_instances", "Reservations"):
            for raw in reservation.get("Instances") or []:
                out[str(raw["InstanceId"])] = raw
        self.quotas.learn_types({str(raw["InstanceType"]) for raw in out.values()
                                 if raw.get("InstanceType")})
        return out

    def _root_mapping(self, image_id: str, label: AwsLabelConfig) -> dict[str, Any]:
        """The image's root device mapping with the label's volume settings applied."""
        images = self._images.get(("image", image_id), lambda: self.api.ec2.describe_images(
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
