"""Rules of the ``Wal`` API: epochs and fencing, limits, crash-safe truncation,
retention, the directory lock, housekeeping on open, closing, and fsync policies.
"""

from __future__ import annotations

import os
from pathlib import Path

import google_crc32c
import pytest

from tests.log.helpers import (
    SMALL,
    TINY,
    batch,
    copy_log,
    dir_snapshot,
    event,
    frame_positions,
    index_files,
    pairs,
    segment_files,
)
from walrep.errors import (
    ClosedError,
    CorruptLogError,
    FencedError,
    InvalidEventError,
    LimitExceededError,
    LogError,
    OffsetOutOfRangeError,
)
from walrep.log import Event, FsyncPolicy, LogConfig, Record, Wal
from walrep.log.epochs import EpochEntry
from walrep.log.frame import FLAG_LZ4
from walrep.log.truncate import _HEAD, _MAGIC, MARKER

# --- epochs --------------------------------------------------------------------------------


def test_a_lower_epoch_is_fenced_and_writes_nothing(tmp_path: Path) -> None:
    with Wal.open(tmp_path / "log", SMALL) as wal:
        wal.append_sync(batch(0, 3), epoch=3)
        before = (wal.log_end, wal.epochs.entries, dir_snapshot(tmp_path / "log"))
        with pytest.raises(FencedError) as info:
            wal.append_sync(batch(3, 2), epoch=2)
        assert (info.value.seen, info.value.current) == (2, 3)
        assert (wal.log_end, wal.epochs.entries, dir_snapshot(tmp_path / "log")) == before
        assert wal.append_sync(batch(3, 1), epoch=3).base_offset == 3  # same epoch: fine


async def test_a_lower_epoch_is_fenced_in_async_appends_too(tmp_path: Path) -> None:
    wal = Wal.open(tmp_path / "log", SMALL)
    await wal.append(batch(0, 2), epoch=5)
    before = dir_snapshot(tmp_path / "log")
    with pytest.raises(FencedError):
        await wal.append(batch(2, 2), epoch=4)
    with pytest.raises(FencedError):
        await wal.append_encoded(wal.encode(batch(2, 2)), epoch=1)
    assert wal.log_end == 2 and dir_snapshot(tmp_path / "log") == before
    await wal.aclose()


def build_epochs(directory: Path) -> None:
    """Epoch 1 writes [0, 5), epoch 3 writes [5, 9), epoch 4 writes [9, 11)."""
    with Wal.open(directory, SMALL) as wal:
        wal.append_sync(batch(0, 5), epoch=1)
        wal.append_sync(batch(5, 2), epoch=3)
        wal.append_sync(batch(7, 2), epoch=3)
        wal.append_sync(batch(9, 2), epoch=4)


def test_epoch_history_is_persisted_and_answers_the_kip101_question(tmp_path: Path) -> None:
    build_epochs(tmp_path / "log")
    with Wal.open(tmp_path / "log", SMALL) as wal:
        assert wal.epochs.entries == (EpochEntry(1, 0), EpochEntry(3, 5), EpochEntry(4, 9))
        assert wal.last_epoch == 4
        assert [r.epoch for r in wal.read()] == [1] * 5 + [3] * 4 + [4] * 2
        assert [wal.epochs.epoch_at(o) for o in (0, 4, 5, 8, 9, 10)] == [1, 1, 3, 3, 4, 4]
        end = wal.log_end
        answers = {e: wal.epochs.end_offset(e, end) for e in range(0, 7)}
        assert answers == {
            0: (0, 0),  # every epoch here is newer: nothing in common
            1: (1, 5),
            2: (1, 5),  # unknown epoch: the largest one below it, and where it ends
            3: (3, 9),
            4: (4, 11),
            5: (4, 11),
            6: (4, 11),
        }


@pytest.mark.parametrize(
    ("cut", "entries"),
    [
        (10, [(1, 0), (3, 5), (4, 9)]),
        (9, [(1, 0), (3, 5)]),  # epoch 4 started exactly at the cut: gone
        (6, [(1, 0), (3, 5)]),
        (5, [(1, 0)]),
        (0, []),
    ],
)
def test_truncate_after_drops_epochs_starting_at_or_after_the_cut(
    tmp_path: Path, cut: int, entries: list[tuple[int, int]]
) -> None:
    build_epochs(tmp_path / "log")
    with Wal.open(tmp_path / "log", SMALL) as wal:
        wal.truncate_after(cut)
        assert [(e.epoch, e.start_offset) for e in wal.epochs.entries] == entries
    with Wal.open(tmp_path / "log", SMALL) as wal:
        assert [(e.epoch, e.start_offset) for e in wal.epochs.entries] == entries
        assert wal.log_end == cut
        # The epochs that were cut away may be used again (a follower catching up).
        epoch = max([1, *[e for e, _ in entries]])
        wal.append_sync(batch(cut, 1), epoch=epoch)
        assert wal.epochs.end_offset(epoch, wal.log_end) == (epoch, cut + 1)


