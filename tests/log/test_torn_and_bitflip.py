"""Damage on disk: torn writes, zero-filled tails and single flipped bits.

Recovery may silently drop only a torn tail of the newest segment (bytes that were never
acknowledged). Any other damage must surface as ``CorruptLogError`` naming the segment,
the byte position of the damaged frame and the offset expected there; and no damaged
byte may ever come back from a read as data.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.log.helpers import SMALL, batch, copy_log, frame_at, frame_positions, segment_files
from walrep.errors import CorruptLogError
from walrep.log import Record, Wal
from walrep.log.frame import FLAG_LZ4, HEADER_SIZE, FrameStatus, inspect_frame

# (events, pad, epoch) of each append: plain and lz4-compressed frames, six epochs.
PLAN = [(3, 0, 1), (2, 60, 1), (4, 0, 1), (1, 0, 2), (3, 60, 2), (2, 0, 2), (5, 0, 2)]
PLAN += [(3, 60, 3), (2, 0, 3), (1, 0, 3), (3, 0, 3)]
PLAN += [(count, pad, epoch + 3) for count, pad, epoch in PLAN]  # three segments in all
SIZE_FIELD = range(38, 42)  # payload length, u32, within a frame's header


def build_log(directory: Path, plan: list[tuple[int, int, int]] = PLAN) -> list[Record]:
    """Append ``plan`` to a fresh log, close it, return the records it must hold."""
    expected: list[Record] = []
    with Wal.open(directory, SMALL) as wal:
        for n, (count, pad, epoch) in enumerate(plan):
            ingest = 1_000 + n
            events = batch(len(expected), count, pad)
            wal.append_sync(events, epoch=epoch, ingest_time_ms=ingest)
            expected += [Record(len(expected) + i, epoch, ingest, e) for i, e in enumerate(events)]
        assert list(wal.read()) == expected
    return expected


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Record]]:
    directory = tmp_path_factory.mktemp("pristine") / "log"
    expected = build_log(directory)
    segments = segment_files(directory)
    assert len(segments) >= 3, "the plan must fill several segments"
    flags = [
        inspect_frame(seg.read_bytes(), pos, SMALL.max_batch_bytes)[1]
        for seg in segments
        for pos, _, _ in frame_positions(seg.read_bytes(), SMALL.max_batch_bytes)
    ]
    assert any(h is not None and h.flags & FLAG_LZ4 for h in flags), "no lz4 frame"
    return directory, expected


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.name != "LOCK"}


def restore(directory: Path, state: dict[str, bytes]) -> None:
    """Put a working copy back into ``state`` (cheaper than a fresh copy per case)."""
    for p in directory.iterdir():
        if p.name != "LOCK" and p.name not in state:
            p.unlink()
    for name, content in state.items():
        path = directory / name
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)


def read_until_error(
    wal: Wal, from_offset: int | None = None, to: int | None = None
) -> tuple[list[Record], CorruptLogError | None]:
    got: list[Record] = []
    try:
        for record in wal.read(from_offset, to):
            got.append(record)
    except CorruptLogError as e:
        return got, e
    return got, None


# --- a) torn writes and zero-filled tails ------------------------------------------------


def test_torn_write_at_every_byte_of_the_last_frame(
    pristine: tuple[Path, list[Record]], tmp_path: Path
) -> None:
    source, expected = pristine
    work = copy_log(source, tmp_path / "work")
    state = snapshot(work)
    last = segment_files(work)[-1]
    pos, size, base = frame_positions(last.read_bytes(), SMALL.max_batch_bytes)[-1]
    assert pos > 0, "the last segment must hold frames before the last one"

    for cut in range(pos, pos + size):  # keeps cut - pos bytes of the last frame
        os.truncate(last, cut)
        with Wal.open(work, SMALL) as wal:
            report = wal.recovery
            assert wal.log_end == base, cut
            if cut == pos:  # a clean cut at a frame boundary: nothing to recover
                assert report.torn_segment is None and report.torn_bytes == 0
            else:
                assert report.torn_segment == str(last), cut
                assert (report.torn_position, report.torn_bytes) == (pos, cut - pos), cut
            assert report.repaired == []
            assert last.stat().st_size == pos
            assert list(wal.read()) == expected[:base], cut
        with Wal.open(work, SMALL) as wal:  # the truncation was made durable and final
            assert wal.recovery.lines() == []
            assert wal.log_end == base
        restore(work, state)


def test_torn_first_frame_of_a_new_segment_leaves_it_empty(tmp_path: Path) -> None:
    expected = build_log(tmp_path / "log")
    segments = segment_files(tmp_path / "log")
    with Wal.open(tmp_path / "log", SMALL) as wal:  # a batch that does not fit rolls
        before = len(wal.segments())
        events = batch(len(expected), 3, pad=60)
        result = wal.append_sync(events, epoch=wal.last_epoch, ingest_time_ms=9)
        assert len(wal.segments()) == before + 1
    new = sorted(set(segment_files(tmp_path / "log")) - set(segments))
    assert [p.name for p in new] == [f"{result.base_offset:020d}.wal"]
    os.truncate(new[0], HEADER_SIZE + 5)
    with Wal.open(tmp_path / "log", SMALL) as wal:
        assert wal.log_end == result.base_offset
        assert wal.recovery.torn_bytes == HEADER_SIZE + 5
        assert wal.segments()[-1][:3] == (result.base_offset, result.base_offset, 0)
        assert list(wal.read()) == expected
        again = wal.append_sync(batch(0, 1), epoch=wal.last_epoch, ingest_time_ms=10)
        assert again.base_offset == result.base_offset


@pytest.mark.parametrize("zeros", [1, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 1, 4096])
def test_zeros_after_the_last_frame_are_a_torn_tail(
    pristine: tuple[Path, list[Record]], tmp_path: Path, zeros: int
) -> None:
    source, expected = pristine
    work = copy_log(source, tmp_path / "work")
    last = segment_files(work)[-1]
    size = last.stat().st_size
    with last.open("ab") as f:
        f.write(b"\0" * zeros)
    with Wal.open(work, SMALL) as wal:
        assert wal.log_end == len(expected)
        assert (wal.recovery.torn_segment, wal.recovery.torn_position) == (str(last), size)
        assert wal.recovery.torn_bytes == zeros
        assert list(wal.read()) == expected
    assert last.stat().st_size == size


def test_last_frame_ending_in_zeros_is_a_torn_tail_wherever_the_zeros_start(
    pristine: tuple[Path, list[Record]], tmp_path: Path
) -> None:
    """Blocks allocated but never written read as zeros: from any byte of the last frame on.

    A valid frame never ends in a NUL (JSON and lz4 literals end in ``]``), so a frame
    whose bytes end in zeros up to the end of the file was not completely written.
    """
    source, expected = pristine
    work = copy_log(source, tmp_path / "work")
    state = snapshot(work)
    last = segment_files(work)[-1]
    data = last.read_bytes()
    pos, size, base = frame_positions(data, SMALL.max_batch_bytes)[-1]
    assert pos + size == len(data)
    for start in range(pos, pos + size):
        last.write_bytes(data[:start] + b"\0" * (len(data) - start))
        with Wal.open(work, SMALL) as wal:
            assert wal.log_end == base, start
            assert (wal.recovery.torn_position, wal.recovery.torn_bytes) == (pos, size), start
            assert list(wal.read()) == expected[:base]
        restore(work, state)


# --- b) single flipped bits --------------------------------------------------------------


def test_flipped_bit_in_a_sealed_segment_is_never_returned_as_data(
    pristine: tuple[Path, list[Record]], tmp_path: Path
) -> None:
    """Every byte of a sealed segment, one seeded random bit each.

    Its index is fresh, so open trusts it and does not scan the segment: open succeeds,
    and reading runs into the damaged frame and raises ``CorruptLogError`` naming the
    segment and the frame's position, after returning exactly the frames before it.
    Reading from any offset of the segment either raises or returns the original data.
    """
    source, expected = pristine
    work = copy_log(source, tmp_path / "work")
    state = snapshot(work)
    sealed = segment_files(work)[1]
    data = sealed.read_bytes()
    frames = frame_positions(data, SMALL.max_batch_bytes)
    with Wal.open(work, SMALL) as wal:
        seg_start, seg_end = wal.segments()[1][:2]
    rng = random.Random(20240601)
    for byte in range(len(data)):
        pos, _, base = frame_at(frames, byte)
        damaged = bytearray(data)
        damaged[byte] ^= 1 << rng.randrange(8)
        sealed.write_bytes(damaged)
        with Wal.open(work, SMALL) as wal:
            assert wal.recovery.lines() == []
            got, error = read_until_error(wal)
            assert error is not None, f"flip at byte {byte} went unnoticed"
            assert (error.segment, error.position, error.offset) == (str(sealed), pos, base), byte
            assert got == expected[:base], byte
            for offset in range(seg_start, seg_end):
                got, error = read_until_error(wal, offset, seg_end)
                if error is None:  # only frames before the damaged one can be read whole
                    assert got == expected[offset:seg_end], (byte, offset)
                else:
                    assert got == expected[offset : offset + len(got)], (byte, offset)
                    assert error.segment == str(sealed)
        restore(work, state)


def test_flipped_bit_in_a_sealed_segment_without_index_fails_open(
    pristine: tuple[Path, list[Record]], tmp_path: Path
) -> None:
    """Without a fresh index open scans the sealed segment and refuses at the damage."""
    source, _ = pristine
    work = copy_log(source, tmp_path / "work")
    sealed = segment_files(work)[1]
    sealed.with_suffix(".idx").unlink()
    state = snapshot(work)
    data = sealed.read_bytes()
    frames = frame_positions(data, SMALL.max_batch_bytes)
    rng = random.Random(7)
    for byte in range(len(data)):
        pos, _, base = frame_at(frames, byte)
        damaged = bytearray(data)
        damaged[byte] ^= 1 << rng.randrange(8)
        sealed.write_bytes(damaged)
        with pytest.raises(CorruptLogError) as info:
            Wal.open(work, SMALL)
        assert (info.value.segment, info.value.position, info.value.offset) == (
            str(sealed),
            pos,
            base,
        ), byte
        assert snapshot(work) == {**state, sealed.name: bytes(damaged)}  # nothing "fixed"
        restore(work, state)


def test_flipped_bit_in_the_active_segment(
    pristine: tuple[Path, list[Record]], tmp_path: Path
) -> None:
    """Every byte of the newest segment, one seeded random bit each.

    Open raises ``CorruptLogError`` at the damaged frame, with one exception that cannot
    be told apart from a torn write: a flip in the payload-length field of the *final*
    frame that makes it run past the end of the file. That frame is then dropped as a
    torn tail (reported with its position and size), and the log holds exactly the
    frames before it. Nothing wrong is ever returned.
    """
    source, expected = pristine
    work = copy_log(source, tmp_path / "work")
    state = snapshot(work)
    active = segment_files(work)[-1]
    data = active.read_bytes()
    frames = frame_positions(data, SMALL.max_batch_bytes)
    last_pos, last_size, last_base = frames[-1]
    rng = random.Random(99)
    torn = 0
    for byte in range(len(data)):
        pos, _, base = frame_at(frames, byte)
        bit = rng.randrange(8)
        damaged = bytearray(data)
        damaged[byte] ^= 1 << bit
        active.write_bytes(damaged)
        try:
            wal = Wal.open(work, SMALL)
        except CorruptLogError as e:
            assert (e.segment, e.position, e.offset) == (str(active), pos, base), byte
        else:
            with wal:
                torn += 1
                assert pos == last_pos and byte - pos in SIZE_FIELD, (byte, bit)
                status, _ = inspect_frame(bytes(damaged), pos, SMALL.max_batch_bytes)
                assert status is FrameStatus.SHORT_PAYLOAD
                report = wal.recovery
                assert (report.torn_position, report.torn_bytes) == (last_pos, last_size)
                assert wal.log_end == last_base
                assert list(wal.read()) == expected[:last_base]
        restore(work, state)
    # Those flips exist among the bits drawn (they set a zero bit of the length field).
    assert 0 < torn <= len(SIZE_FIELD)


# --- c) repair ----------------------------------------------------------------------------


def test_repair_cuts_the_log_before_the_damaged_frame(
    pristine: tuple[Path, list[Record]], tmp_path: Path
) -> None:
    source, expected = pristine
    work = copy_log(source, tmp_path / "work")
    state = snapshot(work)
    segments = segment_files(work)
    sealed = segments[1]
    data = sealed.read_bytes()
    frames = frame_positions(data, SMALL.max_batch_bytes)
    rng = random.Random(3)
    positions = sorted({0, len(data) - 1, *rng.sample(range(len(data)), 30)})
    for byte in positions:
        pos, _, base = frame_at(frames, byte)
        damaged = bytearray(data)
        damaged[byte] ^= 1 << rng.randrange(8)
        sealed.write_bytes(damaged)
        with Wal.open(work, SMALL, repair=True) as wal:
            assert len(wal.recovery.repaired) == 1, byte
            assert str(sealed) in wal.recovery.repaired[0]
            assert f"offset {base}" in wal.recovery.repaired[0]
            assert wal.log_end == base
            assert list(wal.read()) == expected[:base]
            if pos == 0:  # the whole segment goes, the one before it is the last now
                assert segment_files(work) == segments[:1]
            else:
                assert segment_files(work) == segments[:2]
                assert sealed.stat().st_size == pos
            assert all(e.start_offset <= base for e in wal.epochs.entries)
            wal.append_sync(batch(base, 2), epoch=wal.last_epoch, ingest_time_ms=5)
        with Wal.open(work, SMALL) as wal:  # the repaired log opens cleanly
            assert wal.recovery.lines() == []
            assert list(wal.read()) == [
                *expected[:base],
                *[Record(base + i, wal.last_epoch, 5, e) for i, e in enumerate(batch(base, 2))],
            ]
        restore(work, state)
