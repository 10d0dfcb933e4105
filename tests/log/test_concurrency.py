"""Concurrent appends through the group-commit writer, readers racing the writer,
backpressure, and verbatim frame appends (replication's path).
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from pathlib import Path

import pytest

from tests.log.helpers import TINY, batch, dir_snapshot, event
from walrep.errors import FencedError, LogError
from walrep.log import AppendResult, Event, LogConfig, Record, StoredFrame, Wal
from walrep.log.frame import HEADER_SIZE, build_frame

ROOMY = LogConfig(segment_bytes_max=16 * 1024, max_batch_bytes=4096, max_event_bytes=1024)

TASKS, PER_TASK = 64, 20


def events_for(task: int, k: int) -> list[Event]:
    return [Event(f"t{task}", {"k": k, "j": j}) for j in range(1 + (task + k) % 3)]


TOTAL = sum(len(events_for(t, k)) for t in range(TASKS) for k in range(PER_TASK))

Ack = tuple[int, AppendResult, list[Event], int]  # task, result, events, durable_end at ack


async def run_appenders(wal: Wal, acks: list[Ack], epoch: int = 1) -> None:
    async def appender(task: int) -> None:
        for k in range(PER_TASK):
            events = events_for(task, k)
            result = await wal.append(events, epoch=epoch, ingest_time_ms=task)
            acks.append((task, result, events, wal.durable_end))

    await asyncio.gather(*(appender(t) for t in range(TASKS)))


def check_acks(acks: list[Ack], total: int) -> dict[int, Event]:
    """Offsets unique and gap-free over [0, total); returns offset -> acknowledged event."""
    by_offset: dict[int, Event] = {}
    for _, result, events, _ in acks:
        assert result.count == len(events)
        for i, e in enumerate(events):
            assert result.base_offset + i not in by_offset
            by_offset[result.base_offset + i] = e
    assert sorted(by_offset) == list(range(total))
    for task in range(TASKS):  # one task's appends are ordered as it made them
        bases = [r.base_offset for t, r, _, _ in acks if t == task]
        assert bases == sorted(bases) and len(bases) == PER_TASK
    return by_offset


async def test_concurrent_appenders_get_gap_free_offsets_and_survive_reopen(
    tmp_path: Path,
) -> None:
    wal = Wal.open(tmp_path / "log", ROOMY)
    acks: list[Ack] = []
    await run_appenders(wal, acks)
    assert len(acks) == TASKS * PER_TASK
    by_offset = check_acks(acks, TOTAL)
    # fsync before ack: when an append returns, all of it is durable.
    assert all(durable >= result.end_offset for _, result, _, durable in acks)
    assert wal.log_end == wal.durable_end == TOTAL
    assert len(wal.segments()) > 1
    before = list(wal.read())
    assert [(r.offset, r.event) for r in before] == sorted(by_offset.items())
    await wal.aclose()

    with Wal.open(tmp_path / "log", ROOMY) as again:
        assert again.recovery.lines() == []
        assert list(again.read()) == before


async def test_readers_see_every_event_in_order_while_appends_run(tmp_path: Path) -> None:
    wal = Wal.open(tmp_path / "log", ROOMY)

    async def tail_reader() -> list[Record]:
        got: list[Record] = []
        async with aclosing(wal.tail(0)) as records:  # type: ignore[type-var]
            async for record in records:
                got.append(record)
                if len(got) == TOTAL:
                    break
        return got

    async def polling_reader(start: int) -> list[Record]:
        got: list[Record] = []
        offset = start
        while offset < TOTAL:
            await wal.wait_beyond(offset)
            for record in wal.read(offset):
                got.append(record)
                offset = record.offset + 1
        return got

    acks: list[Ack] = []
    tailed, polled, _ = await asyncio.gather(
        tail_reader(), polling_reader(0), run_appenders(wal, acks)
    )
    by_offset = check_acks(acks, TOTAL)
    for got in (tailed, polled):
        assert [r.offset for r in got] == list(range(TOTAL))
        assert [r.event for r in got] == [by_offset[o] for o in range(TOTAL)]
    await wal.aclose()


async def test_backpressure_with_a_tiny_queue_still_completes_everything(tmp_path: Path) -> None:
    config = LogConfig(
        segment_bytes_max=8 * 1024,
        max_event_bytes=256,
        max_batch_bytes=512,
        pending_bytes_max=512,  # about three batches of the appenders below
    )
    wal = Wal.open(tmp_path / "log", config)
    acks: list[Ack] = []
    await run_appenders(wal, acks)
    check_acks(acks, TOTAL)
    assert all(durable >= result.end_offset for _, result, _, durable in acks)
    await wal.aclose()
    with Wal.open(tmp_path / "log", config) as again:
        assert again.log_end == TOTAL


# --- verbatim frames -----------------------------------------------------------------------


async def build_source(directory: Path) -> Wal:
    """A log written by concurrent append and append_encoded calls, over two epochs."""
    src = Wal.open(directory, TINY)

    async def writer(task: int, epoch: int) -> None:
        for k in range(8):
            events = batch(task * 100 + k, 1 + k % 4, pad=150 * (k % 2))
            if task % 2:
                await src.append_encoded(src.encode(events), epoch=epoch, ingest_time_ms=k)
            else:
                await src.append(events, epoch=epoch, ingest_time_ms=k)

    await asyncio.gather(*(writer(t, 1) for t in range(8)))
    await asyncio.gather(*(writer(t, 4) for t in range(8)))
    assert len(src.segments()) >= 4
    return src


async def test_append_frames_copies_a_log_byte_for_byte(tmp_path: Path) -> None:
    src = await build_source(tmp_path / "src")
    frames = list(src.frames())
    dst = Wal.open(tmp_path / "dst", TINY)
    chunks = [frames[i : i + 3] for i in range(0, len(frames), 3)]
    # Submitted concurrently, in order: the queue keeps the order of submission.
    results = await asyncio.gather(
        *(dst.append_frames(b"".join(f.data for f in chunk)) for chunk in chunks)
    )
    assert [r.base_offset for r in results] == [c[0].header.base_offset for c in chunks]
    assert [r.end_offset for r in results] == [c[-1].header.end_offset for c in chunks]
    assert list(dst.read()) == list(src.read())
    assert dst.epochs.entries == src.epochs.entries
    await src.aclose()
    await dst.aclose()
    source_files = dir_snapshot(tmp_path / "src")
    assert dir_snapshot(tmp_path / "dst") == source_files  # segments, indexes, epochs
    assert sum(1 for name in source_files if name.endswith(".wal")) >= 4


def next_frame(wal: Wal, events: list[Event], epoch: int) -> bytes:
    return build_frame(wal.encode(events), base_offset=wal.log_end, epoch=epoch, ingest_time_ms=1)


def blob_spanning_a_roll(src: list[StoredFrame], start: int, damage_last: bool) -> bytes:
    """Frames from ``start`` on, more than a segment's worth, the last one damaged."""
    chosen, size = [], 0
    for f in src:
        if f.header.base_offset >= start:
            chosen.append(bytearray(f.data))
            size += len(f.data)
        if size > 2 * TINY.segment_bytes_max:
            break
    assert size > 2 * TINY.segment_bytes_max
    if damage_last:
        chosen[-1][HEADER_SIZE + 3] ^= 0x10
    return b"".join(bytes(c) for c in chosen)


