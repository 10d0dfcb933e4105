"""One contract, two logs: every test here runs against ``Wal`` and ``MemoryLog``.

Offsets and reads, every append path, fencing, the limits every append applies before
writing, truncation (inside a batch, readers across it, the committed floor),
retention, the epoch history, the replica state, durability and its listeners, and
closing. ``test_memory_log_segments_match_wal`` runs the same appends on both and
compares them byte for byte.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from pathlib import Path

import pytest

from tests.log.helpers import SMALL, batch, event
from tests.log.logs import Impl, Log, frame_at_end
from walrep.errors import (
    ClosedError,
    CommittedTruncationError,
    CorruptLogError,
    FencedError,
    LimitExceededError,
    LogTruncatedError,
    MalformedFrameError,
    OffsetOutOfRangeError,
    RejectedFrameError,
)
from walrep.log import (
    EncodedBatch,
    Event,
    FsyncPolicy,
    LogConfig,
    MemoryLog,
    Record,
    ReplicaState,
    Wal,
)
from walrep.log.epochs import EpochEntry
from walrep.log.frame import FLAG_LZ4, HEADER_SIZE, build_frame, encode_batch

LAZY = LogConfig(
    segment_bytes_max=SMALL.segment_bytes_max,
    max_event_bytes=SMALL.max_event_bytes,
    max_batch_bytes=SMALL.max_batch_bytes,
    compress_threshold_bytes=SMALL.compress_threshold_bytes,
    index_interval_bytes=SMALL.index_interval_bytes,
    fsync_policy=FsyncPolicy.NEVER,
)


def offsets(log: Log, start: int | None = None) -> list[int]:
    return [r.offset for r in log.read(start)]


# --- offsets, reads and every append path -------------------------------------------------


async def test_every_append_path_assigns_gap_free_offsets(impl: Impl) -> None:
    log = impl.open(SMALL)
    results = [
        await log.append(batch(0, 3), epoch=1, ingest_time_ms=10),
        await log.append_encoded(log.encode(batch(3, 2)), epoch=1, ingest_time_ms=11),
        log.append_sync(batch(5, 1), epoch=1, ingest_time_ms=12),
        await log.append_frames(frame_at_end(log, batch(6, 4), 2, ingest_time_ms=13)),
    ]
    assert [(r.base_offset, r.count) for r in results] == [(0, 3), (3, 2), (5, 1), (6, 4)]
    assert log.log_end == 10 and log.log_start == 0
    expected = [Record(o, 1, 10, event(o)) for o in range(3)]
    expected += [Record(o, 1, 11, event(o)) for o in range(3, 5)]
    expected += [Record(5, 1, 12, event(5)), *[Record(o, 2, 13, event(o)) for o in range(6, 10)]]
    assert list(log.read()) == expected
    again = impl.reopen(log)
    assert list(again.read()) == expected
    assert again.recovery.lines() == []


async def test_reads_respect_bounds_and_frames_hold_the_first_offset(impl: Impl) -> None:
    log = impl.open(SMALL)
    for i in range(12):
        await log.append(batch(i * 3, 3, pad=40 * (i % 2)), epoch=1)
    everything = list(log.read())
    assert len(log.segments()) > 1  # the reads below cross segments
    for start in range(0, 36, 4):
        assert list(log.read(start, start + 5)) == everything[start : start + 5]
        first = next(iter(log.frames(start)))
        assert first.header.base_offset <= start < first.header.end_offset
        assert first.data[HEADER_SIZE:] == bytes(first.payload)
    assert list(log.read(36)) == []
    with pytest.raises(OffsetOutOfRangeError):
        list(log.read(37))
    with pytest.raises(OffsetOutOfRangeError):
        list(log.frames(37))


async def test_tail_yields_what_is_appended_while_it_waits(impl: Impl) -> None:
    log = impl.open(SMALL)
    await log.append(batch(0, 2), epoch=1)

    async def tailer() -> list[int]:
        got: list[int] = []
        async with aclosing(log.tail(1)) as records:  # type: ignore[type-var]
            async for record in records:
                got.append(record.offset)
                if len(got) == 5:
                    return got
        raise AssertionError("tail ended")

    task = asyncio.create_task(tailer())
    for i in range(2):
        await asyncio.sleep(0)  # let the tail reach its wait
        await log.append(batch(2 + i * 2, 2), epoch=1)
    assert await asyncio.wait_for(task, 10) == [1, 2, 3, 4, 5]


# --- fencing ------------------------------------------------------------------------------


async def test_a_lower_epoch_is_fenced_on_every_path_and_writes_nothing(impl: Impl) -> None:
    log = impl.open(SMALL)
    await log.append(batch(0, 2), epoch=5)
    before = impl.state(log)
    stale = frame_at_end(log, batch(2, 1), 4)
    newer_then_stale = frame_at_end(log, batch(2, 1), 7)
    newer_then_stale += build_frame(
        log.encode(batch(3, 1)), base_offset=3, epoch=6, ingest_time_ms=1
    )
    calls = {
        "append": lambda: log.append(batch(2, 1), epoch=4),
        "append_encoded": lambda: log.append_encoded(log.encode(batch(2, 1)), epoch=1),
        "append_frames": lambda: log.append_frames(stale),
        "append_frames, epochs going down": lambda: log.append_frames(newer_then_stale),
    }
    for name, call in calls.items():
        with pytest.raises(FencedError) as info:
            await call()
        assert info.value.current in (5, 7), name
        assert impl.state(log) == before, name
    with pytest.raises(FencedError) as info:
        log.append_sync(batch(2, 1), epoch=3)
    assert (info.value.seen, info.value.current) == (3, 5)
    assert impl.state(log) == before
    assert (await log.append(batch(2, 1), epoch=5)).base_offset == 2  # same epoch: fine


# --- limits: whatever is acknowledged can be read back ----------------------------------

BIG = 64 * 1024  # limits of a writer with larger limits than SMALL's


def lz4_over_the_limit() -> EncodedBatch:
    """Compresses below SMALL's batch limit, but decompresses to more than it."""
    events = [event(i, pad=300) for i in range(3)]
    encoded = encode_batch(
        events, max_event_bytes=BIG, max_batch_bytes=BIG, compress_threshold_bytes=64
    )
    assert encoded.flags & FLAG_LZ4
    assert len(encoded.payload) <= SMALL.max_batch_bytes < encoded.uncompressed_bytes
    return encoded


