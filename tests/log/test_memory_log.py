"""``MemoryLog`` beyond the contract: driven without an event loop, its disk image, and
``recover`` — which must decide exactly as ``Wal.open`` does on the same bytes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.log.helpers import SMALL, batch
from walrep.errors import CorruptLogError
from walrep.log import DiskImage, FsyncPolicy, MemoryLog, ReplicaState, SegmentImage, Wal
from walrep.log.epochs import EpochEntry, FileEpochStore
from walrep.log.frame import build_frame
from walrep.log.limits import save_limits
from walrep.log.replica_state import save_replica_state
from walrep.log.segment import segment_name

T = TypeVar("T")
LAZY = dataclasses.replace(SMALL, fsync_policy=FsyncPolicy.NEVER)


def run_now(call: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that must not suspend, without an event loop."""
    try:
        call.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    call.close()
    raise AssertionError("the memory log suspended")


def test_async_methods_never_suspend_so_no_loop_is_needed() -> None:
    log = MemoryLog.create(LAZY)
    assert run_now(log.append(batch(0, 2), epoch=1)).base_offset == 0
    assert run_now(log.append_encoded(log.encode(batch(2, 1)), epoch=1)).base_offset == 2
    frame = build_frame(log.encode(batch(3, 2)), base_offset=3, epoch=2, ingest_time_ms=5)
    assert run_now(log.append_frames(frame)).end_offset == 5
    assert log.durable_end == 0
    run_now(log.wait_durable(0))  # durable already: no wait
    assert run_now(log.sync()) == 5
    run_now(log.wait_durable(5))
    run_now(log.aclose())
    assert [r.offset for r in MemoryLog.recover(log.disk_image()).read()] == [0, 1, 2, 3, 4]


def test_sync_to_makes_durable_what_an_fsync_started_then_covers() -> None:
    log = MemoryLog.create(LAZY)
    announced: list[int] = []
    log.add_durable_listener(announced.append)
    for i in range(4):
        log.append_sync(batch(i * 2, 2), epoch=1)
    started_at = log.log_end
    log.append_sync(batch(8, 2), epoch=1)  # written after the fsync started
    log.sync_to(started_at)
    assert (log.durable_end, announced) == (8, [8])
    [segment] = log.disk_image().segments
    assert segment.durable_bytes < len(segment.data)
    log.sync_to(5)  # an older fsync completing late changes nothing
    assert (log.durable_end, announced) == (8, [8])
    log.sync_to(log.log_end)
    assert (log.durable_end, announced) == (10, [8, 10])


def crash(image: DiskImage, keep_unsynced: int, torn: bytes = b"") -> DiskImage:
    """What survives a crash: the durable bytes, ``keep_unsynced`` more, a torn piece."""
    last = image.segments[-1]
    data = last.data[: last.durable_bytes + keep_unsynced] + torn
    return dataclasses.replace(
        image, segments=(*image.segments[:-1], SegmentImage(last.base_offset, data, len(data)))
    )


