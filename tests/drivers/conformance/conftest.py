"""The driver conformance suite's fixtures (issue 9): one "driver under test" per driver.

Every driver is reached as the core reaches it: its registry entry (`registry.get(name)`),
the provider model from `entry.build_provider(entry.schema(raw))` and the adapter from
`entry.make_adapter(provider, AdapterOptions(...))`. Each runs against its real server:

- openstack: simcloud over HTTP (unmodified openstacksdk), faults via its admin API;
- aws: moto_server behind the fault proxy of tests/fixtures/moto.py;
- static: a real sshd on loopback.

What a behaviour does not apply to is decided from the registry entry (`launches_servers`,
`make_registrar`, `make_image_adapter`), never from the driver's name (`require_*` below).
A new driver gets a fixture here and an entry in `DRIVERS`; it counts once the suite passes.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from nodepool_ng.drivers import registry
from nodepool_ng.drivers.base import (
    META_NODE_ID,
    META_POOL_NAME,
    META_PROVIDER_NAME,
    ImageAdapter,
    Instance,
    LaunchSpec,
    ProviderAdapter,
    StateMachine,
)
from nodepool_ng.drivers.registry import AdapterOptions, Driver
from tests.fixtures.moto import AwsCloud, FaultProxy, MotoServer, moto_behind_proxy
from tests.fixtures.simcloud import SimCloudFixture, simcloud_profile
from tests.fixtures.sshd import SshdServer

LOG = logging.getLogger("tests.conformance")
PROVIDER = "conformance"
POOL = "main"
LABEL = "small"
XENIAL = "ami-785db401"  # one of moto_server's stock AMIs

# Every driver the suite runs against; a new driver is added here (and gets a fixture).
DRIVERS = ["openstack", "static", "aws"]


@dataclass
class DriverUnderTest:
    """One driver as the core sees it, plus the test's handles on its server.

    - `make_spec(node_id)`: the LaunchSpec the launcher would build for label `small`.
    - `cloud_metadata(external_id)`: the server's metadata/tags as its server stores them.
    - `raw`: the raw provider dict (`with_raw` builds another adapter from a changed one).
    - `slow_boot(seconds)`: a new server is seen running only after `seconds`;
      `fail_listing()`: the server list call fails.
    - `refuse_quota()`: make the next creates fail for quota; `fail_create`: ways to make the
      next creates fail otherwise (each is tried); `fail_delete()`: make deletes fail;
      `clear_faults()` undoes them all.
    - `plant_leak(node_id)`: a server made behind nodepool's back, with nodepool metadata.
    - `image_upload_kwargs`: extra `upload_image` arguments (`diskimage=` when the entry's
      `upload_diskimage_arg` says so).
    - `host`, `host_keys`: the configured host of a driver of registered hosts (static),
      and the keys its sshd offers.
    """

    name: str
    entry: Driver
    raw: dict[str, Any]
    provider: Any
    options: AdapterOptions
    adapter: ProviderAdapter
    make_spec: Callable[[str], LaunchSpec] | None = None
    cloud_metadata: Callable[[str], Mapping[str, str]] | None = None
    refuse_quota: Callable[[], object] | None = None
    fail_create: list[tuple[str, Callable[[], object]]] = field(default_factory=list)
    fail_delete: Callable[[], object] | None = None
    slow_boot: Callable[[float], object] | None = None
    fail_listing: Callable[[], object] | None = None
    clear_faults: Callable[[], object] = lambda: None
    plant_leak: Callable[[str], str] | None = None
    image_upload_kwargs: dict[str, Any] = field(default_factory=dict)
    host: Any = None
    host_keys: list[str] = field(default_factory=list)
    _extra_adapters: list[Any] = field(default_factory=list)

    # -- what applies, from the registry entry ----------------------------------------------
    def require_launches(self) -> None:
        if not self.entry.launches_servers:
            pytest.skip(f"{self.name}: registered, never booted "
                        "(registry entry launches_servers=False)")

    def require_images(self) -> None:
        if self.entry.make_image_adapter is None:
            pytest.skip(f"{self.name}: no images to upload "
                        "(registry entry make_image_adapter=None)")

    # -- helpers ----------------------------------------------------------------------------
    def spec(self, node_id: str) -> LaunchSpec:
        assert self.make_spec is not None
        return self.make_spec(node_id)

    def with_raw(self, **changes: Any) -> DriverUnderTest:
        """The same driver on the same server, with a provider from `raw` plus `changes`
        (its adapter stopped with this one's)."""
        entry, provider = build(self.name, {**self.raw, **changes})
        adapter = entry.make_adapter(provider, self.options)
        self._extra_adapters.append(adapter)
        return replace(self, provider=provider, adapter=adapter, _extra_adapters=[])

    def image_adapter(self) -> ImageAdapter:
        assert self.entry.make_image_adapter is not None
        adapter = self.entry.make_image_adapter(self.provider, self.options)
        self._extra_adapters.append(adapter)
        return adapter

    def drive(self, machine: StateMachine, timeout: float = 30.0) -> Instance | None:
        """advance() until complete, woken by the adapter's progress listener; errors raise."""
        wake = threading.Event()
        self.adapter.set_progress_listener(wake.set)
        deadline = time.monotonic() + timeout
        result = None
        try:
            while not machine.complete:
                assert time.monotonic() < deadline, (
                    f"{self.name}: state machine not complete after {timeout}s: "
                    f"{getattr(machine, 'state', '?')}")
                result = machine.advance()
                wake.wait(0.05)
                wake.clear()
        finally:
            self.adapter.set_progress_listener(None)
        return result

    def create(self, node_id: str) -> Instance:
        machine = self.adapter.get_create_state_machine(self.spec(node_id), LOG)
        instance = self.drive(machine)
        assert instance is not None, f"{self.name}: create completed without an Instance"
        assert machine.external_id == instance.external_id
        return instance

    def delete(self, external_id: str) -> None:
        machine = self.adapter.get_delete_state_machine(external_id, LOG)
        self.drive(machine)
        assert machine.complete

    def listed(self) -> dict[str, Instance]:
        return {i.external_id: i for i in self.adapter.list_instances()}

    def stop(self) -> None:
        self.clear_faults()
        for adapter in [self.adapter, *self._extra_adapters]:
            stop = getattr(adapter, "stop", None)
            if stop is not None:
                stop()


def build(name: str, raw: dict[str, Any]) -> tuple[Driver, Any]:
    """The registry entry and the provider model of a raw provider dict, as the config
    loader makes them (schema first: its defaults are part of the raw entry)."""
    entry = registry.get(name)
    assert raw.get("driver", registry.DEFAULT_DRIVER) == name
    return entry, entry.build_provider(entry.schema(raw))


def launcher_spec(provider: Any, node_id: str, image: str) -> LaunchSpec:
    """A LaunchSpec of pool `main`, label `small`, as `launcher/poolctx.spec_for` builds it."""
    pool = provider.pool(POOL)
    label = next(lb for lb in pool.labels if lb.name == LABEL)
    metadata = {"groups": f"{provider.name},{image},{LABEL}",
                META_NODE_ID: node_id, META_POOL_NAME: POOL, META_PROVIDER_NAME: provider.name}
    return LaunchSpec(
        hostname=f"np{node_id}", node_id=node_id, provider_name=provider.name,
        pool_name=POOL, label_name=LABEL, image=image,
        flavor_name=getattr(label, "flavor_name", None),
        min_ram=getattr(label, "min_ram", None), key_name=getattr(label, "key_name", None),
        metadata=metadata)


# -- openstack: simcloud ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def _simcloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCloudFixture]:
    directory = tmp_path_factory.mktemp("simcloud")
    with SimCloudFixture(simcloud_profile(1), directory=directory) as cloud:
        yield cloud


def _reset_faults(sc: SimCloudFixture) -> None:
    admin = sc.admin("sim-a")
    admin.set_faults(error_rate={"compute": 0.0}, server_error_rate=0.0,
                     method_error_rate={"DELETE": 0.0})
    admin.set_quota(instances=-1, cores=-1, ram=-1)
    admin.set_boot_delay(0.0, 0.0)


def _reset_simcloud(sc: SimCloudFixture) -> None:
    _reset_faults(sc)
    admin = sc.admin("sim-a")
    servers = admin.servers()
    if servers:  # a failed test's leftovers
        conn = sc.connect("sim-a")
        for server in servers:
            conn.delete_server(server["id"], wait=False)
        deadline = time.monotonic() + 30
        while admin.servers():
            assert time.monotonic() < deadline, "simcloud servers not deleted"
            time.sleep(0.05)


@pytest.fixture
def openstack_dut(_simcloud: SimCloudFixture) -> Iterator[DriverUnderTest]:
    sc = _simcloud
    _reset_simcloud(sc)
    admin = sc.admin("sim-a")
    raw = {
        "name": PROVIDER, "driver": "openstack", "cloud": "sim-a", "launch-timeout": 30,
        "cloud-images": [{"name": "cirros"}],
        "pools": [{"name": POOL, "max-servers": 10,
                   "labels": [{"name": LABEL, "cloud-image": "cirros",
                               "flavor-name": "small"}]}],
    }
    entry, provider = build("openstack", raw)
    options = AdapterOptions(clouds_yaml=str(sc.clouds_yaml), poll_interval=0.1)

    def metadata(external_id: str) -> Mapping[str, str]:
        (server,) = [s for s in admin.servers() if s["id"] == external_id]
        return dict(server["metadata"])

    def leak(node_id: str) -> str:
        server = sc.connect("sim-a").create_server(
            f"np{node_id}", image="cirros", flavor="small", wait=False,
            meta={META_NODE_ID: node_id, META_POOL_NAME: POOL, META_PROVIDER_NAME: PROVIDER})
        deadline = time.monotonic() + 30  # openstacksdk's own wait polls every few seconds
        while [s["status"] for s in admin.servers() if s["id"] == server["id"]] != ["ACTIVE"]:
            assert time.monotonic() < deadline, "the leaked server did not become ACTIVE"
            time.sleep(0.05)
        return str(server["id"])

    dut = DriverUnderTest(
        name="openstack", entry=entry, raw=raw, provider=provider, options=options,
        adapter=entry.make_adapter(provider, options),
        make_spec=lambda node_id: launcher_spec(provider, node_id, "cirros"),
        cloud_metadata=metadata,
        refuse_quota=lambda: admin.set_quota(instances=0),
        fail_create=[
            ("compute API answers 500", lambda: admin.set_faults(error_rate={"compute": 1.0})),
            ("server ends in ERROR", lambda: admin.set_faults(server_error_rate=1.0)),
        ],
        fail_delete=lambda: admin.set_faults(method_error_rate={"DELETE": 1.0}),
        slow_boot=lambda seconds: admin.set_boot_delay(seconds, 0.0),
        fail_listing=lambda: admin.set_faults(error_rate={"compute": 1.0}),
        clear_faults=lambda: _reset_faults(sc),
        plant_leak=leak,
    )
    try:
        yield dut
    finally:
        dut.stop()


# -- aws: moto_server behind the fault proxy ------------------------------------------------

@pytest.fixture(scope="module")
def _moto() -> Iterator[tuple[MotoServer, FaultProxy]]:
    with moto_behind_proxy() as servers:
        yield servers


@pytest.fixture
def aws_dut(_moto: tuple[MotoServer, FaultProxy],
            monkeypatch: pytest.MonkeyPatch) -> Iterator[DriverUnderTest]:
    aws = AwsCloud(*_moto)
    aws.reset()
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for key, value in aws.env.items():  # credentials and region; the endpoint is an option
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    ec2 = aws.client("ec2")
    ec2.create_key_pair(KeyName="np-key")
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    subnet = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"][0]
    raw = {
        "name": PROVIDER, "driver": "aws", "region-name": "us-east-1", "rate": 100,
        "launch-timeout": 30,
        "cloud-images": [{"name": "xenial", "image-id": XENIAL, "username": "ubuntu"}],
        "diskimages": [{"name": "custom"}],
        "pools": [{"name": POOL, "max-servers": 10, "subnet-id": subnet["SubnetId"],
                   "labels": [{"name": LABEL, "cloud-image": "xenial",
                               "instance-type": "t3.medium", "key-name": "np-key"}]}],
    }
    entry, provider = build("aws", raw)
    options = AdapterOptions(endpoint_url=aws.proxy.url, poll_interval=0.1)

    def metadata(external_id: str) -> Mapping[str, str]:
        found = ec2.describe_instances(InstanceIds=[external_id])
        raw_instance = found["Reservations"][0]["Instances"][0]
        return {t["Key"]: t["Value"] for t in raw_instance.get("Tags") or []}

    def leak(node_id: str) -> str:
        tags = [{"Key": META_NODE_ID, "Value": node_id}, {"Key": META_POOL_NAME, "Value": POOL},
                {"Key": META_PROVIDER_NAME, "Value": PROVIDER},
                {"Key": "Name", "Value": f"np{node_id}"}]
        started = ec2.run_instances(ImageId=XENIAL, MinCount=1, MaxCount=1,
                                    InstanceType="t3.medium", SubnetId=subnet["SubnetId"],
                                    TagSpecifications=[{"ResourceType": "instance",
                                                        "Tags": tags}])
        return str(started["Instances"][0]["InstanceId"])

    def fail(code: str, status: int) -> Callable[[], None]:
        return lambda: aws.proxy.fail("RunInstances", code, "injected by the conformance suite",
                                      status=status)

    dut = DriverUnderTest(
        name="aws", entry=entry, raw=raw, provider=provider, options=options,
        adapter=entry.make_adapter(provider, options),
        make_spec=lambda node_id: launcher_spec(provider, node_id, ""),
        cloud_metadata=metadata,
        refuse_quota=fail("InstanceLimitExceeded", 400),
        fail_create=[("RunInstances answers 500 InternalError", fail("InternalError", 500))],
        fail_delete=lambda: aws.proxy.fail("TerminateInstances", "InternalError",
                                           "injected by the conformance suite", status=500),
        slow_boot=lambda seconds: aws.proxy.delay("DescribeInstances", seconds),
        fail_listing=lambda: aws.proxy.fail("DescribeInstances", "InternalError",
                                            "injected by the conformance suite", status=500),
        clear_faults=aws.proxy.clear,
        plant_leak=leak,
        image_upload_kwargs={"diskimage": "custom"} if entry.upload_diskimage_arg else {},
    )
    try:
        yield dut
    finally:
        dut.stop()


# -- static: a real sshd ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def _sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    server = SshdServer(tmp_path_factory.mktemp("sshd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def static_dut(_sshd: SshdServer) -> Iterator[DriverUnderTest]:
    raw = {
        "name": PROVIDER, "driver": "static",
        "pools": [{"name": POOL, "nodes": [
            {"name": _sshd.host, "labels": [LABEL], "connection-port": _sshd.port,
             "timeout": 2}]}],
    }
    entry, provider = build("static", raw)
    options = AdapterOptions()
    (host,) = provider.pool(POOL).nodes
    dut = DriverUnderTest(
        name="static", entry=entry, raw=raw, provider=provider, options=options,
        adapter=entry.make_adapter(provider, options), host=host, host_keys=_sshd.host_keys,
        make_spec=lambda node_id: LaunchSpec(
            hostname=f"np{node_id}", node_id=node_id, provider_name=PROVIDER, pool_name=POOL,
            label_name=LABEL, image="",
            metadata={META_NODE_ID: node_id, META_POOL_NAME: POOL,
                      META_PROVIDER_NAME: PROVIDER}))
    try:
        yield dut
    finally:
        dut.stop()


@pytest.fixture(params=DRIVERS)
def dut(request: pytest.FixtureRequest) -> DriverUnderTest:
    """The driver under test: every test taking it runs once per driver in DRIVERS."""
    value = request.getfixturevalue(f"{request.param}_dut")
    assert isinstance(value, DriverUnderTest)
    return value


@pytest.fixture
def small_image(tmp_path: Path) -> Callable[[str], Path]:
    """A small disk image file in the given format (`qemu-img create -f <fmt>`, 1 MiB; raw
    files are written directly)."""
    def make(fmt: str) -> Path:
        path = tmp_path / f"disk.{fmt}"
        if fmt == "raw":
            data = bytearray(1024 * 1024)
            data[:4] = b"\xebc\x90\x00"
            path.write_bytes(bytes(data))
            return path
        qemu_img = shutil.which("qemu-img")
        if qemu_img is None:
            pytest.skip(f"qemu-img is not installed (needed for a {fmt} image)")
        subprocess.run([qemu_img, "create", "-q", "-f", fmt, str(path), "1M"], check=True,
                       capture_output=True)
        return path

    return make
