"""Opening a log directory: redo an interrupted truncation, check every segment, recover.

Steps, in order:

1. Remove stale ``*.tmp`` files (a crash during an atomic replace) and redo a pending
   truncation (``truncate.redo_pending``).
2. ``recovery.plan_recovery`` judges the segments. Sealed segments: a fresh sparse index
   (its recorded size equals the file's, its checksum verifies) is trusted instead of a
   scan, else the segment is scanned and its index rebuilt. Each segment must start
   where the previous one ends. The last segment is always scanned in full and judged
   by ``recovery.RECOVERY_TABLE``; a torn tail is truncated (and forced) and reported
   with its byte count.
3. The epoch history: entries past the end dropped, epochs found in the last segment
   but missing from the history added (``recovery.reconcile_epochs``).
4. The replica state: a committed floor above the log end is damage
   (``recovery.settle_floor``).

Damage raises ``CorruptLogError(segment, position, offset)``; with ``repair=True`` the
log is cut before the first damaged frame instead, and the cut is reported.

Before all of it, ``settle_limits`` decides the limits recovery and reads apply
(``limits.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from walrep.log.config import LogConfig
from walrep.log.epochs import EpochHistory
from walrep.log.fsutil import FileOps, fsync_dir
from walrep.log.index import SparseIndex
from walrep.log.limits import DEFAULT_LIMITS, LogLimits, load_limits
from walrep.log.recovery import (
    KeptSegment,
    SegmentSummary,
    plan_recovery,
    reconcile_epochs,
    settle_floor,
)
from walrep.log.replica_state import FILE_NAME as STATE_FILE
from walrep.log.replica_state import ReplicaState, load_replica_state, save_replica_state
from walrep.log.segment import Segment, parse_segment_name
from walrep.log.truncate import finish_pending, redo_pending
from walrep.log.types import RecoveryReport


@dataclass(slots=True)
class OpenedLog:
    segments: list[Segment]
    epochs: EpochHistory
    replica_state: ReplicaState
    report: RecoveryReport


class _FileSegment:
    """A segment file as ``plan_recovery`` sees it (``SegmentInput``)."""

    def __init__(self, segment: Segment) -> None:
        self.segment = segment

    @property
    def name(self) -> str:
        return str(self.segment.path)

    @property
    def base_offset(self) -> int:
        return self.segment.base_offset

    def trusted(self) -> SegmentSummary | None:
        segment = self.segment
        size = segment.path.stat().st_size
        loaded = SparseIndex.load(
            segment.index_path,
            segment.index.interval_bytes,
            base_offset=segment.base_offset,
            segment_bytes=size,
        )
        if loaded is None or size == 0:
            return None
        segment.index = loaded.sparse
        return SegmentSummary(loaded.end_offset, loaded.last_epoch, size)

    def data(self) -> bytes:
        return self.segment.read_all()


def open_log(
    directory: Path,
    limits: LogLimits,
    *,
    index_interval_bytes: int,
    ops: FileOps,
    repair: bool,
) -> OpenedLog:
    """Recover the log in ``directory`` under the read ``limits`` (see the module docstring)."""
    report = RecoveryReport()
    for name in sorted(os.listdir(directory)):
        if name.endswith(".tmp"):
            (directory / name).unlink()
            report.temp_files_removed.append(name)
    report.truncation_redone_to = redo_pending(directory, ops)
    bases = sorted(
        b for name in os.listdir(directory) if (b := parse_segment_name(name)) is not None
    )
    segments = [Segment(directory, base, index_interval_bytes, ops) for base in bases]
    if not segments:
        first = Segment(directory, 0, index_interval_bytes, ops)
        first.create()
        fsync_dir(directory, ops)
        segments = [first]

    plan = plan_recovery(
        [_FileSegment(s) for s in segments], max_batch_bytes=limits.max_batch_bytes, repair=repair
    )
    kept = [_adopt(segments[k.index], k, last=k is plan.kept[-1], report=report) for k in plan.kept]
    if plan.torn is not None:
        torn = segments[plan.torn.segment]
        torn.truncate(plan.torn.position)
        report.torn_segment = str(torn.path)
        report.torn_position = plan.torn.position
        report.torn_bytes = plan.torn.torn_bytes
    line = plan.repaired_line()
    if line is not None:
        _cut_for_repair(directory, segments, plan.kept[-1], plan.dropped, ops)
        report.repaired.append(line)

    epochs = EpochHistory.load(directory, ops)
    if report.truncation_redone_to is not None:
        epochs.truncate_from(report.truncation_redone_to)
        finish_pending(directory, ops)
    newest = plan.kept[-1].frames
    assert newest is not None, "the newest segment is always scanned"
    reconcile_epochs(epochs, plan.log_end, newest)

    stored = load_replica_state(directory) or ReplicaState()
    state, line = settle_floor(
        stored, plan.log_end, repair=repair, name=str(directory / STATE_FILE)
    )
    if line is not None:
        save_replica_state(directory, state, ops)
        report.repaired.append(line)
    return OpenedLog(kept, epochs, state, report)


def _adopt(segment: Segment, kept: KeptSegment, *, last: bool, report: RecoveryReport) -> Segment:
    """Take the plan's view of a kept segment; save the index of a scanned sealed one."""
    segment.end_offset, segment.last_epoch, segment.size = (
        kept.end_offset,
        kept.last_epoch,
        kept.size,
    )
    if kept.frames is None:
        return segment  # a fresh index was trusted: it is loaded already
    segment.index = SparseIndex(segment.index.interval_bytes)
    for position, header in kept.frames:
        segment.index.note(header.base_offset, position)
    if not last:
        segment.index.save(
            segment.index_path,
            base_offset=segment.base_offset,
            segment_bytes=segment.size,
            end_offset=segment.end_offset,
            last_epoch=segment.last_epoch,
            ops=segment.ops,
        )
        report.indexes_rebuilt.append(segment.index_path.name)
    return segment


def _cut_for_repair(
    directory: Path, segments: list[Segment], last: KeptSegment, dropped: list[int], ops: FileOps
) -> None:
    """Cut the new last segment before the damage, delete the later ones (newest first)."""
    survivor = segments[last.index]
    if survivor.path.stat().st_size != last.size:
        survivor.truncate(last.size)
    for i in reversed(dropped):
        segments[i].close()
        segments[i].path.unlink()
        segments[i].index_path.unlink(missing_ok=True)
    survivor.index_path.unlink(missing_ok=True)  # it is the last segment now
    fsync_dir(directory, ops)


def settle_limits(
    directory: Path, config: LogConfig | None
) -> tuple[LogConfig, LogLimits, LogLimits | None]:
    """``(config for appends, limits for reads, limits recorded now)`` of a log directory.

    A directory with segments but no limits file was written under the defaults.
    """
    recorded = load_limits(directory)
    written_under = recorded
    if recorded is None and any(parse_segment_name(n) is not None for n in os.listdir(directory)):
        written_under = DEFAULT_LIMITS
    if config is None:
        config = LogConfig.for_limits(written_under or DEFAULT_LIMITS)
    limits = config.limits if written_under is None else written_under.union(config.limits)
    return config, limits, recorded
