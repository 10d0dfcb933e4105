"""Opening a log directory: redo an interrupted truncation, check every segment, recover.

Steps, in order:

1. Remove stale ``*.tmp`` files (a crash during an atomic replace) and redo a pending
   truncation (``truncate.redo_pending``).
2. Sealed segments: trust the sparse index when it is fresh (its recorded size equals
   the file's, its checksum verifies), else rebuild it by scanning every frame. Each
   segment must start where the previous one ends. A repair scans every segment: the
   damage it is asked to cut is usually found by a read, behind a fresh index.
3. The last segment: always scanned in full and judged by ``recovery.RECOVERY_TABLE``;
   a torn tail is truncated (and forced) and reported with its byte count.
4. The epoch history: entries past the end dropped, epochs found in the last segment
   but missing from the history added.

Damage raises ``CorruptLogError(segment, position, offset)``; with ``repair=True`` the
log is cut before the first damaged frame instead, and the cut is reported.
"""

from __future__ import annotations

import os
from pathlib import Path

from walrep.errors import CorruptLogError
from walrep.log.config import LogConfig
from walrep.log.epochs import EpochHistory
from walrep.log.fsutil import fsync_dir
from walrep.log.index import SparseIndex
from walrep.log.recovery import Action, ScanResult, scan_segment
from walrep.log.segment import Segment, parse_segment_name
from walrep.log.truncate import finish_pending, redo_pending
from walrep.log.types import RecoveryReport


def open_segments(
    directory: Path, config: LogConfig, *, repair: bool
) -> tuple[list[Segment], EpochHistory, RecoveryReport]:
    report = RecoveryReport()
    for name in sorted(os.listdir(directory)):
        if name.endswith(".tmp"):
            (directory / name).unlink()
            report.temp_files_removed.append(name)
    report.truncation_redone_to = redo_pending(directory)
    bases = sorted(
        b for name in os.listdir(directory) if (b := parse_segment_name(name)) is not None
    )
    segments = [Segment(directory, base, config.index_interval_bytes) for base in bases]
    if not segments:
        first = Segment(directory, 0, config.index_interval_bytes)
        first.create()
        fsync_dir(directory)
        segments = [first]

    kept: list[Segment] = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        expected = kept[-1].end_offset if kept else segment.base_offset
        prev_epoch = kept[-1].last_epoch if kept else 0
        damage: CorruptLogError | None = None
        if segment.base_offset != expected:
            reason = (
                f"segment starts at offset {segment.base_offset}, previous one ends at {expected}"
            )
            damage = CorruptLogError(str(segment.path), 0, expected, reason)
        elif not last and not repair and _load_index(segment, config):
            kept.append(segment)
            continue
        else:
            damage = _scan(segment, config, last=last, prev_epoch=prev_epoch, report=report)
            if damage is None:
                kept.append(segment)
                if not last:
                    _save_index(segment)
                    report.indexes_rebuilt.append(segment.index_path.name)
                continue
        if not repair:
            raise damage
        kept = _repair(directory, segments[i:], kept, damage, config, report)
        break

    epochs = EpochHistory.load(directory)
    log_end = kept[-1].end_offset
    if report.truncation_redone_to is not None:
        epochs.truncate_from(report.truncation_redone_to)
        finish_pending(directory)
    epochs.truncate_from(log_end + 1)
    _add_missing_epochs(kept[-1], epochs, config)
    return kept, epochs, report


def _load_index(segment: Segment, config: LogConfig) -> bool:
    size = segment.path.stat().st_size
    loaded = SparseIndex.load(
        segment.index_path,
        config.index_interval_bytes,
        base_offset=segment.base_offset,
        segment_bytes=size,
    )
    if loaded is None or size == 0:
        return False
    segment.index, segment.end_offset, segment.last_epoch = loaded
    segment.size = size
    return True


def _save_index(segment: Segment) -> None:
    segment.index.save(
        segment.index_path,
        base_offset=segment.base_offset,
        segment_bytes=segment.size,
        end_offset=segment.end_offset,
        last_epoch=segment.last_epoch,
    )


def _scan(
    segment: Segment, config: LogConfig, *, last: bool, prev_epoch: int, report: RecoveryReport
) -> CorruptLogError | None:
    """Scan one segment into ``segment``'s metadata; returns the damage, if any."""
    data = segment.read_all()
    result = scan_segment(
        data,
        base_offset=segment.base_offset,
        last_segment=last,
        max_payload_bytes=config.max_payload_bytes,
        prev_epoch=prev_epoch,
    )
    _adopt(segment, result)
    stop = result.stop
    if stop is None:
        return None
    if stop.action is Action.TRUNCATE_TAIL:
        segment.truncate(stop.position)
        report.torn_segment = str(segment.path)
        report.torn_position = stop.position
        report.torn_bytes = len(data) - stop.position
        return None
    return CorruptLogError(str(segment.path), stop.position, stop.offset, stop.reason)


def _adopt(segment: Segment, result: ScanResult) -> None:
    segment.index = SparseIndex(segment.index.interval_bytes)
    for position, header in result.frames:
        segment.index.note(header.base_offset, position)
        segment.last_epoch = header.epoch
    segment.size = result.valid_bytes
    segment.end_offset = result.end_offset


def _repair(
    directory: Path,
    rest: list[Segment],
    kept: list[Segment],
    damage: CorruptLogError,
    config: LogConfig,
    report: RecoveryReport,
) -> list[Segment]:
    """Cut the log just before ``damage``: the damaged segment's tail and all later ones."""
    damaged = rest[0]
    if damage.position == 0 and kept:
        dropped, survivor = rest, kept
    else:
        damaged.truncate(damage.position)
        dropped, survivor = rest[1:], [*kept, damaged]
    for segment in reversed(dropped):
        segment.close()
        segment.path.unlink()
        segment.index_path.unlink(missing_ok=True)
    survivor[-1].index_path.unlink(missing_ok=True)  # it is the last segment now
    fsync_dir(directory)
    report.repaired.append(
        f"{damage}; dropped offsets from {damage.offset} on "
        f"({len(dropped)} later segment(s) deleted)"
    )
    if not survivor:
        first = Segment(directory, damaged.base_offset, config.index_interval_bytes)
        first.create()
        fsync_dir(directory)
        survivor = [first]
    return survivor


def _add_missing_epochs(segment: Segment, epochs: EpochHistory, config: LogConfig) -> None:
    """Epochs in the newest segment that the history lacks (a lost or old history file)."""
    if segment.last_epoch <= epochs.last_epoch:
        return
    data = segment.read_all()
    result = scan_segment(
        data,
        base_offset=segment.base_offset,
        last_segment=True,
        max_payload_bytes=config.max_payload_bytes,
    )
    for _, header in result.frames:
        if header.epoch > epochs.last_epoch:
            epochs.begin(header.epoch, header.base_offset)
