"""The frames a ``Wal`` wrote last, kept in memory so shipping them reads no file.

The active ships what it has just written; reading it back means preads and a CRC pass
per frame for bytes the writer held a moment ago. ``RecentFrames`` keeps the newest
frames, the very buffers written (header and payload), bounded in bytes (oldest evicted
first); a reader asks it first, by a frame's base offset, and goes to the segment file on
a miss (catch-up of older offsets, a reader positioned inside a frame, anything evicted).
Keeping costs the writer a tuple and a dict entry; the bytes are joined only when read.

Contract: ``add`` runs in the writer thread under the log's lock, after the bytes were
written (``pwritev`` returned) and before ``log_end`` covers them, so any offset below
``log_end`` that the ring holds is on the file too; ``drop_from`` runs under the same lock
before a truncation becomes visible, ``drop_below`` after retention deleted segments.
Lookups take no lock: a ``dict`` read is atomic, and what it returns is immutable.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Generic, TypeVar

from walrep.log.frame import FrameHeader

S = TypeVar("S")  # where a frame was written (the Wal's Segment)
Buffer = bytes | memoryview


class RecentFrames(Generic[S]):
    """Newest frames by base offset, at most ``max_bytes`` of them (0: keep none)."""

    __slots__ = ("_by_base", "_bytes", "_order", "max_bytes")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        # base offset -> (header, position in the segment, buffers written, segment)
        self._by_base: dict[int, tuple[FrameHeader, int, Sequence[Buffer], S]] = {}
        self._order: deque[int] = deque()  # base offsets, oldest first
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._order)

    @property
    def kept_bytes(self) -> int:
        return self._bytes

    def add(
        self, header: FrameHeader, position: int, buffers: Sequence[Buffer], segment: S
    ) -> None:
        """Keep the frame ``buffers`` make up (written at ``position`` of ``segment``);
        evict the oldest beyond the bound. The buffers must not change afterwards."""
        size = header.frame_bytes
        if size > self.max_bytes:
            return
        self._by_base[header.base_offset] = (header, position, buffers, segment)
        self._order.append(header.base_offset)
        self._bytes += size
        while self._bytes > self.max_bytes:
            self._bytes -= self._by_base.pop(self._order.popleft())[0].frame_bytes

    def get(self, base_offset: int) -> tuple[FrameHeader, int, bytes, S] | None:
        """The frame starting at ``base_offset`` if it is kept: its header, position,
        bytes (joined now) and segment."""
        kept = self._by_base.get(base_offset)
        if kept is None:
            return None
        header, position, buffers, segment = kept
        return header, position, b"".join(buffers), segment

    def drop_from(self, offset: int) -> None:
        """Forget every frame ending above ``offset`` (a truncation to ``offset``)."""
        while self._order:
            header = self._by_base[self._order[-1]][0]
            if header.end_offset <= offset:
                return
            del self._by_base[self._order.pop()]
            self._bytes -= header.frame_bytes

    def drop_below(self, offset: int) -> None:
        """Forget every frame starting below ``offset`` (retention moved ``log_start``)."""
        while self._order and self._order[0] < offset:
            self._bytes -= self._by_base.pop(self._order.popleft())[0].frame_bytes