# --- limits -------------------------------------------------------------------------------


async def test_oversized_or_invalid_input_is_refused_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    wal = Wal.open(tmp_path / "log", SMALL)
    wal.append_sync(batch(0, 2), epoch=1)
    before = (wal.log_end, dir_snapshot(tmp_path / "log"))
    big_event = [Event("s", {"v": "x" * SMALL.max_event_bytes})]
    big_batch = [Event("s", {"v": "x" * 200, "i": i}) for i in range(4)]  # > 512 raw
    for events in (big_event, big_batch):
        with pytest.raises(LimitExceededError) as info:
            wal.append_sync(events, epoch=1)
        assert info.value.size > info.value.limit
        with pytest.raises(LimitExceededError):
            await wal.append(events, epoch=1)
        with pytest.raises(LimitExceededError):
            wal.encode(events)
    with pytest.raises(InvalidEventError):
        await wal.append([event(1), Event("", {})], epoch=1)
    assert (wal.log_end, dir_snapshot(tmp_path / "log")) == before
    assert (await wal.append(batch(2, 1), epoch=1)).base_offset == 2  # still usable
    await wal.aclose()


# --- truncation -------------------------------------------------------------------------------


def test_truncation_inside_a_batch_keeps_its_earlier_events(tmp_path: Path) -> None:
    with Wal.open(tmp_path / "log", SMALL) as wal:
        wal.append_sync(batch(0, 2), epoch=1, ingest_time_ms=100)
        wal.append_sync(batch(2, 5, pad=40), epoch=2, ingest_time_ms=200)  # lz4 frame
        wal.append_sync(batch(7, 3), epoch=2, ingest_time_ms=300)
        assert [f.header.flags & FLAG_LZ4 for f in wal.frames()][:2] == [0, FLAG_LZ4]
        wal.truncate_after(4)
        assert wal.log_end == 4
        expected = [Record(o, 1, 100, event(o)) for o in range(2)]
        expected += [Record(o, 2, 200, event(o, pad=40)) for o in range(2, 4)]
        assert list(wal.read()) == expected
        assert wal.append_sync(batch(4, 1), epoch=2).base_offset == 4
        with pytest.raises(OffsetOutOfRangeError):
            wal.truncate_after(6)  # beyond the end
    with Wal.open(tmp_path / "log", SMALL) as wal:
        assert wal.recovery.lines() == []
        assert list(wal.read())[:4] == expected and wal.log_end == 5


@pytest.fixture(scope="module")
def multi_segment_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("trunc") / "log"
    with Wal.open(directory, SMALL) as wal:
        n = 0
        while len(wal.segments()) < 4:
            epoch = 1 + n // 20
            wal.append_sync(batch(n, 1 + n % 4, pad=60 * (n % 2)), epoch=epoch, ingest_time_ms=n)
            n = wal.log_end
    return directory


def write_intent(
    directory: Path, target: int, segment_base: int, position: int, repl: bytes
) -> None:
    """The intent record truncate_segments makes durable first (layout in truncate.py)."""
    body = _HEAD.pack(_MAGIC, 1, 0, target, segment_base, position, len(repl))[9:] + repl
    crc = google_crc32c.value(body)
    (directory / MARKER).write_bytes(_MAGIC + b"\x01" + crc.to_bytes(4, "little") + body)


CRASH_POINTS = [
    "intent only",
    "newest later segment deleted",
    "later segments deleted",
    "segment cut, replacement not written",
    "replacement half written",
    "applied, intent left behind",
]


def target_cases(directory: Path) -> dict[str, int]:
    with Wal.open(directory, SMALL) as wal:
        segments = wal.segments()
        frames = list(wal.frames())
    in_batch = next(f for f in frames if f.header.count >= 3 and f.segment == str(segments[1][3]))
    boundary = next(f for f in frames[1:] if f.segment == str(segments[1][3]) and f.position > 0)
    return {
        "inside a batch": in_batch.header.base_offset + 1,
        "at a frame boundary": boundary.header.base_offset,
        "at a segment's base": segments[2][0],
        "in the last segment": segments[-1][1] - 1,
    }


