"""Shared helpers of the write-ahead log tests: tiny configs, events, file surgery."""

from __future__ import annotations

import errno
import shutil
from collections.abc import Sequence
from pathlib import Path

from walrep.log import Event, FileOps, FsyncPolicy, LogConfig, Record, Wal
from walrep.log.frame import HEADER_SIZE, FrameStatus, inspect_frame

# Small enough that segments roll every few frames and lz4 kicks in for medium batches.
TINY = LogConfig(
    segment_bytes_max=2048,
    max_event_bytes=512,
    max_batch_bytes=1024,
    compress_threshold_bytes=256,
    index_interval_bytes=128,
)

# Sealed segments of at most 1 KiB, so that exhaustive per-byte damage stays cheap.
SMALL = LogConfig(
    segment_bytes_max=1024,
    max_event_bytes=256,
    max_batch_bytes=512,
    compress_threshold_bytes=128,
    index_interval_bytes=64,
)

NEVER_SYNC = FsyncPolicy.NEVER


def event(i: int, stream: str = "api", pad: int = 0) -> Event:
    """A deterministic event; ``pad`` adds a compressible attribute of that many bytes."""
    attrs: dict[str, object] = {"i": i, "path": f"/orders/{i % 7}", "ok": i % 3 != 0}
    if pad:
        attrs["pad"] = "ab" * (pad // 2)
    return Event(stream, attrs)


def batch(start: int, count: int, pad: int = 0) -> list[Event]:
    return [event(start + k, pad=pad) for k in range(count)]


def pairs(wal: Wal, from_offset: int | None = None) -> list[tuple[int, Event]]:
    return [(r.offset, r.event) for r in wal.read(from_offset)]


def records(wal: Wal, from_offset: int | None = None) -> list[Record]:
    return list(wal.read(from_offset))


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.wal"))


def index_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.idx"))


def frame_positions(data: bytes, max_batch_bytes: int) -> list[tuple[int, int, int]]:
    """``(position, frame bytes, base offset)`` of every intact frame of a clean segment."""
    out, pos = [], 0
    while pos < len(data):
        status, header = inspect_frame(data, pos, max_batch_bytes)
        assert status is FrameStatus.OK and header is not None, (pos, status)
        out.append((pos, header.frame_bytes, header.base_offset))
        pos += header.frame_bytes
    return out


def frame_at(frames: list[tuple[int, int, int]], byte: int) -> tuple[int, int, int]:
    """The frame that holds byte position ``byte``."""
    for pos, size, base in frames:
        if pos <= byte < pos + size:
            return pos, size, base
    raise AssertionError(f"byte {byte} is in no frame")


def copy_log(source: Path, target: Path) -> Path:
    """A copy of a closed log directory (without its lock file)."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("LOCK"))
    return target


def flip_bit(path: Path, byte: int, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[byte] ^= 1 << bit
    path.write_bytes(bytes(data))


def dir_snapshot(directory: Path) -> dict[str, bytes]:
    """Name -> content of every file but the lock file."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.name != "LOCK"}


__all__ = [
    "HEADER_SIZE",
    "NEVER_SYNC",
    "SMALL",
    "TINY",
    "batch",
    "copy_log",
    "dir_snapshot",
    "event",
    "flip_bit",
    "frame_at",
    "frame_positions",
    "index_files",
    "pairs",
    "records",
    "segment_files",
]


class FaultyOps(FileOps):
    """Raises EIO from the operations named in ``failing``; counts every call."""

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.calls: dict[str, int] = {}

    def _call(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if name in self.failing:
            raise OSError(errno.EIO, f"injected {name} failure")

    def pwritev(self, fd: int, buffers: Sequence[bytes | memoryview], offset: int) -> int:
        self._call("pwritev")
        return super().pwritev(fd, buffers, offset)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        self._call("write")
        return super().write(fd, data)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        self._call("pwrite")
        return super().pwrite(fd, data, offset)

    def ftruncate(self, fd: int, length: int) -> None:
        self._call("ftruncate")
        super().ftruncate(fd, length)

    def fdatasync(self, fd: int) -> None:
        self._call("fdatasync")
        super().fdatasync(fd)

    def fsync(self, fd: int) -> None:
        self._call("fsync")
        super().fsync(fd)

    def pread(self, fd: int, count: int, offset: int) -> bytes:
        self._call("pread")
        return super().pread(fd, count, offset)
