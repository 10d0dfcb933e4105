"""Recovery of a segment's bytes on open: a pure scanner and its decision table.

The scanner walks the frames of one segment's bytes and classifies each position by
three questions, then looks the answer up in ``RECOVERY_TABLE``:

* **last segment?**  Only the newest segment can end in a torn write: a segment is
  fsynced before the next one is created, so a sealed segment must be whole.
* **frame complete?**  All of the frame's bytes reached the file. A frame is *not*
  complete when it runs past the end of the file, when fewer bytes than a header
  remain, or when its bytes end in a run of zeros up to the end of the file (blocks
  the file system allocated but never wrote: JSON and lz4 literals never end in NUL).
  If an intact frame exists anywhere after it, it is not a torn tail but damage in
  the middle, and counts as complete (and not intact).
* **CRC ok?**  The CRC32C matches and the frame is in sequence (the expected base
  offset, an epoch not lower than the previous frame's).

Only a torn tail of the last segment is repaired automatically (truncated, reported
with its byte count). Anything else is ``CORRUPT``: the log refuses to open and names
segment, position and offset, unless the caller explicitly asks for a repair.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from walrep.log.frame import HEADER_SIZE, MAGIC, FrameHeader, FrameStatus, inspect_frame


class Action(enum.Enum):
    KEEP = "keep the frame"
    TRUNCATE_TAIL = "truncate the torn tail"
    CORRUPT = "refuse: corrupt"
    IMPOSSIBLE = "impossible combination"


# (last segment?, frame complete?, CRC ok?) -> action. An incomplete frame cannot be
# checked, so "incomplete and CRC ok" cannot occur; the table still says so.
RECOVERY_TABLE: dict[tuple[bool, bool, bool], Action] = {
    (True, True, True): Action.KEEP,
    (True, True, False): Action.CORRUPT,
    (True, False, False): Action.TRUNCATE_TAIL,
    (True, False, True): Action.IMPOSSIBLE,
    (False, True, True): Action.KEEP,
    (False, True, False): Action.CORRUPT,
    (False, False, False): Action.CORRUPT,
    (False, False, True): Action.IMPOSSIBLE,
}


@dataclass(frozen=True, slots=True)
class Stop:
    """Where and why a scan stopped before the end of the bytes."""

    action: Action
    position: int
    offset: int
    reason: str


@dataclass(slots=True)
class ScanResult:
    frames: list[tuple[int, FrameHeader]] = field(default_factory=list)
    valid_bytes: int = 0
    end_offset: int = 0
    stop: Stop | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    """The three inputs of the table for one position, plus a reason for the report."""

    complete: bool
    crc_ok: bool
    reason: str
    header: FrameHeader | None


def observe(
    data: bytes, pos: int, expected_offset: int, prev_epoch: int, max_payload_bytes: int
) -> Observation:
    """Answer "frame complete?" and "CRC ok?" for the bytes at ``pos``."""
    status, header = inspect_frame(data, pos, max_payload_bytes)
    if status is FrameStatus.OK:
        assert header is not None
        if header.base_offset != expected_offset:
            reason = f"frame has base offset {header.base_offset}, {expected_offset} expected"
            return Observation(True, False, reason, header)
        if header.epoch < prev_epoch:
            reason = f"epoch {header.epoch} after epoch {prev_epoch}"
            return Observation(True, False, reason, header)
        return Observation(True, True, "ok", header)
    looks_torn = status in (
        FrameStatus.SHORT_HEADER,
        FrameStatus.SHORT_PAYLOAD,
    ) or _zero_filled_tail(data, pos, header)
    if looks_torn and next_intact_frame(data, pos + 1, max_payload_bytes) is None:
        return Observation(False, False, f"torn write ({status.value})", header)
    return Observation(True, False, status.value, header)


def _zero_filled_tail(data: bytes, pos: int, header: FrameHeader | None) -> bool:
    """The frame's bytes end in unwritten zeros that run up to the end of the file.

    Either the zeros start inside the header (whose fields are then not to be trusted:
    a whole frame never ends in a NUL, so it cannot be mostly zeros), or the header is
    whole and the frame reaches exactly the end of the file, ending in a zero.
    """
    if len(data.rstrip(b"\0")) < pos + HEADER_SIZE:
        return True
    return header is not None and pos + header.frame_bytes == len(data) and data[-1] == 0


def next_intact_frame(
    data: bytes, start: int, max_payload_bytes: int
) -> tuple[int, FrameHeader] | None:
    """Position and header of the first intact frame starting at or after ``start``."""
    at = data.find(MAGIC, start)
    while at != -1:
        status, header = inspect_frame(data, at, max_payload_bytes)
        if status is FrameStatus.OK and header is not None:
            return at, header
        at = data.find(MAGIC, at + 1)
    return None


def scan_segment(
    data: bytes,
    *,
    base_offset: int,
    last_segment: bool,
    max_payload_bytes: int,
    prev_epoch: int = 0,
) -> ScanResult:
    """Walk every frame of one segment's bytes and apply ``RECOVERY_TABLE``."""
    result = ScanResult(end_offset=base_offset)
    pos, epoch = 0, prev_epoch
    while pos < len(data):
        seen = observe(data, pos, result.end_offset, epoch, max_payload_bytes)
        action = RECOVERY_TABLE[(last_segment, seen.complete, seen.crc_ok)]
        assert action is not Action.IMPOSSIBLE, seen
        if action is not Action.KEEP:
            result.stop = Stop(action, pos, result.end_offset, seen.reason)
            break
        assert seen.header is not None
        result.frames.append((pos, seen.header))
        pos += seen.header.frame_bytes
        epoch = seen.header.epoch
        result.valid_bytes = pos
        result.end_offset = seen.header.end_offset
    return result