async def test_bad_frames_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    src = await build_source(tmp_path / "src")
    frames = list(src.frames())
    await src.aclose()
    dst = Wal.open(tmp_path / "dst", TINY)
    half = frames[len(frames) // 2].header.base_offset
    await dst.append_frames(b"".join(f.data for f in frames if f.header.base_offset < half))
    assert dst.log_end == half
    epoch = dst.last_epoch

    def state() -> tuple[int, int, object, dict[str, bytes]]:
        return dst.log_end, dst.last_epoch, dst.epochs.entries, dir_snapshot(tmp_path / "dst")

    before = state()
    good = next_frame(dst, [event(1)], epoch)
    bad_blobs: dict[str, bytes] = {
        "wrong base offset": frames[0].data,
        "gap": build_frame(
            dst.encode([event(1)]), base_offset=half + 1, epoch=epoch, ingest_time_ms=1
        ),
        "flipped payload byte": good[:-1] + bytes([good[-1] ^ 1]),
        "flipped header byte": good[:20] + bytes([good[20] ^ 4]) + good[21:],
        "truncated frame": good[:-1],
        "trailing garbage": good + b"\x01\x02",
        "good frames, then a damaged one past a segment roll": blob_spanning_a_roll(
            frames, half, damage_last=True
        ),
    }
    for name, blob in bad_blobs.items():
        with pytest.raises(LogError):
            await dst.append_frames(blob)
        assert state() == before, name

    # Epochs: a frame below the last epoch is fenced; so is a blob whose epochs go back
    # after a newer one (and that newer epoch must not be recorded either).
    if epoch > 1:
        stale = next_frame(dst, [event(2)], epoch - 1)
        with pytest.raises(FencedError):
            await dst.append_frames(stale)
        assert state() == before
    newer = next_frame(dst, [event(3)], epoch + 5)
    back = build_frame(dst.encode([event(4)]), base_offset=half + 1, epoch=epoch, ingest_time_ms=1)
    with pytest.raises(FencedError):
        await dst.append_frames(newer + back)
    assert state() == before

    # A good append still goes through afterwards, and a concurrent mix of good and bad
    # appends writes exactly the good ones.
    rest = blob_spanning_a_roll(frames, half, damage_last=False)
    outcomes = await asyncio.gather(
        dst.append_frames(frames[0].data), dst.append_frames(rest), return_exceptions=True
    )
    assert isinstance(outcomes[0], LogError)
    assert isinstance(outcomes[1], AppendResult) and outcomes[1].base_offset == half
    end = outcomes[1].end_offset
    assert list(dst.read()) == [r for r in read_all_of(tmp_path / "src") if r.offset < end]
    await dst.aclose()


def read_all_of(directory: Path) -> list[Record]:
    with Wal.open(directory, TINY) as wal:
        return list(wal.read())
