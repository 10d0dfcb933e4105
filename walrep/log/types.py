"""Plain result types of the log."""

from __future__ import annotations

from dataclasses import dataclass, field

from walrep.log.frame import HEADER_SIZE, Event, FrameHeader


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Offsets assigned to one append: ``[base_offset, base_offset + count)``."""

    base_offset: int
    count: int

    @property
    def end_offset(self) -> int:
        return self.base_offset + self.count


@dataclass(frozen=True, slots=True)
class Record:
    """One event as stored: its offset and the metadata of the frame that holds it."""

    offset: int
    epoch: int
    ingest_time_ms: int
    event: Event


@dataclass(frozen=True, slots=True)
class StoredFrame:
    """One checked frame as stored: where it is, its header and its exact bytes."""

    segment: str
    position: int
    header: FrameHeader
    data: bytes

    @property
    def payload(self) -> memoryview:
        return memoryview(self.data)[HEADER_SIZE:]


@dataclass(slots=True)
class RecoveryReport:
    """What opening the log found and did; every field empty after a clean shutdown."""

    torn_segment: str | None = None
    torn_position: int = 0
    torn_bytes: int = 0
    truncation_redone_to: int | None = None
    repaired: list[str] = field(default_factory=list)
    indexes_rebuilt: list[str] = field(default_factory=list)
    temp_files_removed: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = []
        if self.torn_segment is not None:
            out.append(
                f"torn tail truncated: {self.torn_bytes} bytes at byte {self.torn_position} "
                f"of {self.torn_segment}"
            )
        if self.truncation_redone_to is not None:
            out.append(f"interrupted truncation completed: log ends at {self.truncation_redone_to}")
        out += [f"repaired: {r}" for r in self.repaired]
        out += [f"index rebuilt: {p}" for p in self.indexes_rebuilt]
        out += [f"stale temp file removed: {p}" for p in self.temp_files_removed]
        return out
