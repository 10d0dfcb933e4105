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

``plan_recovery`` applies the table to a whole log (segment after segment, continuity
and epochs across them) and says what to keep, cut and delete, without touching any
file: ``Wal.open`` (``open.py``) carries the plan out on files, ``MemoryLog.recover``
on bytes. ``reconcile_epochs`` and ``settle_floor`` are the two decisions after it.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from walrep.errors import CorruptLogError
from walrep.log.epochs import EpochHistory
from walrep.log.frame import HEADER_SIZE, MAGIC, FrameHeader, FrameStatus, inspect_frame
from walrep.log.replica_state import ReplicaState


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
    data: bytes, pos: int, expected_offset: int, prev_epoch: int, max_batch_bytes: int
) -> Observation:
    """Answer "frame complete?" and "CRC ok?" for the bytes at ``pos``."""
    status, header = inspect_frame(data, pos, max_batch_bytes)
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
    if looks_torn and next_intact_frame(data, pos + 1, max_batch_bytes) is None:
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
    data: bytes, start: int, max_batch_bytes: int
) -> tuple[int, FrameHeader] | None:
    """Position and header of the first intact frame starting at or after ``start``."""
    at = data.find(MAGIC, start)
    while at != -1:
        status, header = inspect_frame(data, at, max_batch_bytes)
        if status is FrameStatus.OK and header is not None:
            return at, header
        at = data.find(MAGIC, at + 1)
    return None


def scan_segment(
    data: bytes,
    *,
    base_offset: int,
    last_segment: bool,
    max_batch_bytes: int,
    prev_epoch: int = 0,
) -> ScanResult:
    """Walk every frame of one segment's bytes and apply ``RECOVERY_TABLE``."""
    result = ScanResult(end_offset=base_offset)
    pos, epoch = 0, prev_epoch
    while pos < len(data):
        seen = observe(data, pos, result.end_offset, epoch, max_batch_bytes)
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


# --- a whole log --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SegmentSummary:
    """What a fresh sparse index says of a sealed segment, so that it need not be scanned."""

    end_offset: int
    last_epoch: int
    size: int


class SegmentInput(Protocol):
    """One segment as recovery sees it: a name for errors, a base offset, its bytes."""

    @property
    def name(self) -> str: ...

    @property
    def base_offset(self) -> int: ...

    def trusted(self) -> SegmentSummary | None:
        """A summary to trust instead of scanning (a fresh index), or None."""

    def data(self) -> bytes:
        """All bytes of the segment."""


@dataclass(frozen=True, slots=True)
class KeptSegment:
    """A segment that stays: ``[base, end_offset)`` in its first ``size`` bytes.

    ``frames`` are the scanned frames (None when a trusted summary stood in for a scan).
    When ``size`` is below the segment's bytes, its file is cut there.
    """

    index: int
    end_offset: int
    last_epoch: int
    size: int
    frames: list[tuple[int, FrameHeader]] | None


@dataclass(frozen=True, slots=True)
class TornTail:
    segment: int  # index of the newest segment in the inputs
    position: int
    torn_bytes: int


@dataclass(slots=True)
class RecoveryPlan:
    """What opening a log keeps, cuts and deletes (``plan_recovery``)."""

    kept: list[KeptSegment] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)  # inputs a repair deletes, in order
    torn: TornTail | None = None
    repaired: CorruptLogError | None = None  # the damage a repair cut the log before

    @property
    def log_end(self) -> int:
        return self.kept[-1].end_offset

    def repaired_line(self) -> str | None:
        """The report line of the repair (None if there was none)."""
        if self.repaired is None:
            return None
        return (
            f"{self.repaired}; dropped offsets from {self.repaired.offset} on "
            f"({len(self.dropped)} later segment(s) deleted)"
        )


def plan_recovery(
    segments: Sequence[SegmentInput], *, max_batch_bytes: int, repair: bool
) -> RecoveryPlan:
    """Judge every segment, oldest first (see ``open.py`` for the steps).

    Raises ``CorruptLogError`` at the first damage other than a torn tail of the newest
    segment, unless ``repair``: then the plan cuts the log just before it. A repair
    scans every segment, since the damage it is asked to cut is usually found by a read,
    behind a fresh index.
    """
    assert segments, "recovery needs at least one segment"
    plan = RecoveryPlan()
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        before = plan.kept[-1] if plan.kept else None
        expected = before.end_offset if before else segment.base_offset
        if segment.base_offset != expected:
            reason = (
                f"segment starts at offset {segment.base_offset}, previous one ends at {expected}"
            )
            damage, scanned = CorruptLogError(segment.name, 0, expected, reason), None
        else:
            summary = None if last or repair else segment.trusted()
            if summary is not None:
                plan.kept.append(
                    KeptSegment(i, summary.end_offset, summary.last_epoch, summary.size, None)
                )
                continue
            data = segment.data()
            result = scan_segment(
                data,
                base_offset=segment.base_offset,
                last_segment=last,
                max_batch_bytes=max_batch_bytes,
                prev_epoch=before.last_epoch if before else 0,
            )
            epoch = (
                result.frames[-1][1].epoch
                if result.frames
                else (before.last_epoch if before else 0)
            )
            scanned = KeptSegment(i, result.end_offset, epoch, result.valid_bytes, result.frames)
            stop = result.stop
            if stop is None or stop.action is Action.TRUNCATE_TAIL:
                plan.kept.append(scanned)
                if stop is not None:
                    plan.torn = TornTail(i, stop.position, len(data) - stop.position)
                continue
            damage = CorruptLogError(segment.name, stop.position, stop.offset, stop.reason)
        if not repair:
            raise damage
        if scanned is not None and (damage.position > 0 or not plan.kept):
            plan.kept.append(scanned)  # cut just before the damaged frame
            plan.dropped = list(range(i + 1, len(segments)))
        else:  # nothing of the damaged segment can be kept
            plan.dropped = list(range(i, len(segments)))
        plan.repaired = damage
        break
    return plan


def reconcile_epochs(
    epochs: EpochHistory, log_end: int, newest_frames: Sequence[tuple[int, FrameHeader]]
) -> None:
    """The history after recovery: entries at or past the end dropped, and epochs found
    in the newest segment but missing from the history (a lost or older file) added.

    An entry is made durable before its epoch's first frame is written, so one that
    starts at the recovered end names frames a crash lost: it is dropped, or the node
    would report a last epoch it holds no event of (and a peer's KIP-101 answer to it
    would be wrong). The highest epoch seen is kept in the replica state instead."""
    epochs.truncate_from(log_end)
    for _, header in newest_frames:
        if header.epoch > epochs.last_epoch:
            epochs.begin(header.epoch, header.base_offset)


def settle_floor(
    state: ReplicaState, log_end: int, *, repair: bool, name: str
) -> tuple[ReplicaState, str | None]:
    """The replica state after recovery, and a report line if it had to change.

    A committed floor above the recovered log end means committed events are missing
    here: ``CorruptLogError`` (naming the state file ``name``), unless ``repair``, which
    lowers the floor to the log end and says so.
    """
    floor = state.committed_floor
    if floor <= log_end:
        return state, None
    if not repair:
        reason = (
            f"the log ends at {log_end}, below the committed floor {floor}: committed events "
            "are missing (restore from the peer, or open with repair=True)"
        )
        raise CorruptLogError(name, 0, log_end, reason)
    line = f"committed floor lowered from {floor} to the log end {log_end}"
    return dataclasses.replace(state, committed_floor=log_end), line
