"""What AWS instances cost and what the account may run: instance types (vCPUs, cores,
RAM; remembered for good) and EC2's vCPU limits from Service Quotas (re-read every
`quota_ttl`)."""

from __future__ import annotations

import logging
import threading
import time

import botocore.exceptions

from nodepool_ng.drivers.aws.api import AwsApi
from nodepool_ng.drivers.aws.config import AwsLabelConfig, AwsProviderConfig
from nodepool_ng.drivers.aws.quota import ON_DEMAND, SPOT, InstanceTypeInfo, error_code, quota_code
from nodepool_ng.drivers.base import LaunchSpec
from nodepool_ng.errors import LaunchError
from nodepool_ng.model.quota import Quota

log = logging.getLogger("nodepool_ng.drivers.aws.adapter")


class AwsQuotas:
    """Instance-type costs and the account's vCPU limits for one provider."""

    def __init__(self, api: AwsApi, provider: AwsProviderConfig, quota_ttl: float = 300.0) -> None:
        self.api = api
        self.provider = provider
        self.quota_ttl = quota_ttl
        self._types: dict[str, InstanceTypeInfo] = {}
        self._types_lock = threading.Lock()
        self._quota_lock = threading.Lock()
        self._quota_values: dict[str, float] | None = None
        self._quota_read_at = float("-inf")
        self._quota_unavailable_logged = False

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

    def get_quota_for_label(self, spec: LaunchSpec) -> Quota:
        label: AwsLabelConfig = self.provider.label(spec.pool_name, spec.label_name)
        info = self.api.call(self.instance_type_info, label.instance_type)
        return info.quota(SPOT if label.use_spot else ON_DEMAND)

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

    def known_type(self, name: str) -> InstanceTypeInfo | None:
        """An instance type already described (no call)."""
        with self._types_lock:
            return self._types.get(name)

    def learn_types(self, names: set[str]) -> None:
        """Describe the types among `names` not known yet (for the listed instances' cost);
        failures are logged: a listing is good without them."""
        with self._types_lock:
            unknown = names - set(self._types)
        if not unknown:
            return
        try:
            self._load_instance_types(sorted(unknown))
        except Exception as e:
            log.warning("%s: cannot describe instance types %s: %s", self.provider.name,
                        ", ".join(sorted(unknown)), e)

    def _load_instance_types(self, names: list[str]) -> None:
        for start in range(0, len(names), 100):
            chunk = names[start:start + 100]
            try:
                found = self.api.paginate("describe_instance_types", "InstanceTypes",
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
            for page in self.api.quotas.get_paginator("list_service_quotas").paginate(
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
