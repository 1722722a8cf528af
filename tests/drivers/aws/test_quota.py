"""Quota: vCPU limits from Service Quotas, the no-quota fallback, label costs, quota codes.

moto_server has no EC2 quota codes in Service Quotas (it answers ListServiceQuotas for
`ec2` with HTTP 500): the fallback is tested against plain moto, the real path with the
fault proxy answering ListServiceQuotas with a canned page.
"""

from __future__ import annotations

import logging
import math
import time

import pytest

from nodepool_ng.drivers.aws.api import RateLimiter
from nodepool_ng.drivers.aws.quota import (
    STANDARD_ON_DEMAND,
    STANDARD_SPOT,
    InstanceTypeInfo,
    quota_code,
)
from nodepool_ng.model.quota import Quota
from tests.drivers.aws.helpers import make_adapter, prepare_cloud, provider_from, raw_provider, spec
from tests.fixtures.moto import AwsCloud

LABELS = [
    {"name": "small", "cloud-image": "xenial", "instance-type": "t3.medium", "key-name": "k"},
    {"name": "spot", "cloud-image": "xenial", "instance-type": "c5.xlarge", "key-name": "k",
     "use-spot": True},
]


def test_no_service_quotas_means_no_cloud_quota_logged_once(aws: AwsCloud, caplog):
    cloud = prepare_cloud(aws)
    adapter = make_adapter(provider_from(raw_provider(cloud, LABELS)), quota_ttl=0.0)
    try:
        with caplog.at_level(logging.INFO, logger="nodepool_ng.drivers.aws.adapter"):
            first = adapter.get_quota_limits()
            second = adapter.get_quota_limits()
        assert aws.proxy.calls["ListServiceQuotas"] >= 2  # asked twice (ttl 0), moto fails
        for limits in (first, second):
            assert all(math.isinf(v) for v in limits.resources.values())
            assert limits.get(STANDARD_ON_DEMAND, math.inf) == math.inf
        notes = [r for r in caplog.records if "Service Quotas does not answer" in r.message]
        assert len(notes) == 1 and notes[0].levelno == logging.INFO
    finally:
        adapter.stop()


def test_vcpu_limits_from_service_quotas(aws: AwsCloud):
    """The fault proxy answers ListServiceQuotas as AWS would (moto lacks the EC2 codes)."""
    cloud = prepare_cloud(aws)
    aws.proxy.answer("ListServiceQuotas", {"Quotas": [
        {"ServiceCode": "ec2", "QuotaCode": STANDARD_ON_DEMAND, "Value": 64.0},
        {"ServiceCode": "ec2", "QuotaCode": STANDARD_SPOT, "Value": 32.0},
        {"ServiceCode": "ec2", "QuotaCode": "L-DB2E81BA", "Value": 8.0},  # G: no label uses
    ]})
    adapter = make_adapter(provider_from(raw_provider(cloud, LABELS)), quota_ttl=300.0)
    try:
        limits = adapter.get_quota_limits()
        assert limits.get(STANDARD_ON_DEMAND) == 64 and limits.get(STANDARD_SPOT) == 32
        assert "L-DB2E81BA" not in limits.resources
        assert math.isinf(limits.get("cores")) and math.isinf(limits.get("instances"))
        adapter.get_quota_limits()
        assert aws.proxy.calls["ListServiceQuotas"] == 1  # cached for quota_ttl

        small = adapter.get_quota_for_label(spec("small"))
        assert small.resources == {"cores": 1, "instances": 1, "ram": 4096,
                                   STANDARD_ON_DEMAND: 2}
        spot = adapter.get_quota_for_label(spec("spot"))  # c5.xlarge: 4 vCPUs, 2 cores, 8 GiB
        assert spot.resources == {"cores": 2, "instances": 1, "ram": 8192, STANDARD_SPOT: 4}
        assert aws.proxy.calls["DescribeInstanceTypes"] == 2
        adapter.get_quota_for_label(spec("small"))
        assert aws.proxy.calls["DescribeInstanceTypes"] == 2  # instance types are cached
        # 32 on-demand t3.medium fit in 64 vCPUs, 33 do not
        assert Quota.total([small] * 32).fits_within(limits)
        assert not Quota.total([small] * 33).fits_within(limits)
    finally:
        adapter.stop()


@pytest.mark.parametrize(("itype", "spot", "code"), [
    ("t3.micro", False, STANDARD_ON_DEMAND),
    ("m5.large", True, STANDARD_SPOT),
    ("g4dn.xlarge", False, "L-DB2E81BA"),
    ("inf1.xlarge", False, "L-1945791B"),  # not "i"
    ("trn1.32xlarge", True, "L-6B0D517C"),
    ("u-6tb1.metal", False, "L-43DA4232"),
    ("u-6tb1.metal", True, None),  # no spot quota for high-memory
    ("dl1.24xlarge", False, "L-6E869C2A"),
    ("hpc6a.48xlarge", False, "L-F7808C92"),
    ("q9.large", False, None),
])
def test_quota_code(itype, spot, code):
    assert quota_code(itype, 1 if spot else 0) == code


def test_instance_type_cost():
    info = InstanceTypeInfo.from_boto({"InstanceType": "m5.large", "VCpuInfo": {
        "DefaultVCpus": 2, "DefaultCores": 1}, "MemoryInfo": {"SizeInMiB": 8192}})
    assert info.quota().resources == {"cores": 1, "instances": 1, "ram": 8192,
                                      STANDARD_ON_DEMAND: 2}
    assert info.quota(1).resources == {"cores": 1, "instances": 1, "ram": 8192,
                                       STANDARD_SPOT: 2}


def test_rate_limiter_spaces_calls():
    limiter = RateLimiter(20.0)  # one call per 50 ms
    start = time.monotonic()
    for _ in range(6):
        limiter.wait()
    assert time.monotonic() - start >= 0.25 - 0.01  # 5 waits of 50 ms after the first