def plain_over_the_limit() -> EncodedBatch:
    events = [event(i, pad=200) for i in range(3)]
    encoded = encode_batch(
        events, max_event_bytes=BIG, max_batch_bytes=BIG, compress_threshold_bytes=BIG
    )
    assert encoded.flags == 0 and len(encoded.payload) > SMALL.max_batch_bytes
    return encoded


async def test_batches_a_reader_would_refuse_are_refused_before_writing(impl: Impl) -> None:
    log = impl.open(SMALL)
    await log.append(batch(0, 2), epoch=1)
    before = impl.state(log)
    lz4 = lz4_over_the_limit()
    for oversized in (lz4, plain_over_the_limit()):
        with pytest.raises(LimitExceededError) as info:
            await log.append_encoded(oversized, epoch=1)
        assert info.value.size > info.value.limit
        assert impl.state(log) == before
    with pytest.raises(LimitExceededError, match="uncompressed payload"):
        await log.append_encoded(lz4, epoch=1)
    malformed = {
        "no events": EncodedBatch(b"[]", 0, 0, 2),
        "unknown flags": EncodedBatch(b'[["s",{}]]', 1, 0x80, 10),
        "lz4 without its size prefix": EncodedBatch(b"\x01", 1, FLAG_LZ4, 1),
    }
    for name, bad in malformed.items():
        with pytest.raises(MalformedFrameError):
            await log.append_encoded(bad, epoch=1)
        assert impl.state(log) == before, name
    # Nothing refused was acknowledged, and everything acknowledged reads back.
    again = impl.reopen(log)
    assert offsets(again) == [0, 1]


