"""Read-only walk over a log directory's segments: shared by ``walrep log dump`` and verify.

Nothing here writes to the directory or takes its ``LOCK``, so it can read the log of a
running node or a copy. Segment files are read whole and judged by the same pure
scanner that recovery uses (``recovery.scan_segment``), under the limits the log records
(``limits.py``; the defaults for a log without the file); every payload is decoded too.

``walk_log`` yields, in log order, a ``SegmentFile`` before each segment, a
``CheckedFrame`` for every intact frame and a ``Finding`` for every problem. Unlike
open, it does not stop at damage: after a damaged frame it resumes at the next intact
frame of the segment, and it goes on with the later segments.

Kinds of finding: ``corrupt`` (open would refuse the log, or a file open trusts
disagrees with the frames), ``torn_tail`` (an incomplete write at the end of the newest
segment, which open truncates) and ``info`` (something open fixes by itself, or that
does not matter to it: a missing index, a pending truncation; never damage).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from walrep.errors import LogError, MalformedFrameError
from walrep.log.frame import (
    FLAG_LZ4,
    HEADER_SIZE,
    Event,
    FrameHeader,
    decode_payload,
)
from walrep.log.limits import DEFAULT_LIMITS, LogLimits, load_limits
from walrep.log.recovery import Action, next_intact_frame, scan_segment
from walrep.log.segment import SUFFIX, parse_segment_name

# Findings reported per segment before the rest of a badly damaged segment is skipped.
MAX_FINDINGS_PER_SEGMENT: Final = 20


class NotALogError(LogError):
    """The directory holds no segment file: it is not (the copy of) a log directory."""


class FindingKind(enum.Enum):
    CORRUPT = "corrupt"
    TORN_TAIL = "torn_tail"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: the file it is in, where, the first offset concerned, and why.

    ``path`` is a segment, an index, the epoch history or the truncation intent record;
    ``position`` (bytes into that file) and ``offset`` are None when they do not apply.
    """

    kind: FindingKind
    path: Path
    position: int | None
    offset: int | None
    reason: str

    def __str__(self) -> str:
        where = str(self.path)
        if self.position is not None:
            where += f" at byte {self.position}"
        if self.offset is not None:
            where += f" (offset {self.offset})"
        return f"{self.kind.value}: {where}: {self.reason}"


@dataclass(frozen=True, slots=True)
class SegmentFile:
    """A segment about to be walked: its file, base offset (from its name) and size."""

    path: Path
    base_offset: int
    file_bytes: int
    last: bool


@dataclass(frozen=True, slots=True)
class CheckedFrame:
    """An intact, in-sequence frame whose payload decoded, with its events."""

    segment: Path
    position: int
    header: FrameHeader
    events: tuple[Event, ...]
    uncompressed_bytes: int

    @property
    def codec(self) -> str:
        return "lz4" if self.header.flags & FLAG_LZ4 else "none"


@dataclass(frozen=True, slots=True)
class Counts:
    """Totals over some frames; ``epochs`` are ``(epoch, first offset)`` in log order."""

    frames: int
    events: int
    frame_bytes: int
    payload_bytes: int
    uncompressed_bytes: int
    first_offset: int | None
    last_offset: int | None
    epochs: tuple[tuple[int, int], ...]

    @property
    def compression_ratio(self) -> float | None:
        """Uncompressed payload bytes per stored payload byte (None without frames)."""
        return self.uncompressed_bytes / self.payload_bytes if self.payload_bytes else None


@dataclass(frozen=True, slots=True)
class SegmentStats:
    """One segment: its file, base offset (from its name), size and its intact frames."""

    path: Path
    base_offset: int
    file_bytes: int
    counts: Counts


@dataclass(slots=True)
class StatsAccumulator:
    """``Counts`` built frame by frame (shared by verify and ``dump --stats``)."""

    frames: int = 0
    events: int = 0
    frame_bytes: int = 0
    payload_bytes: int = 0
    uncompressed_bytes: int = 0
    first_offset: int | None = None
    last_offset: int | None = None
    epochs: list[tuple[int, int]] = field(default_factory=list)

    def add(self, frame: CheckedFrame) -> None:
        header = frame.header
        self.frames += 1
        self.events += header.count
        self.frame_bytes += header.frame_bytes
        self.payload_bytes += header.payload_bytes
        self.uncompressed_bytes += frame.uncompressed_bytes
        if self.first_offset is None:
            self.first_offset = header.base_offset
        self.last_offset = header.end_offset - 1
        if not self.epochs or self.epochs[-1][0] != header.epoch:
            self.epochs.append((header.epoch, header.base_offset))

    def counts(self) -> Counts:
        return Counts(
            self.frames,
            self.events,
            self.frame_bytes,
            self.payload_bytes,
            self.uncompressed_bytes,
            self.first_offset,
            self.last_offset,
            tuple(self.epochs),
        )


