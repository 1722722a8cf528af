"""The builder's MQTT image events and statsd metrics: real ZooKeeper, Mosquitto, simcloud,
the stand-in DIB and real qemu-img."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kazoo.client import KazooClient

from nodepool_ng.builder.service import Builder, BuilderTiming
from nodepool_ng.model.image import UploadState
from tests.builder.support import diskimage, provider, read_uploads, wait_for, write_config
from tests.fixtures.mosquitto import Mosquitto, mosquitto  # noqa: F401 (fixture)
from tests.fixtures.simcloud import SimCloudFixture, cloud_profile
from tests.fixtures.statsd import StatsdServer, statsd_server  # noqa: F401 (fixture)
from tests.fixtures.zookeeper import ZooKeeperChroot

FAST = BuilderTiming(
    build_interval=0.3, upload_interval=0.3, cleanup_interval=0.5, config_interval=0.2
)


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[SimCloudFixture]:
    profile = {"clouds": [cloud_profile("qcow-cloud", image_formats=["qcow2"])]}
    with SimCloudFixture(profile, directory=tmp_path / "sim") as sim:
        yield sim


def test_build_and_upload_report_events_and_metrics(
    tmp_path: Path,
    zk_chroot: ZooKeeperChroot,
    kazoo_client: KazooClient,
    cloud: SimCloudFixture,
    mosquitto: Mosquitto,  # noqa: F811
    statsd_server: StatsdServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STATSD_HOST", statsd_server.host)
    monkeypatch.setenv("STATSD_PORT", str(statsd_server.port))
    sub = mosquitto.subscriber("nodepool/image/#")
    path = write_config(tmp_path, zk_chroot, [diskimage("debian")], [provider("qcow-cloud")])
    cfg = yaml.safe_load(path.read_text())
    cfg["mqtt"] = {"host": mosquitto.host, "port": mosquitto.port}
    path.write_text(yaml.safe_dump(cfg))
    builder = Builder(
        str(path), timing=FAST, hostname="builder.test", clouds_yaml=str(cloud.clouds_yaml)
    )
    builder.start()
    try:
        upload = wait_for(
            lambda: [
                u for u in read_uploads(kazoo_client, "qcow-cloud") if u.state == UploadState.READY
            ],
            what="a ready upload",
        )[0]
        built = sub.wait_for(lambda m: m.topic == "nodepool/image/build/ready")
        assert built.payload["image"] == "debian"
        assert built.payload["build_id"] == upload.build_id
        assert built.payload["previous_state"] == "building"
        assert built.payload["builder"] == "builder.test"
        assert "qcow2" in built.payload["formats"]
        uploaded = sub.wait_for(lambda m: m.topic == "nodepool/image/upload/ready")
        # A fast upload may be seen as created already ready (doc/events.md, observed transitions).
        assert uploaded.payload["previous_state"] in (None, "uploading")
        assert uploaded.payload == {
            **uploaded.payload,
            "image": "debian",
            "build_id": upload.build_id,
            "provider": "qcow-cloud",
            "upload_id": upload.id,
            "external_id": upload.external_id,
            "format": "qcow2",
        }

        key = "nodepool.image_update.debian.qcow-cloud"
        assert statsd_server.wait_for(key, "c") == ["1"]
        assert len(statsd_server.wait_for(key, "ms")) == 1
        assert statsd_server.wait_for("nodepool.dib_image_build.debian.status.rc", "g") == ["0"]
        statsd_server.wait_for("nodepool.dib_image_build.debian.status.duration", "ms")
        statsd_server.wait_for("nodepool.dib_image_build.debian.status.last_build", "g")
        size = statsd_server.wait_for("nodepool.dib_image_build.debian.qcow2.size", "g")
        assert int(size[0]) > 0
        statsd_server.wait_for("nodepool.builder.builder_test.upload_workers", "g", value="4")
        statsd_server.wait_for("nodepool.builder.builder_test.current_uploads", "g", value="0")
    finally:
        builder.stop()
