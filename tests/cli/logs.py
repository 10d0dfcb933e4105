"""Helpers for the CLI tests: real log directories written through ``Wal``."""

from __future__ import annotations

from pathlib import Path

from walrep.log import Event, LogConfig, Wal
from walrep.log.frame import parse_header

# Small segments, so that a handful of batches makes several of them.
SMALL = LogConfig(segment_bytes_max=2048, max_batch_bytes=1024, max_event_bytes=512)
INGEST_MS = 1_700_000_000_000  # 2023-11-14T22:13:20.000Z
BATCHES = 12
PER_BATCH = 3
EPOCH_2_FROM_BATCH = 6  # batches 0..5 written in epoch 1, 6..11 in epoch 2


def event(offset: int) -> Event:
    return Event("api", {"i": offset, "pad": "x" * 100}, producer_id="p1", seq=offset)


def write_log(directory: Path, config: LogConfig = SMALL) -> Path:
    """12 batches of 3 events (offsets 0..35), epoch 1 then epoch 2 from offset 18."""
    with Wal.open(directory, config) as wal:
        for b in range(BATCHES):
            epoch = 1 if b < EPOCH_2_FROM_BATCH else 2
            events = [event(b * PER_BATCH + i) for i in range(PER_BATCH)]
            wal.append_sync(events, epoch=epoch, ingest_time_ms=INGEST_MS + b)
    return directory


def segment_paths(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.wal"))


def frame_positions(segment: Path) -> list[tuple[int, int]]:
    """``(byte position, base offset)`` of each frame of an intact segment."""
    data, pos, found = segment.read_bytes(), 0, []
    while pos < len(data):
        header = parse_header(data, pos)
        found.append((pos, header.base_offset))
        pos += header.frame_bytes
    return found


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mtime: what a read-only tool must leave unchanged."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.iterdir())}


MIB = 1024 * 1024
# A 9 MiB event is healthy in a log written under these limits, not under the defaults.
LARGE = LogConfig(max_event_bytes=10 * MIB, max_batch_bytes=12 * MIB)
BIG_EVENT_BYTES = 9 * MIB


def write_large_log(directory: Path) -> Path:
    """Offsets 0..2: a small event, a 9 MiB one (lz4-compressed), a small one."""
    big = Event("big", {"blob": "ab" * (BIG_EVENT_BYTES // 2)})
    with Wal.open(directory, LARGE) as wal:
        wal.append_sync([event(0)], epoch=1, ingest_time_ms=INGEST_MS)
        wal.append_sync([big], epoch=1, ingest_time_ms=INGEST_MS)
        wal.append_sync([event(2)], epoch=1, ingest_time_ms=INGEST_MS)
    return directory
