"""Sparse offset -> byte position index of one segment, and its file format.

An entry is recorded for the first frame and then for the first frame that starts at
least ``index_interval_bytes`` after the previous entry. The index is a cache: it can
always be rebuilt by scanning the segment, and it is only trusted when its recorded
segment size equals the file's size and its checksum verifies.

File ``<base offset>.idx``, little-endian::

    magic "WALI" | version u8 | crc32c u32 of everything after it |
    base offset u64 | segment bytes u64 | end offset u64 | last epoch u64 |
    entry count u32 | (offset u64, position u64) * n

The base offset, end offset and last epoch let open check a sealed segment's place in
the log (contiguous offsets, epochs never going down) without scanning it.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import google_crc32c

from walrep.log.fsutil import DEFAULT_FILE_OPS, FileOps, write_atomic

_HEAD = struct.Struct("<4sBIQQQQI")
_ENTRY = struct.Struct("<QQ")
_MAGIC = b"WALI"
_VERSION = 2


@dataclass(slots=True)
class SparseIndex:
    interval_bytes: int
    offsets: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)

    def note(self, offset: int, position: int) -> None:
        """Called for every frame appended, in order; keeps one entry per interval."""
        if not self.positions or position - self.positions[-1] >= self.interval_bytes:
            self.offsets.append(offset)
            self.positions.append(position)

    def floor(self, offset: int) -> int:
        """Byte position of an indexed frame at or before ``offset`` (0 if none)."""
        i = bisect.bisect_right(self.offsets, offset) - 1
        return self.positions[i] if i >= 0 else 0

    def cut(self, position: int) -> None:
        """Forget entries at or beyond ``position`` (the segment was truncated there)."""
        i = bisect.bisect_left(self.positions, position)
        del self.offsets[i:]
        del self.positions[i:]

    def save(
        self,
        path: Path,
        *,
        base_offset: int,
        segment_bytes: int,
        end_offset: int,
        last_epoch: int,
        ops: FileOps = DEFAULT_FILE_OPS,
    ) -> None:
        head = _HEAD.pack(
            _MAGIC,
            _VERSION,
            0,
            base_offset,
            segment_bytes,
            end_offset,
            last_epoch,
            len(self.offsets),
        )
        body = head[9:]
        body += b"".join(
            _ENTRY.pack(o, p) for o, p in zip(self.offsets, self.positions, strict=True)
        )
        crc = google_crc32c.value(body)
        write_atomic(path, _MAGIC + bytes([_VERSION]) + crc.to_bytes(4, "little") + body, ops)

    @classmethod
    def load(
        cls, path: Path, interval_bytes: int, *, base_offset: int, segment_bytes: int
    ) -> LoadedIndex | None:
        """The index, its segment's end offset and last epoch; None if missing, damaged or stale."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if len(data) < _HEAD.size:
            return None
        magic, version, crc, base, size, end, last_epoch, count = _HEAD.unpack_from(data)
        if (
            magic != _MAGIC
            or version != _VERSION
            or google_crc32c.value(data[9:]) != crc
            or base != base_offset
            or size != segment_bytes
            or len(data) != _HEAD.size + count * _ENTRY.size
        ):
            return None
        index = cls(interval_bytes)
        for o, p in _ENTRY.iter_unpack(data[_HEAD.size :]):
            index.offsets.append(o)
            index.positions.append(p)
        return LoadedIndex(index, end, last_epoch)


class LoadedIndex(NamedTuple):
    sparse: SparseIndex
    end_offset: int
    last_epoch: int