async def test_frames_from_a_writer_with_larger_limits_are_refused(impl: Impl) -> None:
    log = impl.open(SMALL)
    await log.append(batch(0, 2), epoch=1)
    before = impl.state(log)
    good = frame_at_end(log, batch(2, 1), 1)

    def at(base: int, encoded: EncodedBatch) -> bytes:
        return build_frame(encoded, base_offset=base, epoch=1, ingest_time_ms=1)

    oversized = {
        "lz4 decompressing past the limit": (at(2, lz4_over_the_limit()), 0),
        "stored payload past the limit": (at(2, plain_over_the_limit()), 0),
        "after a good frame": (good + at(3, lz4_over_the_limit()), len(good)),
    }
    for name, (data, position) in oversized.items():
        with pytest.raises(LimitExceededError) as info:
            await log.append_frames(data)
        assert f"frame at byte {position} of the appended data" in str(info.value), name
        assert impl.state(log) == before, name
    after = at(3, log.encode(batch(3, 1)))
    damaged = after[:-1] + bytes([after[-1] ^ 1])
    for data, position in [(good[:-1] + bytes([good[-1] ^ 1]), 0), (good + damaged, len(good))]:
        with pytest.raises(RejectedFrameError) as rejected:
            await log.append_frames(data)
        assert rejected.value.position == position and "CRC32C" in rejected.value.reason
        assert impl.state(log) == before
    with pytest.raises(RejectedFrameError, match="starts at offset 3, log end is 2"):
        await log.append_frames(after)
    assert (await log.append_frames(good + after)).end_offset == 4


async def test_a_payload_that_passes_its_crc_but_does_not_decode(impl: Impl) -> None:
    """Frames are not JSON-decoded when appended; reading one is ``CorruptLogError``."""
    log = impl.open(SMALL)
    await log.append(batch(0, 2), epoch=1)
    bogus = EncodedBatch(b'[["api",{}]]', count=2, flags=0, uncompressed_bytes=12)
    await log.append_frames(build_frame(bogus, base_offset=2, epoch=1, ingest_time_ms=0))
    await log.append(batch(4, 1), epoch=1)
    frames = list(log.frames())
    assert [f.header.base_offset for f in frames] == [0, 2, 4]  # frames() does not decode
    bad = frames[1]
    for reading in (lambda: list(log.read()), lambda: list(log.read(3))):
        with pytest.raises(CorruptLogError) as info:
            reading()
        assert (info.value.segment, info.value.position, info.value.offset) == (
            bad.segment,
            bad.position,
            2,
        )
        assert "does not decode" in info.value.reason
    assert offsets(log, 4) == [4]
    got: list[int] = []
    with pytest.raises(CorruptLogError):
        async with aclosing(log.tail(0)) as records:  # type: ignore[type-var]
            async for record in records:
                got.append(record.offset)
    assert got == [0, 1]


# --- truncation -----------------------------------------------------------------------------


async def test_truncation_inside_a_batch_keeps_its_earlier_events(impl: Impl) -> None:
    log = impl.open(SMALL)
    await log.append(batch(0, 2), epoch=1, ingest_time_ms=100)
    await log.append(batch(2, 5, pad=40), epoch=2, ingest_time_ms=200)  # an lz4 frame
    await log.append(batch(7, 3), epoch=3, ingest_time_ms=300)
    assert [f.header.flags & FLAG_LZ4 for f in log.frames()][:2] == [0, FLAG_LZ4]
    log.truncate_after(4)
    expected = [Record(o, 1, 100, event(o)) for o in range(2)]
    expected += [Record(o, 2, 200, event(o, pad=40)) for o in range(2, 4)]
    assert log.log_end == 4 and list(log.read()) == expected
    assert log.epochs.entries == (EpochEntry(1, 0), EpochEntry(2, 2))
    assert log.durable_end == 4  # a truncation forces what it keeps
    with pytest.raises(OffsetOutOfRangeError):
        log.truncate_after(5)
    assert (await log.append(batch(4, 1), epoch=2)).base_offset == 4
    again = impl.reopen(log)
    assert list(again.read())[:4] == expected and again.log_end == 5


