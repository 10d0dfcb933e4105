"""``MemoryLog``'s simulated disk: segments of frame bytes, their crash image, recovery.

A ``DiskImage`` is what the disk holds: per segment the bytes written and how many of
them are durable (forced), the epoch entries (durable as ``EpochHistory.begin``
returns), the replica state and the limits. The simulator builds the image a crash
leaves from it (the durable bytes, maybe some of the unsynced ones, maybe a torn piece:
plain ``bytes`` it can cut) and ``recover_image`` opens it with ``Wal.open``'s decisions
(``recovery.plan_recovery``, ``reconcile_epochs``, ``settle_floor``).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from walrep.log.epochs import EpochEntry, EpochHistory
from walrep.log.frame import FrameHeader
from walrep.log.limits import LogLimits
from walrep.log.recovery import SegmentSummary, plan_recovery, reconcile_epochs, settle_floor
from walrep.log.replica_state import FILE_NAME as STATE_FILE
from walrep.log.replica_state import ReplicaState
from walrep.log.segment import segment_name
from walrep.log.types import RecoveryReport

PREFIX = "memory:"


@dataclass(frozen=True, slots=True)
class SegmentImage:
    """One segment on the simulated disk: its first ``durable_bytes`` survive any crash."""

    base_offset: int
    data: bytes
    durable_bytes: int


@dataclass(frozen=True, slots=True)
class DiskImage:
    """What a ``MemoryLog`` has on its simulated disk (``disk_image``, ``recover``)."""

    segments: tuple[SegmentImage, ...]
    epochs: tuple[EpochEntry, ...]
    replica_state: ReplicaState
    limits: LogLimits


class MemorySegment:
    """Frames of one pseudo segment; ``deleted`` once retention dropped it.

    Per frame: its bytes, header, byte position and end position, base and end offset
    (parallel lists, so that every lookup is a bisection).
    """

    __slots__ = (
        "base_offset",
        "bases",
        "deleted",
        "durable_bytes",
        "end_offsets",
        "ends",
        "frames",
        "headers",
        "positions",
    )

    def __init__(self, base_offset: int) -> None:
        self.base_offset = base_offset
        self.frames: list[bytes] = []
        self.headers: list[FrameHeader] = []
        self.positions: list[int] = []
        self.ends: list[int] = []
        self.bases: list[int] = []
        self.end_offsets: list[int] = []
        self.durable_bytes = 0  # the first bytes that survive a crash
        self.deleted = False

    @property
    def name(self) -> str:
        return PREFIX + segment_name(self.base_offset)

    @property
    def size(self) -> int:
        return self.ends[-1] if self.ends else 0

    @property
    def end_offset(self) -> int:
        return self.end_offsets[-1] if self.end_offsets else self.base_offset

    def add(self, frame: bytes, header: FrameHeader) -> None:
        position = self.size
        self.frames.append(frame)
        self.headers.append(header)
        self.positions.append(position)
        self.ends.append(position + len(frame))
        self.bases.append(header.base_offset)
        self.end_offsets.append(header.end_offset)

    def index_of(self, offset: int) -> int:
        """Index of the frame holding ``offset`` (``base_offset <= offset < end_offset``)."""
        return bisect.bisect_right(self.bases, offset) - 1

    def cut(self, index: int) -> None:
        """Forget the frames from ``index`` on."""
        for column in (
            self.frames,
            self.headers,
            self.positions,
            self.ends,
            self.bases,
            self.end_offsets,
        ):
            del column[index:]

    def durable_end(self) -> int:
        """End offset of the frames wholly within the durable bytes."""
        i = bisect.bisect_right(self.ends, self.durable_bytes)
        return self.end_offsets[i - 1] if i else self.base_offset

    def make_durable(self, end_offset: int) -> None:
        """The frames ending at or below ``end_offset`` are durable now."""
        i = bisect.bisect_right(self.end_offsets, end_offset)
        if i:
            self.durable_bytes = max(self.durable_bytes, self.ends[i - 1])

    def image(self) -> SegmentImage:
        return SegmentImage(self.base_offset, b"".join(self.frames), self.durable_bytes)


class _ImageSegment:
    """A segment of a disk image as ``recovery.plan_recovery`` sees it (never trusted)."""

    def __init__(self, image: SegmentImage) -> None:
        self.image = image

    @property
    def name(self) -> str:
        return PREFIX + segment_name(self.image.base_offset)

    @property
    def base_offset(self) -> int:
        return self.image.base_offset

    def trusted(self) -> SegmentSummary | None:
        return None  # no index here: every segment is scanned, as a repair does

    def data(self) -> bytes:
        return self.image.data


@dataclass(slots=True)
class Recovered:
    segments: list[MemorySegment]
    epochs: EpochHistory
    replica_state: ReplicaState
    report: RecoveryReport


def recover_image(image: DiskImage, limits: LogLimits, *, repair: bool) -> Recovered:
    """The log ``image`` holds, recovered under the read ``limits`` (as ``Wal.open``)."""
    inputs = [_ImageSegment(s) for s in image.segments] or [_ImageSegment(SegmentImage(0, b"", 0))]
    plan = plan_recovery(inputs, max_batch_bytes=limits.max_batch_bytes, repair=repair)
    report = RecoveryReport()
    segments = []
    for kept in plan.kept:
        source = inputs[kept.index]
        assert kept.frames is not None  # nothing is trusted without a scan here
        segment = MemorySegment(source.base_offset)
        data = source.data()
        for position, header in kept.frames:
            segment.add(data[position : position + header.frame_bytes], header)
        segment.durable_bytes = segment.size  # recovered: forced by the open
        segments.append(segment)
    if plan.torn is not None:
        report.torn_segment = inputs[plan.torn.segment].name
        report.torn_position = plan.torn.position
        report.torn_bytes = plan.torn.torn_bytes
    line = plan.repaired_line()
    if line is not None:
        report.repaired.append(line)
    epochs = EpochHistory.in_memory(image.epochs)
    newest = plan.kept[-1].frames
    assert newest is not None
    reconcile_epochs(epochs, plan.log_end, newest)
    state, line = settle_floor(
        image.replica_state, plan.log_end, repair=repair, name=PREFIX + STATE_FILE
    )
    if line is not None:
        report.repaired.append(line)
    return Recovered(segments, epochs, state, report)
