"""A builder SIGKILLed mid-upload: after a restart no record stays `uploading` and the cloud
keeps no orphan image. The builder runs as a real `nodepool-builder` process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from nodepool_ng.model.image import UploadState
from nodepool_ng.zk import paths
from tests.builder.support import (
    THREE_CLOUDS,
    cloud_images,
    diskimage,
    provider,
    read_uploads,
    three_cloud_profile,
    wait_for,
    write_config,
)
from tests.fixtures.simcloud import SimCloudFixture
from tests.fixtures.zookeeper import ZooKeeperChroot

SLOW = "qcow-cloud"


def all_uploads(kazoo: KazooClient) -> list[tuple[str, str, dict[str, Any]]]:
    """(provider, build id, upload JSON plus its id) of every upload record."""
    return [(u.provider_name, u.build_id, {**u.to_dict(), "id": u.id}) for u in read_uploads(kazoo)]


class BuilderProcess:
    def __init__(self, config: Path, clouds_yaml: Path, log: Path) -> None:
        env = dict(os.environ, OS_CLIENT_CONFIG_FILE=str(clouds_yaml))
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nodepool_ng.cmd.builder",
                "-c",
                str(config),
                "-f",
                "--build-interval",
                "0.3",
                "--upload-interval",
                "0.3",
                "--cleanup-interval",
                "0.5",
                "--upload-retry-base",
                "0.2",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(Path(__file__).resolve().parents[2]),
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def processes() -> Iterator[list[BuilderProcess]]:
    procs: list[BuilderProcess] = []
    yield procs
    for p in procs:
        p.stop()


def test_sigkill_mid_upload_leaves_no_uploading_record_or_orphan(
    tmp_path: Path,
    zk_chroot: ZooKeeperChroot,
    kazoo_client: KazooClient,
    processes: list[BuilderProcess],
) -> None:
    with SimCloudFixture(three_cloud_profile(), directory=tmp_path / "sim") as clouds:
        # Every API call to the slow cloud takes a while: the upload is long enough to kill.
        clouds.admin(SLOW).set_faults(slow_rate=1.0, slow_delay=1.5)
        config = write_config(
            tmp_path, zk_chroot, [diskimage("debian")], [provider(c) for c in THREE_CLOUDS]
        )
        log = tmp_path / "builder.log"
        first = BuilderProcess(config, clouds.clouds_yaml, log)
        processes.append(first)

        def mid_upload() -> bool:
            uploading = [
                u
                for p, _, u in all_uploads(kazoo_client)
                if p == SLOW and u["state"] == UploadState.UPLOADING
            ]
            # The cloud already holds the (unfinished) image with our metadata.
            return bool(uploading) and bool(cloud_images(clouds.admin(SLOW)))

        wait_for(mid_upload, timeout=60, what="an upload in progress to the slow cloud")
        first.proc.kill()  # SIGKILL: no cleanup of any kind
        first.proc.wait()
        # Its request may still complete in the cloud: the image is orphaned either way.
        (orphan,) = cloud_images(clouds.admin(SLOW))
        clouds.admin(SLOW).set_faults(slow_rate=0.0)

        processes.append(BuilderProcess(config, clouds.clouds_yaml, log))

        def recovered() -> bool:
            records = all_uploads(kazoo_client)
            if any(u["state"] != UploadState.READY for _, _, u in records):
                return False
            for cloud in THREE_CLOUDS:
                ready = {u["external_id"] for p, _, u in records if p == cloud}
                images = {i["id"] for i in cloud_images(clouds.admin(cloud))}
                if not ready or images != ready:
                    return False
            return True

        try:
            wait_for(recovered, timeout=60, what="no uploading record and no orphan image")
        except AssertionError as e:
            locks = {
                p: kazoo_client.get_children(paths.upload_lock_path("debian", b, p))
                for p, b, _ in all_uploads(kazoo_client)
                if kazoo_client.exists(paths.upload_lock_path("debian", b, p))
            }
            images = {c: cloud_images(clouds.admin(c)) for c in THREE_CLOUDS}
            raise AssertionError(f"{e}: {all_uploads(kazoo_client)} locks {locks} {images}") from e
        assert orphan["id"] not in {i["id"] for i in clouds.admin(SLOW).images()}
        assert "Traceback" not in log.read_text()