async def test_a_reader_past_the_cut_raises_log_truncated(impl: Impl) -> None:
    log = impl.open(SMALL)
    for i in range(6):
        await log.append(batch(i * 2, 2), epoch=1)
    frames = log.frames(0)
    assert next(frames).header.end_offset == 2
    assert next(frames).header.end_offset == 4  # it reads 4 next
    log.truncate_after(3)
    await log.append(batch(100, 5), epoch=1)  # a new history from 3 on
    with pytest.raises(LogTruncatedError) as info:
        next(frames)
    assert (info.value.offset, info.value.truncated_to) == (4, 3)

    records = log.read(0)
    assert [next(records).offset for _ in range(3)] == [0, 1, 2]  # it reads 3 next
    log.truncate_after(3)  # at its next offset: harmless, it reads the new history
    await log.append([Event("new", {})], epoch=1)
    rest = list(records)
    assert [r.offset for r in rest] == [3] and rest[0].event == Event("new", {})


async def test_a_cut_at_or_above_the_readers_position_is_harmless(impl: Impl) -> None:
    log = impl.open(SMALL)
    for i in range(6):
        await log.append(batch(i * 2, 2), epoch=1)
    records = log.read(0)
    seen = [next(records) for _ in range(5)]  # the frame [4, 6) is decoded already
    log.truncate_after(8)  # above its position
    log.truncate_after(5)  # exactly at it
    await log.append([Event("new", {"i": 5})], epoch=1)
    seen += list(records)
    assert [r.offset for r in seen] == list(range(6))
    assert seen[-1].event == Event("new", {"i": 5})  # not the old event 5

    records = log.read(0)
    assert next(records).offset == 0  # event 1 is decoded already, and reads next
    log.truncate_after(0)
    with pytest.raises(LogTruncatedError) as info:  # not served from the old history
        next(records)
    assert (info.value.offset, info.value.truncated_to) == (1, 0)


async def test_a_tail_waiting_past_the_cut_raises(impl: Impl) -> None:
    log = impl.open(SMALL)
    await log.append(batch(0, 4), epoch=1)
    seen: list[int] = []

    async def tailer() -> None:
        async with aclosing(log.tail(0)) as records:  # type: ignore[type-var]
            async for record in records:
                seen.append(record.offset)

    task = asyncio.create_task(tailer())
    for _ in range(100):
        if len(seen) == 4:
            break
        await asyncio.sleep(0)
    assert seen == [0, 1, 2, 3]  # and the tail waits beyond 3
    log.truncate_after(2)
    with pytest.raises(LogTruncatedError) as info:
        await asyncio.wait_for(task, 10)
    assert (info.value.offset, info.value.truncated_to) == (4, 2)
    with pytest.raises(LogTruncatedError):
        waiting = asyncio.create_task(log.wait_beyond(3))
        await asyncio.sleep(0)
        log.truncate_after(1)
        await asyncio.wait_for(waiting, 10)


async def test_truncation_below_the_committed_floor_is_refused(impl: Impl) -> None:
    log = impl.open(SMALL)
    await log.append(batch(0, 6), epoch=1)
    log.save_replica_state(ReplicaState(committed_floor=4, highest_epoch=2))
    before = impl.state(log)
    with pytest.raises(CommittedTruncationError) as info:
        log.truncate_after(3)
    assert (info.value.offset, info.value.committed) == (3, 4)
    assert impl.state(log) == before
    log.truncate_after(4)  # at the floor: allowed
    assert log.log_end == 4


# --- retention ----------------------------------------------------------------------------------


