"""Sparse offset -> byte position index of one segment, and its file format.

An entry is recorded for the first frame and then for the first frame that starts at
least ``index_interval_bytes`` after the previous entry. The index is a cache: it can
always be rebuilt by scanning the segment, and it is only trusted when its recorded
segment size equals the file's size and its checksum verifies.

File ``<base offset>.idx``, little-endian::

    magic "WALI" | version u8 | crc32c u32 of everything after it |
    segment bytes u64 | end offset u64 | entry count u32 | (offset u64, position u64) * n
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass, field
from pathlib import Path

import google_crc32c

from walrep.log.fsutil import write_atomic

_HEAD = struct.Struct("<4sBIQQI")
_ENTRY = struct.Struct("<QQ")
_MAGIC = b"WALI"
_VERSION = 1


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

    def save(self, path: Path, segment_bytes: int, end_offset: int) -> None:
        body = _HEAD.pack(_MAGIC, _VERSION, 0, segment_bytes, end_offset, len(self.offsets))[9:]
        body += b"".join(
            _ENTRY.pack(o, p) for o, p in zip(self.offsets, self.positions, strict=True)
        )
        crc = google_crc32c.value(body)
        write_atomic(path, _MAGIC + bytes([_VERSION]) + crc.to_bytes(4, "little") + body)

    @classmethod
    def load(
        cls, path: Path, interval_bytes: int, segment_bytes: int
    ) -> tuple[SparseIndex, int] | None:
        """The index and its segment's end offset, or None if missing, damaged or stale."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if len(data) < _HEAD.size:
            return None
        magic, version, crc, size, end, count = _HEAD.unpack_from(data)
        if (
            magic != _MAGIC
            or version != _VERSION
            or google_crc32c.value(data[9:]) != crc
            or size != segment_bytes
            or len(data) != _HEAD.size + count * _ENTRY.size
        ):
            return None
        index = cls(interval_bytes)
        for o, p in _ENTRY.iter_unpack(data[_HEAD.size :]):
            index.offsets.append(o)
            index.positions.append(p)
        return index, end
