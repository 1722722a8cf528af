"""Upstream Nodepool 11's builder (own venv) uploading to simcloud over HTTP.

DIB is the fast stand-in (tests/fixtures/fake-disk-image-create, real qemu-img); the upload
is upstream's openstacksdk `create_image(..., wait=True)` against simcloud's image service.
The upload records it writes are then read with OUR ImageStore.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from nodepool_ng.model.image import BuildState, UploadState
from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.images import ImageStore
from tests.compat.conftest import NODEPOOL11, TlsZooKeeper, require_venv
from tests.fixtures.simcloud import SimCloudFixture, simcloud_profile
from tests.launcher import harness as h

pytestmark = pytest.mark.upstream

FAKE_DIB = Path(__file__).resolve().parents[1] / "fixtures" / "fake-disk-image-create"


def test_upstream_builder_uploads_to_simcloud(
        tmp_path: Path, tls_zookeeper: TlsZooKeeper, tls_chroot: str) -> None:
    require_venv(NODEPOOL11, "upstream Nodepool 11", "nodepool-builder")
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    cfg = {
        **tls_zookeeper.config(tls_chroot),
        "images-dir": str(images_dir), "build-log-dir": str(tmp_path / "logs"),
        "labels": [{"name": "small"}],
        "diskimages": [{"name": "ubuntu", "elements": ["debian"], "dib-cmd": str(FAKE_DIB),
                        "metadata": {"purpose": "compat"}}],
        "providers": [{
            "name": "sim", "cloud": "sim-a", "rate": 0.001,
            "diskimages": [{"name": "ubuntu", "meta": {"team": "ci"}}],
            "pools": [{"name": "main", "labels": [
                {"name": "small", "diskimage": "ubuntu", "flavor-name": "small"}]}],
        }],
    }
    with SimCloudFixture(simcloud_profile(n=1), directory=tmp_path) as sim:
        config = tmp_path / "nodepool.yaml"
        config.write_text(yaml.safe_dump(cfg))
        env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(sim.clouds_yaml)}
        env.pop("STATSD_HOST", None)
        log = tmp_path / "upstream-builder.log"
        zk = ZooKeeperClient(f"127.0.0.1:{tls_zookeeper.port}{tls_chroot}",
                             tls_cert=tls_zookeeper.cert, tls_key=tls_zookeeper.key,
                             tls_ca=tls_zookeeper.ca, operation_timeout=5)
        zk.start(timeout=10)
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(NODEPOOL11 / "bin" / "nodepool-builder"), "-c", str(config), "-f"],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        try:
            store = ImageStore(zk)
            upload = h.wait_for(
                "upstream upload ready",
                lambda: store.uploads.latest_ready_upload("ubuntu", "sim"), timeout=120)
            build = store.builds.get_build("ubuntu", upload.build_id or "")
            assert build.state is BuildState.READY and "qcow2" in build.formats
            assert upload.state is UploadState.READY and upload.format == "qcow2"
            (image,) = [i for i in sim.admin("sim-a").images() if i["id"] == upload.external_id]
            assert image["status"] == "active" and image["name"] == upload.external_name
            assert image["disk_format"] == "qcow2"
            props = image.get("properties") or image
            assert props["nodepool_build_id"] == upload.build_id
            assert props["nodepool_upload_id"] == upload.id
            assert props["nodepool_provider_name"] == "sim"
            assert props["team"] == "ci" and props["purpose"] == "compat"
        except BaseException:
            print(log.read_text()[-20000:])
            raise
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            zk.stop()