def total_counts(parts: Sequence[Counts]) -> Counts:
    """One ``Counts`` for several, in log order (an epoch spanning segments counts once)."""
    epochs: list[tuple[int, int]] = []
    for part in parts:
        for epoch in part.epochs:
            if not epochs or epochs[-1][0] != epoch[0]:
                epochs.append(epoch)
    firsts = [p.first_offset for p in parts if p.first_offset is not None]
    lasts = [p.last_offset for p in parts if p.last_offset is not None]
    return Counts(
        sum(p.frames for p in parts),
        sum(p.events for p in parts),
        sum(p.frame_bytes for p in parts),
        sum(p.payload_bytes for p in parts),
        sum(p.uncompressed_bytes for p in parts),
        firsts[0] if firsts else None,
        lasts[-1] if lasts else None,
        tuple(epochs),
    )


LogItem = SegmentFile | CheckedFrame | Finding


def segment_files(directory: Path) -> list[tuple[int, Path]]:
    """``(base offset, path)`` of every segment file, oldest first."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError) as e:
        raise NotALogError(f"{directory} is not a directory") from e
    found = sorted((b, directory / n) for n in names if (b := parse_segment_name(n)) is not None)
    if not found:
        raise NotALogError(f"{directory} holds no segment files (*{SUFFIX}): not a log directory")
    return found


def read_limits(directory: Path) -> LogLimits:
    """The limits recorded in ``directory`` (the defaults without a file).

    ``CorruptLogError`` naming the file if it is damaged.
    """
    return load_limits(directory) or DEFAULT_LIMITS


def walk_log(
    directory: Path,
    limits: LogLimits | None = None,
    *,
    from_offset: int = 0,
    to_offset: int | None = None,
) -> Iterator[LogItem]:
    """Segments, intact frames and findings in log order (see the module docstring).

    ``limits`` default to the directory's (``read_limits``). Segments wholly outside
    ``[from_offset, to_offset)`` (judged by their names) are not read, and no continuity
    check is made across them.
    """
    files = segment_files(directory)
    if limits is None:
        limits = read_limits(directory)
    expected: int | None = None  # where the next segment must start, if known
    epoch = 0
    for i, (base, path) in enumerate(files):
        last = i == len(files) - 1
        if to_offset is not None and base >= to_offset:
            break
        if not last and files[i + 1][0] <= from_offset:
            expected = None
            continue
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            reason = "segment vanished while reading (deleted by retention?)"
            yield Finding(FindingKind.INFO, path, None, None, reason)
            expected = None
            continue
        yield SegmentFile(path, base, len(data), last)
        if expected is not None and base != expected:
            what = f"offsets {expected}..{base - 1} missing" if base > expected else "overlap"
            reason = f"segment starts at offset {base}, previous one ends at {expected} ({what})"
            yield Finding(FindingKind.CORRUPT, path, 0, expected, reason)
        expected, epoch = yield from _walk_segment(
            path, data, base, last, epoch, limits.max_batch_bytes
        )


def _walk_segment(
    path: Path, data: bytes, base: int, last: bool, epoch: int, max_batch_bytes: int
) -> Generator[LogItem, None, tuple[int | None, int]]:
    """One segment's frames and findings; returns (its end offset if known, last epoch)."""
    start, expected, findings = 0, base, 0
    while True:
        result = scan_segment(
            data[start:] if start else data,
            base_offset=expected,
            last_segment=last,
            max_batch_bytes=max_batch_bytes,
            prev_epoch=epoch,
        )
        for relative, header in result.frames:
            position = start + relative
            payload = data[position + HEADER_SIZE : position + header.frame_bytes]
            try:
                events = decode_payload(header, payload, max_batch_bytes)
            except MalformedFrameError as e:
                reason = f"payload does not decode: {e}"
                yield Finding(FindingKind.CORRUPT, path, position, header.base_offset, reason)
                findings += 1
            else:
                yield CheckedFrame(
                    path, position, header, tuple(events), _raw_size(header, payload)
                )
            epoch = header.epoch
        stop = result.stop
        if stop is None:
            return result.end_offset, epoch
        position = start + stop.position
        if stop.action is Action.TRUNCATE_TAIL:
            reason = f"{stop.reason}: {len(data) - position} bytes that open will truncate"
            yield Finding(FindingKind.TORN_TAIL, path, position, stop.offset, reason)
            return result.end_offset, epoch
        findings += 1
        resume = next_intact_frame(data, position + 1, max_batch_bytes)
        if resume is None or findings >= MAX_FINDINGS_PER_SEGMENT:
            note = "no intact frame follows" if resume is None else "too many findings"
            reason = f"{stop.reason}; rest of the segment not checked ({note})"
            yield Finding(FindingKind.CORRUPT, path, position, stop.offset, reason)
            return None, epoch
        start, header = resume
        reason = (
            f"{stop.reason}; {start - position} bytes skipped to the next intact frame "
            f"at byte {start} (offset {header.base_offset})"
        )
        yield Finding(FindingKind.CORRUPT, path, position, stop.offset, reason)
        expected = header.base_offset


def _raw_size(header: FrameHeader, payload: bytes) -> int:
    """Uncompressed payload bytes: the lz4 size prefix, else the stored length."""
    return int.from_bytes(payload[:4], "little") if header.flags & FLAG_LZ4 else len(payload)
