"""The builder's pure decisions: when to build, what to upload, what rotation keeps."""

from __future__ import annotations

from nodepool_ng.builder import policy
from nodepool_ng.model.image import BuildState, ImageBuild, ImageUpload, UploadState


def build(bid: str, state: BuildState, t: float, fmts: tuple[str, ...] = ("qcow2",)) -> ImageBuild:
    return ImageBuild(image_name="img", id=bid, state=state, state_time=t, formats=list(fmts))


def upload(bid: str, uid: str, state: UploadState, t: float) -> ImageUpload:
    return ImageUpload(
        image_name="img", build_id=bid, provider_name="p", id=uid, state=state, state_time=t
    )


def test_build_reasons() -> None:
    now = 10_000.0
    assert policy.build_reason([], ["qcow2"], 3600, now) == "no ready build"
    failed = [build("a", BuildState.FAILED, now - 10)]
    assert policy.build_reason(failed, ["qcow2"], 3600, now) == "no ready build"
    fresh = [build("a", BuildState.READY, now - 10), build("b", BuildState.READY, now - 9000)]
    assert policy.build_reason(fresh, ["qcow2"], 3600, now) is None
    reason = policy.build_reason(fresh, ["qcow2"], 5, now)
    assert reason is not None and "rebuild-age" in reason and "a" in reason
    reason = policy.build_reason(fresh, ["qcow2", "vhd"], 3600, now)
    assert reason is not None and "lacks formats vhd" in reason
    assert policy.build_reason(fresh, ["qcow2"], 3600, now, requested=True) == (
        "manual build requested"
    )


def test_build_to_upload_newest_only() -> None:
    old = build("old", BuildState.READY, 1)
    new = build("new", BuildState.READY, 2, ("qcow2", "vhd"))
    building = build("wip", BuildState.BUILDING, 3)
    builds = [old, new, building]
    assert policy.build_to_upload(builds, {}, "vhd") is new
    done = {"new": [upload("new", "0000000001", UploadState.READY, 5)]}
    assert policy.build_to_upload(builds, done, "vhd") is None
    busy = {"new": [upload("new", "0000000001", UploadState.UPLOADING, 5)]}
    assert policy.build_to_upload(builds, busy, "vhd") is None
    failed = {"new": [upload("new", "0000000001", UploadState.FAILED, 5)]}
    assert policy.build_to_upload(builds, failed, "vhd") is new
    # The newest build lacks raw: an older one that has it is the candidate.
    assert policy.build_to_upload([new, build("r", BuildState.READY, 1, ("raw",))], {}, "raw")


def test_rotation_keeps_two_newest() -> None:
    builds = [
        build("b1", BuildState.READY, 1),
        build("b2", BuildState.READY, 2),
        build("b3", BuildState.READY, 3),
        build("b4", BuildState.FAILED, 4),
        build("b5", BuildState.BUILDING, 5),
    ]
    # The newest failure stays visible while it is newer than every ready build.
    assert policy.builds_to_keep(builds) == {"b2", "b3", "b4"}
    assert policy.builds_to_keep([*builds, build("b6", BuildState.READY, 6)]) == {"b3", "b6"}
    uploads = [
        upload("b1", "0000000001", UploadState.READY, 1),
        upload("b2", "0000000001", UploadState.READY, 2),
        upload("b3", "0000000001", UploadState.READY, 3),
        upload("b3", "0000000002", UploadState.FAILED, 4),
    ]
    assert policy.uploads_to_keep(uploads) == {"p/b2/0000000001", "p/b3/0000000001"}
    for u in uploads[:3]:
        u.external_id = f"ext-{u.build_id}"
    newest = policy.newest_ready_upload(
        [*uploads[:3], upload("b9", "0000000009", UploadState.READY, 9)]
    )
    assert newest is not None and newest.build_id == "b3"  # b9 has no external id


def test_retry_delay_backs_off() -> None:
    assert [policy.retry_delay(n, 1, 10) for n in (1, 2, 3, 4, 5, 6)] == [1, 2, 4, 8, 10, 10]
