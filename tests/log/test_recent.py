"""Frames just written are read from memory (``walrep/log/recent.py``), never stale.

A failing ``pread`` tells a read served from memory from one that went to the file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.log.helpers import SMALL, FaultyOps, batch, pairs
from walrep.errors import LogFailedError
from walrep.log import LogConfig, Wal
from walrep.log.frame import build_frame
from walrep.log.recent import RecentFrames


def frames_of(wal: Wal, from_offset: int = 0) -> list[bytes]:
    return [f.data for f in wal.frames(from_offset)]


async def test_fresh_frames_are_read_without_touching_the_file(tmp_path: Path) -> None:
    ops = FaultyOps()
    wal = Wal.open(tmp_path / "log", file_ops=ops)
    for i in range(5):
        await wal.append(batch(i * 3, 3), epoch=1)
    ops.failing.add("pread")
    from_memory = frames_of(wal)
    events = pairs(wal)
    ops.failing.clear()
    await wal.aclose()
    with Wal.open(tmp_path / "log") as again:  # the same bytes are on the file
        assert frames_of(again) == from_memory and pairs(again) == events
        assert [o for o, _ in events] == list(range(15))


async def test_the_ring_is_bounded_and_older_frames_come_from_the_file(tmp_path: Path) -> None:
    ops = FaultyOps()
    wal = Wal.open(tmp_path / "log", LogConfig(recent_frames_bytes=300), file_ops=ops)
    for i in range(10):
        await wal.append(batch(i, 1), epoch=1)
    assert 0 < wal._recent.kept_bytes <= 300
    kept = len(wal._recent)
    assert 0 < kept < 10
    ops.failing.add("pread")
    assert len(frames_of(wal, 10 - kept)) == kept  # the newest: from memory
    with pytest.raises(LogFailedError):
        frames_of(wal, 0)  # the oldest were evicted: the read goes to the file
    await wal.aclose()


async def test_a_truncation_forgets_the_frames_it_cut(tmp_path: Path) -> None:
    wal = Wal.open(tmp_path / "log")
    for i in range(4):
        await wal.append(batch(i * 2, 2), epoch=1)
    wal.truncate_after(4)
    await wal.append(batch(100, 2), epoch=2)  # offsets 4 and 5 again, other events
    got = pairs(wal, 4)
    assert [(o, e.attributes["i"]) for o, e in got] == [(4, 100), (5, 101)]
    assert [f.header.epoch for f in wal.frames(0)] == [1, 1, 2]
    await wal.aclose()


async def test_retention_drops_kept_frames_below_the_new_start(tmp_path: Path) -> None:
    wal = Wal.open(tmp_path / "log", SMALL)
    for i in range(15):
        await wal.append(batch(i * 2, 2), epoch=1)
    bases = [s[0] for s in wal.segments()]
    start = wal.delete_before(bases[-1])
    assert start == bases[-1]
    assert all(base >= start for base in wal._recent._order)
    await wal.aclose()


async def test_replicated_frames_are_not_kept(tmp_path: Path) -> None:
    wal = Wal.open(tmp_path / "log")
    encoded = wal.encode(batch(0, 2))
    await wal.append_frames(build_frame(encoded, base_offset=0, epoch=1, ingest_time_ms=5))
    assert len(wal._recent) == 0 and pairs(wal)[1][0] == 1
    await wal.aclose()


def test_ring_evicts_oldest_first_and_ignores_a_frame_larger_than_itself(
    tmp_path: Path,
) -> None:
    with Wal.open(tmp_path / "log") as wal:
        for i in (1, 2, 4, 5):  # events of one size
            wal.append_sync(batch(i, 1), epoch=1)
        stored = list(wal.frames(0))
    size = len(stored[0].data)
    assert {len(f.data) for f in stored} == {size}
    ring: RecentFrames[str] = RecentFrames(2 * size + size // 2)
    for f in stored:  # kept as two buffers, as the writer hands them over
        ring.add(f.header, f.position, [f.data[:10], f.data[10:]], "segment")
    assert [ring.get(f.header.base_offset) is not None for f in stored] == [
        False,
        False,
        True,
        True,
    ]
    assert ring.get(2) == (stored[2].header, stored[2].position, stored[2].data, "segment")
    assert ring.kept_bytes == 2 * size
    ring.drop_from(3)
    assert ring.get(3) is None and ring.get(2) is not None and ring.kept_bytes == size
    ring.drop_below(3)
    assert len(ring) == 0 and ring.kept_bytes == 0
    tiny: RecentFrames[str] = RecentFrames(size - 1)
    tiny.add(stored[0].header, 0, [stored[0].data], "segment")
    assert len(tiny) == 0 and tiny.kept_bytes == 0
