"""A node's log read offline, for replay: batches of records in offset order.

``LogSource`` reads a data directory (a live node's, or a copy of a dead node's disk)
through ``walrep.log.walk``: segment files read whole and judged by the recovery scanner
under the limits the log records, every payload decoded. Nothing is written and no lock
is taken. Ordering contract: ``batches`` yields records strictly in offset order, each
offset once, consecutive from where it starts: the engine's own precondition.

Damage (a frame that fails its CRC or sequence check, a payload that does not decode,
segments missing) raises ``DamagedLogError`` naming the first offset concerned, the file
and the byte, when it lies in the range read. With ``skip_damaged`` the offsets of the
damage are replayed as *blank* records instead (the engine counts nothing for them:
the empty stream name is its own marker of a skipped record, see ``Engine._dedup``), so
the offsets stay consecutive; each run of blanks is reported in ``skipped``. A torn
tail at the end of the newest segment (an interrupted write, what opening the log
truncates) ends the log there, as it does for the node: it is noted in ``torn_tail``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, cast

from walrep.log.epochs import EpochHistory
from walrep.log.frame import Event
from walrep.log.recovery import Action, next_intact_frame, scan_segment
from walrep.log.types import Record
from walrep.log.walk import (
    CheckedFrame,
    Finding,
    FindingKind,
    read_limits,
    segment_files,
    walk_log,
)
from walrep.replay.errors import DamagedLogError

BATCH_RECORDS_MAX: Final = 4096  # records per apply call (the engine's cost is per call too)
BLANK: Final = cast(Event, ["", None])  # what the engine skips (a skipped duplicate's mark)


@dataclass(frozen=True, slots=True)
class SkippedRange:
    """Offsets ``[first, end)`` replayed as blanks because the log is damaged there."""

    first: int
    end: int
    where: str
    reason: str

    def to_json(self) -> dict[str, object]:
        return {"from": self.first, "to": self.end, "where": self.where, "reason": self.reason}


def _segment_end(data: bytes, base: int, max_batch_bytes: int) -> int:
    """One past the last offset of the newest segment's intact frames (also those after
    damage: a replay may skip it), as the walk will find them; a torn tail ends it."""
    start, expected = 0, base
    while True:
        scan = scan_segment(
            data[start:], base_offset=expected, last_segment=True, max_batch_bytes=max_batch_bytes
        )
        if scan.stop is None or scan.stop.action is Action.TRUNCATE_TAIL:
            return scan.end_offset
        resume = next_intact_frame(data, start + scan.stop.position + 1, max_batch_bytes)
        if resume is None:
            return scan.end_offset
        start, expected = resume[0], resume[1].base_offset


def _where(finding: Finding) -> str:
    where = str(finding.path)
    if finding.position is not None:
        where += f" at byte {finding.position}"
    return where


class LogSource:
    """The log of one data directory, read-only (see the module docstring).

    ``log_start`` is the first offset held (older segments may have been deleted by
    retention), ``log_end`` one past the last intact record, ``epochs`` the epoch
    history the node recorded beside its log.
    """

    def __init__(self, directory: Path, *, skip_damaged: bool = False) -> None:
        self.directory = directory
        self.skip_damaged = skip_damaged
        self.limits = read_limits(directory)
        files = segment_files(directory)  # NotALogError: not a log directory
        self.log_start = files[0][0]
        self.epochs = EpochHistory.load(directory)
        base, last = files[-1]
        self.log_end = _segment_end(last.read_bytes(), base, self.limits.max_batch_bytes)
        self.skipped: list[SkippedRange] = []
        self.torn_tail: Finding | None = None

    def epoch_at(self, offset: int) -> int | None:
        """The epoch of the record at ``offset`` by the node's epoch history."""
        return self.epochs.epoch_at(offset)

    def batches(
        self,
        from_offset: int,
        to_offset: int | None = None,
        *,
        max_records: int = BATCH_RECORDS_MAX,
    ) -> Iterator[list[Record]]:
        """Lists of consecutive records from ``from_offset`` up to ``to_offset``
        (exclusive; None: the end of the log), at most ``max_records`` each."""
        out: list[Record] = []
        for record_list in self._runs(from_offset, to_offset):
            out += record_list
            while len(out) >= max_records:
                yield out[:max_records]
                del out[:max_records]
        if out:
            yield out

    def _runs(self, from_offset: int, to_offset: int | None) -> Iterator[list[Record]]:
        """Records frame by frame (blanks for skipped damage), consecutive."""
        next_offset = from_offset
        damage: Finding | None = None
        for item in walk_log(
            self.directory, self.limits, from_offset=from_offset, to_offset=to_offset
        ):
            if isinstance(item, Finding):
                if item.kind is FindingKind.TORN_TAIL:
                    self.torn_tail = item
                elif item.kind is FindingKind.CORRUPT and damage is None:
                    damage = item
                continue
            if not isinstance(item, CheckedFrame):
                continue  # a segment file about to be read
            header = item.header
            if header.end_offset <= next_offset:
                damage = None  # damage before the range: it concerns nothing read
                continue
            if header.base_offset > next_offset:
                gap_end = (
                    header.base_offset if to_offset is None else min(header.base_offset, to_offset)
                )
                yield self._blank(next_offset, gap_end, damage, item)
                next_offset = gap_end
                if to_offset is not None and next_offset >= to_offset:
                    return
            damage = None
            skip = next_offset - header.base_offset
            events = item.events[skip:]
            if to_offset is not None and header.end_offset > to_offset:
                events = events[: to_offset - next_offset]
            epoch, ingest = header.epoch, header.ingest_time_ms
            yield [Record(o, epoch, ingest, e) for o, e in enumerate(events, next_offset)]
            next_offset += len(events)
            if to_offset is not None and next_offset >= to_offset:
                return
        if damage is not None and (to_offset is None or next_offset < to_offset):
            end = to_offset if to_offset is not None else max(self.log_end, next_offset)
            if end > next_offset or not self.skip_damaged:
                yield self._blank(next_offset, end, damage, None)

    def _blank(
        self, first: int, end: int, damage: Finding | None, after: CheckedFrame | None
    ) -> list[Record]:
        """Blank records for ``[first, end)``, or ``DamagedLogError`` without skipping."""
        if damage is not None:
            where, reason = _where(damage), damage.reason
        else:
            assert after is not None
            where = f"{after.segment} before byte {after.position}"
            reason = f"offsets {first}..{after.header.base_offset - 1} are missing"
        if not self.skip_damaged:
            raise DamagedLogError(first, where, reason)
        self.skipped.append(SkippedRange(first, end, where, reason))
        return [Record(o, 0, 0, BLANK) for o in range(first, end)]