async def test_delete_before_drops_whole_segments_and_never_the_newest(impl: Impl) -> None:
    log = impl.open(SMALL)
    for i in range(15):
        await log.append(batch(i * 2, 2, pad=60 * (i % 2)), epoch=1)
    bases = [s[0] for s in log.segments()]
    assert len(bases) >= 3
    everything = list(log.read())
    assert log.delete_before(bases[1] - 1) == 0
    reader = log.read(0)
    next(reader)
    assert log.delete_before(bases[1]) == bases[1]
    with pytest.raises(OffsetOutOfRangeError):
        list(reader)  # not bytes of a deleted segment
    assert list(log.read()) == everything[bases[1] :]
    with pytest.raises(OffsetOutOfRangeError):
        log.truncate_after(bases[1] - 1)
    assert log.delete_before(10**9) == bases[-1]
    assert log.delete_before(0) == bases[-1]  # never moves back
    again = impl.reopen(log)
    assert again.log_start == bases[-1] and list(again.read()) == everything[bases[-1] :]


def test_memory_log_segments_match_wal(tmp_path: Path) -> None:
    """The same appends give both logs the same segments, frames and ``log_start``."""
    wal, memory = Wal.open(tmp_path / "log", SMALL), MemoryLog.create(SMALL)
    with wal:
        for log in (wal, memory):
            for i in range(40):
                events = batch(i, 1 + i % 4, pad=30 * (i % 3))
                log.append_sync(events, epoch=1 + i // 15, ingest_time_ms=i)
            log.truncate_after(log.log_end - 3)  # re-frames a cut batch
            log.append_sync(batch(1000, 2), epoch=log.last_epoch, ingest_time_ms=99)
        assert [s[:3] for s in wal.segments()] == [s[:3] for s in memory.segments()]
        assert len(wal.segments()) >= 4

        def layout(log: Log) -> list[tuple[str, int, bytes]]:
            return [(Path(f.segment).name, f.position, f.data) for f in log.frames()]

        assert layout(wal) == [
            (name.removeprefix("memory:"), p, d) for name, p, d in layout(memory)
        ]
        for offset in (0, 5, wal.segments()[1][0], wal.segments()[2][0] + 1, 10**6):
            assert wal.delete_before(offset) == memory.delete_before(offset), offset


# --- epochs and replica state -------------------------------------------------------------------


async def test_epoch_history_answers_the_kip101_question(impl: Impl) -> None:
    log = impl.open(SMALL)
    await log.append(batch(0, 5), epoch=1)
    await log.append(batch(5, 2), epoch=3)
    await log.append(batch(7, 2), epoch=3)
    await log.append_frames(frame_at_end(log, batch(9, 2), 4))
    entries = (EpochEntry(1, 0), EpochEntry(3, 5), EpochEntry(4, 9))
    assert log.epochs.entries == entries
    assert (log.last_epoch, log.last_epoch_start) == (4, 9)
    answers = {e: log.epochs.end_offset(e, log.log_end) for e in range(6)}
    assert answers == {0: (0, 0), 1: (1, 5), 2: (1, 5), 3: (3, 9), 4: (4, 11), 5: (4, 11)}
    again = impl.reopen(log)
    assert again.epochs.entries == entries
    again.truncate_after(9)
    assert again.epochs.entries == entries[:2]
    again.append_sync(batch(9, 1), epoch=3)  # the cut epoch may be written again by 3
    assert again.epochs.end_offset(3, again.log_end) == (3, 10)


async def test_an_epoch_whose_frames_a_crash_lost_is_forgotten(impl: Impl) -> None:
    """The history entry of a new epoch is durable before its first frame; if a crash
    loses that frame, recovery must not report the epoch: a peer would answer the KIP-101
    question for an epoch this log holds no event of (and stream frames it refuses)."""
    log = impl.open(SMALL)
    await log.append(batch(0, 3), epoch=1)
    await log.append(batch(3, 2), epoch=2)
    assert (log.last_epoch, log.last_epoch_start) == (2, 3)
    again = impl.reopen_losing_last_frame(log)
    assert again.log_end == 3
    assert again.epochs.entries == (EpochEntry(1, 0),)
    assert (again.last_epoch, again.last_epoch_start) == (1, 0)
    await again.append_frames(frame_at_end(again, batch(3, 1), 1))  # epoch 1 goes on


async def test_replica_state_only_grows_and_survives_a_reopen(impl: Impl) -> None:
    log = impl.open(SMALL)
    assert log.replica_state == ReplicaState(0, 0)
    await log.append(batch(0, 5), epoch=1)
    log.save_replica_state(ReplicaState(committed_floor=3, highest_epoch=7))
    log.save_replica_state(ReplicaState(committed_floor=2, highest_epoch=9))
    assert log.replica_state == ReplicaState(3, 9)  # each field the max
    with pytest.raises(AssertionError):
        log.save_replica_state(ReplicaState(committed_floor=6))  # above log_end: a bug
    assert log.replica_state == ReplicaState(3, 9)
    again = impl.reopen(log)
    assert again.replica_state == ReplicaState(3, 9)


# --- durability -----------------------------------------------------------------------------


async def test_always_policy_is_durable_on_return_and_announced(impl: Impl) -> None:
    log = impl.open(SMALL)
    announced: list[int] = []
    log.add_durable_listener(announced.append)
    ends = []
    for i in range(8):
        result = await log.append(batch(i * 2, 2, pad=60), epoch=1)
        assert log.durable_end == log.log_end == result.end_offset
        await log.wait_durable(result.end_offset)  # returns at once
        ends.append(result.end_offset)
    log.append_sync(batch(16, 1), epoch=1)
    await asyncio.sleep(0)
    assert announced == [*ends, 17]


async def test_lazy_policy_is_durable_after_sync_and_announced_then(impl: Impl) -> None:
    log = impl.open(LAZY)
    announced: list[int] = []
    log.add_durable_listener(announced.append)
    for i in range(3):
        await log.append(batch(i, 1), epoch=1)
    assert (log.log_end, log.durable_end) == (3, 0)  # written, readable, not durable
    assert offsets(log) == [0, 1, 2]
    waiter = asyncio.create_task(log.wait_durable(3))
    await asyncio.sleep(0)
    assert not waiter.done() and announced == []
    assert await log.sync() == 3
    await asyncio.wait_for(waiter, 10)
    assert announced == [3]
    again = impl.reopen(log)
    assert again.log_end == again.durable_end == 3


async def test_a_segment_roll_forces_the_sealed_segment(impl: Impl) -> None:
    log = impl.open(LAZY)
    announced: list[int] = []
    log.add_durable_listener(announced.append)
    while len(log.segments()) < 2:
        await log.append(batch(log.log_end, 2, pad=60), epoch=1)
    sealed_end = log.segments()[0][1]
    assert log.durable_end == sealed_end < log.log_end
    assert announced == [sealed_end]


# --- closing --------------------------------------------------------------------------------


async def test_use_after_close_raises_closed_error(impl: Impl) -> None:
    log = impl.open(SMALL)
    await log.append(batch(0, 2), epoch=1)
    frame = frame_at_end(log, batch(2, 1), 1)
    waiter = asyncio.create_task(log.wait_durable(100))
    await asyncio.sleep(0)
    await log.aclose()
    log.close()  # closing twice is fine
    with pytest.raises(ClosedError):
        await asyncio.wait_for(waiter, 10)
    calls = [
        lambda: log.append_sync(batch(2, 1), epoch=1),
        lambda: list(log.read()),
        lambda: list(log.frames()),
        lambda: log.truncate_after(1),
        lambda: log.delete_before(1),
        lambda: log.save_replica_state(ReplicaState(1, 1)),
    ]
    for call in calls:
        with pytest.raises(ClosedError):
            call()
    for coro in (
        lambda: log.append(batch(2, 1), epoch=1),
        lambda: log.append_encoded(log.encode(batch(2, 1)), epoch=1),
        lambda: log.append_frames(frame),
        lambda: log.sync(),
        lambda: log.wait_beyond(5),
        lambda: log.wait_durable(5),
    ):
        with pytest.raises(ClosedError):
            await coro()