@pytest.mark.parametrize("crash", CRASH_POINTS)
@pytest.mark.parametrize(
    "where", ["inside a batch", "at a frame boundary", "at a segment's base", "in the last segment"]
)
def test_open_finishes_an_interrupted_truncation(
    multi_segment_log: Path, tmp_path: Path, crash: str, where: str
) -> None:
    target = target_cases(multi_segment_log)[where]
    # The reference: the same truncation, uninterrupted.
    reference = copy_log(multi_segment_log, tmp_path / "reference")
    with Wal.open(reference, SMALL) as wal:
        original = list(wal.read())
        wal.truncate_after(target)
    expected_files = dir_snapshot(reference)

    work = copy_log(multi_segment_log, tmp_path / "work")
    bases = [int(p.stem) for p in segment_files(work)]
    seg_base = max(b for b in bases if b <= target)
    seg = work / f"{seg_base:020d}.wal"
    frames = frame_positions(seg.read_bytes(), SMALL.max_batch_bytes)
    position = max(pos for pos, _, base in frames if base <= target)
    kept = (reference / seg.name).read_bytes()
    assert kept[:position] == seg.read_bytes()[:position]
    replacement = kept[position:]
    assert (replacement == b"") == any(base == target for _, _, base in frames)

    write_intent(work, target, seg_base, position, replacement)
    later = [work / f"{b:020d}.wal" for b in bases if b > seg_base]
    steps = CRASH_POINTS.index(crash)
    if steps >= 1 and later:
        later[-1].unlink()
        later[-1].with_suffix(".idx").unlink(missing_ok=True)
    if steps >= 2:
        for p in later:
            p.unlink(missing_ok=True)
            p.with_suffix(".idx").unlink(missing_ok=True)
        seg.with_suffix(".idx").unlink(missing_ok=True)
    if steps >= 3:
        os.truncate(seg, position)
    if steps >= 4:
        with seg.open("r+b") as f:
            f.seek(position)
            f.write(replacement[: len(replacement) // 2 if steps == 4 else None])

    with Wal.open(work, SMALL) as wal:
        assert wal.recovery.truncation_redone_to == target
        assert wal.log_end == target
        assert list(wal.read()) == original[:target]
    assert not (work / MARKER).exists()
    assert dir_snapshot(work) == expected_files
    with Wal.open(work, SMALL) as wal:
        assert wal.recovery.lines() == []


def test_a_damaged_intent_record_is_refused(multi_segment_log: Path, tmp_path: Path) -> None:
    work = copy_log(multi_segment_log, tmp_path / "work")
    write_intent(work, 3, 0, 0, b"")
    data = bytearray((work / MARKER).read_bytes())
    data[12] ^= 1
    (work / MARKER).write_bytes(bytes(data))
    before = dir_snapshot(work)
    with pytest.raises(CorruptLogError) as info:
        Wal.open(work, SMALL)
    assert info.value.segment == str(work / MARKER)
    assert dir_snapshot(work) == before


# --- retention and reading bounds -------------------------------------------------------


def test_delete_before_keeps_the_last_segment_and_is_idempotent(
    multi_segment_log: Path, tmp_path: Path
) -> None:
    work = copy_log(multi_segment_log, tmp_path / "work")
    with Wal.open(work, SMALL) as wal:
        original = list(wal.read())
        segments = wal.segments()
        second = segments[1][0]
        assert wal.delete_before(second - 1) == 0  # the first segment still holds second - 1
        assert wal.delete_before(second) == second
        assert not segments[0][3].exists() and not segments[0][3].with_suffix(".idx").exists()
        assert list(wal.read()) == original[second:]
        with pytest.raises(OffsetOutOfRangeError) as info:
            list(wal.read(second - 1))
        assert (info.value.log_start, info.value.log_end) == (second, wal.log_end)
        with pytest.raises(OffsetOutOfRangeError):
            wal.truncate_after(second - 1)

        end = wal.log_end
        last_base = segments[-1][0]
        assert wal.delete_before(end + 1000) == last_base  # never the newest segment
        files = dir_snapshot(work)
        assert wal.delete_before(end + 1000) == last_base  # idempotent
        assert wal.delete_before(0) == last_base  # and never moves back
        assert dir_snapshot(work) == files
        assert [p.name for p in segment_files(work)] == [segments[-1][3].name]
        assert list(wal.read()) == original[last_base:]
        assert wal.append_sync(batch(end, 1), epoch=wal.last_epoch).base_offset == end
    with Wal.open(work, SMALL) as wal:
        assert wal.log_start == last_base and wal.log_end == end + 1
        assert wal.recovery.lines() == []


def test_read_bounds(multi_segment_log: Path) -> None:
    with Wal.open(multi_segment_log, SMALL) as wal:
        everything = list(wal.read())
        end = wal.log_end
        for start in range(0, end, 3):
            stop = min(end, start + 5)
            assert list(wal.read(start, stop)) == everything[start:stop]
            frames = list(wal.frames(start, stop))
            assert frames[0].header.base_offset <= start < frames[0].header.end_offset
            assert frames[-1].header.end_offset >= stop
        assert list(wal.read(end)) == []
        with pytest.raises(OffsetOutOfRangeError):
            list(wal.read(end + 1))


def test_a_reader_never_sees_cut_or_deleted_data(multi_segment_log: Path, tmp_path: Path) -> None:
    work = copy_log(multi_segment_log, tmp_path / "work")
    with Wal.open(work, SMALL) as wal:
        original = list(wal.read())
        segments = wal.segments()
        # A cut exactly at the reader's position is harmless: it reads on, into the new events
        # (a cut below it raises LogTruncatedError: test_log_contract.py).
        cut = segments[1][0] + 1
        reader = wal.read(0)
        seen = [next(reader) for _ in range(cut - 1)]
        wal.truncate_after(cut)
        fresh = [Event("new", {"i": i}) for i in range(3)]
        wal.append_sync(fresh, epoch=wal.last_epoch)
        seen += list(reader)
        assert [r.offset for r in seen] == list(range(cut + 3))
        assert [r.event for r in seen] == [r.event for r in original[:cut]] + fresh
        # Retention under a reader: an error, not bytes of a deleted file.
        reader = wal.read(0)
        next(reader)
        wal.delete_before(segments[1][0])
        with pytest.raises(OffsetOutOfRangeError):
            list(reader)


# --- the directory and its files -------------------------------------------------------------


def test_second_open_of_the_same_directory_is_refused(tmp_path: Path) -> None:
    first = Wal.open(tmp_path / "log", SMALL)
    with pytest.raises(LogError, match="in use"):
        Wal.open(tmp_path / "log", SMALL)
    first.append_sync(batch(0, 1), epoch=1)  # the first one is unaffected
    first.close()
    with Wal.open(tmp_path / "log", SMALL) as again:
        assert again.log_end == 1


def test_stale_temp_files_are_removed_on_open(multi_segment_log: Path, tmp_path: Path) -> None:
    work = copy_log(multi_segment_log, tmp_path / "work")
    names = ["epochs.tmp", f"{0:020d}.idx.tmp", f"{MARKER}.tmp"]
    for name in names:
        (work / name).write_bytes(b"half-written")
    with Wal.open(work, SMALL) as wal:
        assert wal.recovery.temp_files_removed == sorted(names)
        assert wal.recovery.truncation_redone_to is None
    assert not list(work.glob("*.tmp"))


def test_missing_and_stale_indexes_are_rebuilt(multi_segment_log: Path, tmp_path: Path) -> None:
    work = copy_log(multi_segment_log, tmp_path / "work")
    with Wal.open(work, SMALL) as wal:
        original = list(wal.read())
    indexes = index_files(work)
    assert len(indexes) >= 3  # one per sealed segment
    good = {p.name: p.read_bytes() for p in indexes}
    sizes = [p.with_suffix(".wal").stat().st_size for p in indexes[:3]]
    assert sizes[1] != sizes[2]  # so that the borrowed index is stale for segment 1
    indexes[0].unlink()  # missing
    indexes[1].write_bytes(indexes[2].read_bytes())  # stale: another segment's size
    data = bytearray(indexes[2].read_bytes())
    data[-1] ^= 0xFF  # damaged: fails its checksum
    indexes[2].write_bytes(bytes(data))
    with Wal.open(work, SMALL) as wal:
        assert wal.recovery.indexes_rebuilt == [p.name for p in indexes[:3]]
        assert list(wal.read()) == original
        for offset in range(0, wal.log_end, 2):  # every lookup goes through an index
            assert pairs(wal, offset) == [(r.offset, r.event) for r in original[offset:]]
    assert {p.name: p.read_bytes() for p in index_files(work)} == good
    with Wal.open(work, SMALL) as wal:
        assert wal.recovery.lines() == []


# --- closing and fsync policies ----------------------------------------------------------------


async def test_use_after_close_raises_closed_error(tmp_path: Path) -> None:
    wal = Wal.open(tmp_path / "log", SMALL)
    await wal.append(batch(0, 2), epoch=1)
    frame = next(iter(wal.frames())).data
    await wal.aclose()
    wal.close()  # closing twice is fine
    await wal.aclose()
    with pytest.raises(ClosedError):
        wal.append_sync(batch(2, 1), epoch=1)
    with pytest.raises(ClosedError):
        await wal.append(batch(2, 1), epoch=1)
    with pytest.raises(ClosedError):
        await wal.append_frames(frame)
    with pytest.raises(ClosedError):
        await wal.sync()
    with pytest.raises(ClosedError):
        list(wal.read())
    with pytest.raises(ClosedError):
        list(wal.frames())
    with pytest.raises(ClosedError):
        wal.truncate_after(1)
    with pytest.raises(ClosedError):
        wal.delete_before(1)
    with pytest.raises(ClosedError):
        await wal.wait_beyond(5)
    with Wal.open(tmp_path / "log", SMALL) as again:  # closing released the directory
        assert again.log_end == 2


@pytest.mark.parametrize("policy", [FsyncPolicy.INTERVAL, FsyncPolicy.NEVER])
async def test_lazy_fsync_policies_catch_up_on_sync(tmp_path: Path, policy: FsyncPolicy) -> None:
    # An hour-long interval: the timer never fires during the test, only sync() forces.
    config = LogConfig(fsync_policy=policy, fsync_interval_ms=3_600_000)
    wal = Wal.open(tmp_path / "log", config)
    results = [await wal.append(batch(i * 3, 3), epoch=1) for i in range(5)]
    assert [r.base_offset for r in results] == [0, 3, 6, 9, 12]
    assert wal.log_end == 15
    assert wal.durable_end == 0  # written, not yet forced
    assert [r.offset for r in wal.read()] == list(range(15))  # but readable
    assert await wal.sync() == 15
    assert wal.durable_end == 15
    wal.append_sync(batch(15, 1), epoch=1)
    assert (wal.log_end, wal.durable_end) == (16, 15)
    await wal.aclose()
    with Wal.open(tmp_path / "log", config) as again:
        assert again.log_end == again.durable_end == 16
        assert again.recovery.lines() == []


def test_always_policy_is_durable_on_return(tmp_path: Path) -> None:
    with Wal.open(tmp_path / "log", TINY) as wal:
        for i in range(10):
            result = wal.append_sync(batch(i, 2), epoch=1)
            assert wal.durable_end == wal.log_end == result.end_offset


def test_epoch_going_down_after_an_indexed_sealed_segment_is_refused(tmp_path: Path) -> None:
    """Open trusts a fresh index for a sealed segment; its last epoch still counts."""
    from walrep.errors import CorruptLogError as Corrupt
    from walrep.log.frame import build_frame, encode_batch
    from walrep.log.index import SparseIndex

    def frame(base: int, epoch: int) -> bytes:
        batch = encode_batch(
            [Event("s", {"i": base})],
            max_event_bytes=512,
            max_batch_bytes=1024,
            compress_threshold_bytes=256,
        )
        return build_frame(batch, base_offset=base, epoch=epoch, ingest_time_ms=0)

    sealed = frame(0, 5) + frame(1, 5)
    (tmp_path / "00000000000000000000.wal").write_bytes(sealed)
    index = SparseIndex(128)
    index.note(0, 0)
    index.save(
        tmp_path / "00000000000000000000.idx",
        base_offset=0,
        segment_bytes=len(sealed),
        end_offset=2,
        last_epoch=5,
    )
    (tmp_path / "00000000000000000002.wal").write_bytes(frame(2, 3))
    with pytest.raises(Corrupt) as info:
        Wal.open(tmp_path)
    assert info.value.segment.endswith("00000000000000000002.wal")
    assert (info.value.position, info.value.offset) == (
        0,
        2,
    ) and "epoch 3 after epoch 5" in info.value.reason
