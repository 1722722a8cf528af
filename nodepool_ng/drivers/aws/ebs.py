"""Raw disk image -> EBS snapshot through the EBS direct APIs (no S3, no VM Import).

StartSnapshot, then PutSnapshotBlock for every 512 KiB block that is not all zeros (a new
snapshot reads zeros wherever nothing was written), each with its SHA256 in base64, a few
blocks in flight at once, then CompleteSnapshot with the number of blocks written. The
caller waits for the snapshot to be `completed` and registers the AMI.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

BLOCK_SIZE = 512 * 1024  # the EBS direct APIs' only block size
GIB = 1024 ** 3
_ZEROS = bytes(BLOCK_SIZE)


def volume_size_gib(filename: str, minimum: int | None = None) -> int:
    """The snapshot's size: the file rounded up to whole GiB (at least `minimum`, and 1)."""
    size = math.ceil(os.path.getsize(filename) / GIB)
    return max(size, minimum or 0, 1)


def data_blocks(filename: str) -> Iterator[tuple[int, bytes]]:
    """(index, data) of every block holding something other than zeros; the last block is
    padded with zeros to the full block size."""
    with open(filename, "rb") as f:
        index = 0
        while True:
            block = f.read(BLOCK_SIZE)
            if not block:
                return
            if len(block) < BLOCK_SIZE:
                block += bytes(BLOCK_SIZE - len(block))
            if block != _ZEROS:
                yield index, block
            index += 1


def checksum(block: bytes) -> str:
    return base64.b64encode(hashlib.sha256(block).digest()).decode("ascii")


def tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": str(k)[:128], "Value": str(v)[:256]} for k, v in tags.items()]


def upload_snapshot(ebs: Any, filename: str, *, tags: Mapping[str, str], description: str,
                    deadline: float, workers: int = 8, volume_size: int | None = None,
                    on_started: Callable[[str], None] | None = None) -> tuple[str, int]:
    """Write `filename` into a new snapshot; returns (snapshot id, blocks written).

    `on_started(snapshot_id)` is called as soon as the snapshot exists, so a caller can clean
    it up when a later step fails. Raises what boto3 raises, or TimeoutError at `deadline`
    (time.monotonic())."""
    size = volume_size_gib(filename, volume_size)
    minutes = max(10, min(4320, math.ceil((deadline - time.monotonic()) / 60)))
    started = ebs.start_snapshot(VolumeSize=size, Tags=tag_list(tags), Description=description,
                                 Timeout=minutes)
    snapshot_id = str(started["SnapshotId"])
    if on_started is not None:
        on_started(snapshot_id)
    written = 0
    failed = threading.Event()

    def put(index: int, block: bytes) -> None:
        if failed.is_set():
            return
        ebs.put_snapshot_block(SnapshotId=snapshot_id, BlockIndex=index, BlockData=block,
                               DataLength=BLOCK_SIZE, Checksum=checksum(block),
                               ChecksumAlgorithm="SHA256")

    pending: set[Future[None]] = set()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ebs-put") as pool:
        try:
            for index, block in data_blocks(filename):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"snapshot {snapshot_id}: upload not done in time")
                while len(pending) >= workers * 2:  # bounded memory: a few blocks in flight
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        future.result()
                pending.add(pool.submit(put, index, block))
                written += 1
            for future in pending:
                future.result()
        except BaseException:
            failed.set()
            raise
    ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=written)
    return snapshot_id, written
