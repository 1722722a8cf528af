"""The builder daemon's build side against real ZooKeeper, with the stand-in DIB."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from nodepool_ng.builder import formats
from nodepool_ng.builder.service import Builder, BuilderTiming
from nodepool_ng.cmd import builder as builder_cmd
from nodepool_ng.errors import ConfigError
from nodepool_ng.model.image import BuildState, ImageBuild
from nodepool_ng.zk import paths
from tests.builder.support import diskimage, read_builds, wait_for, write_config
from tests.fixtures.zookeeper import ZooKeeperChroot

FAST = BuilderTiming(
    build_interval=0.3, upload_interval=0.3, cleanup_interval=0.5, config_interval=0.2
)


@pytest.fixture
def run_builder() -> Iterator[list[Builder]]:
    started: list[Builder] = []
    yield started
    for b in started:
        b.stop()


def start(started: list[Builder], config: Path, **kw: object) -> Builder:
    b = Builder(str(config), timing=FAST, hostname="builder-test", **kw)  # type: ignore[arg-type]
    started.append(b)
    b.start()
    return b


def builds(kazoo: KazooClient, image: str) -> list[ImageBuild]:
    return read_builds(kazoo, image)


def test_build_converts_and_records(
    tmp_path: Path,
    zk_chroot: ZooKeeperChroot,
    kazoo_client: KazooClient,
    run_builder: list[Builder],
) -> None:
    record = tmp_path / "dib.jsonl"
    config = write_config(
        tmp_path,
        zk_chroot,
        [
            diskimage(
                "debian", formats=["vhd", "qcow2"], **{"env-vars": {"FAKE_DIB_RECORD": str(record)}}
            ),
        ],
    )
    builder = start(run_builder, config)
    (build,) = wait_for(
        lambda: [b for b in builds(kazoo_client, "debian") if b.state == BuildState.READY],
        what="a ready build",
    )
    raw = json.loads(kazoo_client.get(paths.build_path("debian", build.id or ""))[0])
    assert raw["formats"] == "qcow2,vhd"
    assert raw["builder"] == "builder-test"
    builder_id = (tmp_path / "images" / "builder_id.txt").read_text().strip()
    assert raw["builder_id"] == builder_id
    assert raw["username"] == "zuul"
    # DIB wrote qcow2 only; vhd came from qemu-img, both checksummed.
    (run,) = [json.loads(line) for line in record.read_text().splitlines()]
    assert run["argv"][:3] == ["-x", "-t", "qcow2"]
    base = str(tmp_path / "images" / f"debian-{build.id}")
    for fmt in ("qcow2", "vhd"):
        assert formats.checksums_valid(formats.image_path(base, fmt))
    assert (tmp_path / "logs" / f"debian-{build.id}.log").exists()
    # Registered as a builder component.
    (comp,) = kazoo_client.get_children(paths.component_root("builder"))
    data = json.loads(kazoo_client.get(f"{paths.component_root('builder')}/{comp}")[0])
    assert data["kind"] == "builder" and data["state"] == "running"
    builder.stop()
    assert kazoo_client.get_children(paths.component_root("builder")) == []


def test_dib_failure_marks_build_failed_with_log(
    tmp_path: Path,
    zk_chroot: ZooKeeperChroot,
    kazoo_client: KazooClient,
    run_builder: list[Builder],
) -> None:
    config = write_config(
        tmp_path,
        zk_chroot,
        [
            diskimage("broken", formats=["qcow2"], **{"env-vars": {"FAKE_DIB_FAIL": "1"}}),
        ],
    )
    start(run_builder, config)
    failed = wait_for(
        lambda: [b for b in builds(kazoo_client, "broken") if b.state == BuildState.FAILED],
        what="a failed build",
    )
    build = failed[0]
    log_path = str(tmp_path / "logs" / f"broken-{build.id}.log")
    assert log_path in build.extra["error"]
    assert "exited with status 1" in build.extra["error"]
    assert "failing on demand" in Path(log_path).read_text()
    assert not [n for n in os.listdir(tmp_path / "images") if n.startswith("broken-")]


def test_manual_build_request_and_pause(
    tmp_path: Path,
    zk_chroot: ZooKeeperChroot,
    kazoo_client: KazooClient,
    run_builder: list[Builder],
) -> None:
    config = write_config(tmp_path, zk_chroot, [diskimage("debian", formats=["raw"])])
    builder = start(run_builder, config)
    (first,) = wait_for(
        lambda: [b for b in builds(kazoo_client, "debian") if b.state == BuildState.READY],
        what="first build",
    )
    assert builder.ctx is not None
    builder.ctx.images.flags.request_build("debian")
    ready = wait_for(
        lambda: [b for b in builds(kazoo_client, "debian") if b.state == BuildState.READY][1:],
        what="the requested build",
    )
    assert ready[0].id != first.id
    wait_for(
        lambda: not kazoo_client.exists(paths.image_request_build_path("debian")),
        what="request removed",
    )
    # Paused: a request stays pending and nothing is built.
    builder.ctx.images.flags.set_paused("debian", True)
    builder.ctx.images.flags.request_build("debian")
    builder.wake_builds()
    passes = builder.build_workers[0].passes
    wait_for(lambda: builder.build_workers[0].passes >= passes + 2, what="two build passes")
    assert len(builds(kazoo_client, "debian")) == 2
    assert kazoo_client.exists(paths.image_request_build_path("debian"))


def test_rebuild_age_triggers_rebuild_and_rotation_keeps_two(
    tmp_path: Path,
    zk_chroot: ZooKeeperChroot,
    kazoo_client: KazooClient,
    run_builder: list[Builder],
) -> None:
    config = write_config(
        tmp_path,
        zk_chroot,
        [
            diskimage("debian", formats=["qcow2"], **{"rebuild-age": 1}),
        ],
    )
    start(run_builder, config, build_workers=1)
    seen: set[str] = set()

    def three_builds_seen() -> bool:
        seen.update(b.id or "" for b in builds(kazoo_client, "debian"))
        return len(seen) >= 3

    wait_for(three_builds_seen, what="three builds")
    # Rotation: never more than 2 ready builds once cleanup ran.
    wait_for(
        lambda: (
            len([b for b in builds(kazoo_client, "debian") if b.state == BuildState.READY]) <= 2
        ),
        what="rotation",
    )
    on_disk = {n.split(".")[0] for n in os.listdir(tmp_path / "images") if n.endswith(".qcow2")}
    assert len(on_disk) <= 3  # two kept, perhaps one being built


@pytest.mark.parametrize(
    ("images", "providers", "message"),
    [
        ([diskimage("a", parent="nope")], [], "diskimages[0].parent: unknown diskimage 'nope'"),
        ([{"name": "bare"}], [], "diskimages[0].elements: diskimage 'bare' has no elements"),
        (
            [diskimage("a")],
            [{"name": "p1", "cloud": "c1", "diskimages": [{"name": "ghost"}]}],
            "providers[0].diskimages[0]",
        ),
    ],
)
def test_bad_diskimage_config_is_a_clear_error(
    tmp_path: Path,
    zk_chroot: ZooKeeperChroot,
    capsys: pytest.CaptureFixture[str],
    images: list[dict[str, object]],
    providers: list[dict[str, object]],
    message: str,
) -> None:
    config = write_config(tmp_path, zk_chroot, images, providers)
    with pytest.raises(ConfigError) as err:
        Builder(str(config)).start()
    assert message in str(err.value)
    assert builder_cmd.main(["-c", str(config), "-f"]) == 1
    err_text = capsys.readouterr().err
    assert err_text.startswith("nodepool-builder: error: ")
    assert message in err_text and "Traceback" not in err_text