def lazy_log_with_unsynced_tail() -> tuple[MemoryLog, int]:
    log = MemoryLog.create(LAZY)
    while len(log.segments()) < 3:
        log.append_sync(batch(log.log_end, 2, pad=60), epoch=1 + log.log_end // 20)
    log.sync_to(log.log_end)
    durable = log.log_end
    for _ in range(3):
        log.append_sync(batch(log.log_end, 2), epoch=log.last_epoch + 1)  # new epochs too
    return log, durable


def test_recover_keeps_the_durable_prefix_and_cuts_a_torn_tail() -> None:
    log, durable = lazy_log_with_unsynced_tail()
    image = log.disk_image()
    last = image.segments[-1]
    unsynced = last.data[last.durable_bytes :]
    frame_bytes = next(iter(log.frames(durable))).header.frame_bytes  # one unsynced survives
    crashed = crash(image, frame_bytes, torn=unsynced[frame_bytes : frame_bytes + 30])
    again = MemoryLog.recover(crashed, LAZY)
    assert again.log_end == durable + 2
    report = again.recovery
    assert report.torn_segment == f"memory:{segment_name(last.base_offset)}"
    assert (report.torn_position, report.torn_bytes) == (last.durable_bytes + frame_bytes, 30)
    assert list(again.read()) == list(log.read(None, durable + 2))
    # The history lost the epochs that start at or past the end of what survived.
    kept = tuple(e for e in log.epochs.entries if e.start_offset < again.log_end)
    assert again.epochs.entries == kept and len(kept) < len(log.epochs.entries)
    assert all(again.epochs.epoch_at(r.offset) == r.epoch for r in again.read())
    assert again.durable_end == again.log_end


def test_recover_refuses_damage_unless_asked_to_repair() -> None:
    log, _ = lazy_log_with_unsynced_tail()
    log.sync_to(log.log_end)
    log.save_replica_state(ReplicaState(committed_floor=log.log_end - 2, highest_epoch=9))
    image = log.disk_image()
    sealed = image.segments[1]
    frames = [f for f in log.frames() if f.segment.endswith(segment_name(sealed.base_offset))]
    victim = frames[1]
    data = bytearray(sealed.data)
    data[victim.position + 50] ^= 4
    damaged = dataclasses.replace(
        image,
        segments=(
            image.segments[0],
            dataclasses.replace(sealed, data=bytes(data)),
            *image.segments[2:],
        ),
    )
    with pytest.raises(CorruptLogError) as info:
        MemoryLog.recover(damaged)
    assert (info.value.segment, info.value.position, info.value.offset) == (
        victim.segment,
        victim.position,
        victim.header.base_offset,
    )
    repaired = MemoryLog.recover(damaged, repair=True)
    base = victim.header.base_offset
    assert repaired.log_end == base and len(repaired.segments()) == 2
    assert repaired.replica_state == ReplicaState(committed_floor=base, highest_epoch=9)
    lines = repaired.recovery.repaired
    assert len(lines) == 2 and victim.segment in lines[0]
    assert lines[1] == f"committed floor lowered from {log.log_end - 2} to the log end {base}"


# --- the same decisions as Wal.open -------------------------------------------------------


def write_directory(image: DiskImage, directory: Path) -> Path:
    """The files ``Wal`` would have for ``image`` (no indexes: every segment is scanned)."""
    directory.mkdir()
    for segment in image.segments:
        (directory / segment_name(segment.base_offset)).write_bytes(segment.data)
    FileEpochStore(directory / "epochs").save(image.epochs)
    save_replica_state(directory, image.replica_state)
    save_limits(directory, image.limits)
    return directory


Outcome = tuple[Any, ...]


def outcome(open_log: Callable[[], Wal | MemoryLog]) -> Outcome:
    """What opening gave: the log and its report, or the error (file names reduced)."""
    try:
        log = open_log()
    except CorruptLogError as e:
        return ("corrupt", Path(e.segment).name.removeprefix("memory:"), e.position, e.offset)
    report = log.recovery
    result = (
        log.log_start,
        log.log_end,
        [(r.offset, r.epoch, r.event) for r in log.read()],
        log.epochs.entries,
        log.replica_state,
        report.torn_segment and Path(report.torn_segment).name.removeprefix("memory:"),
        report.torn_position,
        report.torn_bytes,
        len(report.repaired),
    )
    log.close()
    return result


def damage_cases() -> dict[str, DiskImage]:
    log, durable = lazy_log_with_unsynced_tail()
    image = log.disk_image()
    last = image.segments[-1]
    unsynced = len(last.data) - last.durable_bytes
    frames = list(log.frames())
    sealed = image.segments[1]
    in_sealed = next(f for f in frames if f.segment.endswith(segment_name(sealed.base_offset)))
    flipped = bytearray(sealed.data)
    flipped[in_sealed.position + 60] ^= 1
    flipped_last = bytearray(last.data)
    flipped_last[last.durable_bytes + 45] ^= 2
    return {
        "clean": crash(image, unsynced),
        "unsynced lost": crash(image, 0),
        "torn tail": crash(image, 0, torn=last.data[last.durable_bytes : last.durable_bytes + 50]),
        "zeros after the durable bytes": crash(image, 0, torn=b"\0" * 100),
        "damage in the last segment": dataclasses.replace(
            image,
            segments=(*image.segments[:-1], dataclasses.replace(last, data=bytes(flipped_last))),
        ),
        "damage in a sealed segment": dataclasses.replace(
            image,
            segments=(image.segments[0], dataclasses.replace(sealed, data=bytes(flipped)), last),
        ),
        "history past the end and missing the newest epoch": dataclasses.replace(
            crash(image, 0),
            epochs=(EpochEntry(1, 0), EpochEntry(50, durable + 1000)),
        ),
        "floor above what survived": dataclasses.replace(
            crash(image, 0), replica_state=ReplicaState(committed_floor=durable + 2)
        ),
    }


@pytest.mark.parametrize("repair", [False, True], ids=["open", "repair"])
@pytest.mark.parametrize("case", sorted(damage_cases()))
def test_recover_decides_as_wal_open(tmp_path: Path, case: str, repair: bool) -> None:
    image = damage_cases()[case]
    directory = write_directory(image, tmp_path / "log")
    by_wal = outcome(lambda: Wal.open(directory, SMALL, repair=repair))
    by_memory = outcome(lambda: MemoryLog.recover(image, SMALL, repair=repair))
    assert by_memory == by_wal
    if case == "clean":
        assert by_wal[1] > 0 and by_wal[5] is None
