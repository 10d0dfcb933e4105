"""Carrying out ``ReadFrames``: whole frames from a log, within a byte budget (pure).

Both executors (the asyncio process and the simulator) read with this one function.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from walrep.errors import OffsetOutOfRangeError, WalrepError
from walrep.log.types import StoredFrame


class FrameSource(Protocol):
    @property
    def log_start(self) -> int: ...
    @property
    def log_end(self) -> int: ...
    def frames(
        self, from_offset: int | None = None, to_offset: int | None = None
    ) -> Iterator[StoredFrame]: ...


def read_frames(
    log: FrameSource, from_offset: int, max_bytes: int
) -> tuple[int, int, bytes] | WalrepError:
    """``(base, end, frames)``: the frame holding ``from_offset``, then the frames after it
    while they fit ``max_bytes`` (at least one); or the typed error of the read."""
    parts: list[bytes] = []
    size = base = end = 0
    try:
        for frame in log.frames(from_offset):
            if parts and size + len(frame.data) > max_bytes:
                break
            if not parts:
                base = frame.header.base_offset
            parts.append(frame.data)
            size += len(frame.data)
            end = frame.header.end_offset
    except WalrepError as e:
        return e
    if not parts:
        return OffsetOutOfRangeError(from_offset, log.log_start, log.log_end)
    return base, end, b"".join(parts)
