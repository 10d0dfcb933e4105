"""``verify_log``: check a whole log directory without changing it (``walrep log verify``).

Every frame of every segment goes through ``walk.walk_log`` (CRC, sequence, epochs
non-decreasing, segments contiguous, payloads decode), under the limits the directory
records (a damaged limits file is corrupt, and the defaults are used; no file is
information); then the files beside the segments: the sparse index of each sealed
segment (open trusts a fresh one instead of scanning), the epoch history against the
frames' epochs, the replica state (its checksum, a committed floor within the log), a
pending truncation intent, stale temp files. No lock is taken: a running node's log can
be verified, though its newest segment may then show a write in progress as a torn tail.
"""

from __future__ import annotations

import enum
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

from walrep.errors import CorruptLogError
from walrep.log.epochs import FILE_NAME, EpochEntry, EpochHistory
from walrep.log.index import SparseIndex
from walrep.log.limits import DEFAULT_LIMITS, LogLimits, load_limits
from walrep.log.limits import FILE_NAME as LIMITS_FILE
from walrep.log.replica_state import FILE_NAME as STATE_FILE
from walrep.log.replica_state import ReplicaState, load_replica_state
from walrep.log.segment import INDEX_SUFFIX, SUFFIX, parse_segment_name
from walrep.log.truncate import MARKER, read_pending
from walrep.log.walk import (
    CheckedFrame,
    Counts,
    Finding,
    FindingKind,
    SegmentFile,
    SegmentStats,
    StatsAccumulator,
    total_counts,
    walk_log,
)


class VerifyStatus(enum.Enum):
    CLEAN = "clean"
    TORN_TAIL = "torn tail"
    CORRUPT = "corrupt"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    directory: Path
    segments: tuple[SegmentStats, ...]
    findings: tuple[Finding, ...]
    epoch_history: tuple[EpochEntry, ...]
    limits: LogLimits
    replica_state: ReplicaState | None  # None: damaged (a finding says so)

    @property
    def status(self) -> VerifyStatus:
        kinds = {f.kind for f in self.findings}
        if FindingKind.CORRUPT in kinds:
            return VerifyStatus.CORRUPT
        return VerifyStatus.TORN_TAIL if FindingKind.TORN_TAIL in kinds else VerifyStatus.CLEAN

    @property
    def ok(self) -> bool:
        """No damage (info findings allowed)."""
        return self.status is VerifyStatus.CLEAN

    @property
    def total(self) -> Counts:
        return total_counts([s.counts for s in self.segments])

    @property
    def file_bytes(self) -> int:
        return sum(s.file_bytes for s in self.segments)


# --- verify: the walk plus the files beside the segments ---------------------------------


def verify_log(directory: Path | str, limits: LogLimits | None = None) -> VerifyReport:
    """Check every frame of every segment and the files beside them; change nothing.

    ``limits`` default to those the directory records.
    """
    path = Path(directory)
    findings: list[Finding] = []
    if limits is None:
        limits = _load_limits(path, findings)
    history = _load_history(path, findings)
    state = _load_state(path, findings)
    epochs = _EpochCheck(history, path / FILE_NAME)
    stats: list[SegmentStats] = []
    current: _SegmentCheck | None = None
    for item in walk_log(path, limits):
        if isinstance(item, SegmentFile):
            if current is not None:
                stats.append(current.finish(findings))
            current = _SegmentCheck(item)
        elif isinstance(item, CheckedFrame):
            assert current is not None
            current.add(item)
            finding = epochs.check(item, current.segment.last)
            if finding is not None:
                findings.append(finding)
        else:
            if current is not None and item.kind is FindingKind.CORRUPT:
                current.damaged = True  # (a torn tail is cut by open: the end is known)
            findings.append(item)
    if current is not None:
        stats.append(current.finish(findings))
        log_end = None if current.damaged else current.end_offset
        findings += epochs.after_walk(log_end)
        findings += _check_floor(path / STATE_FILE, state, log_end)
    findings += _stray_files(path)
    findings = _apply_pending_truncation(path, findings)
    entries = history.entries if history is not None else ()
    return VerifyReport(path, tuple(stats), tuple(findings), entries, limits, state)


def _load_limits(directory: Path, findings: list[Finding]) -> LogLimits:
    """The recorded limits; the defaults (and a finding) without a readable file."""
    path = directory / LIMITS_FILE
    try:
        limits = load_limits(directory)
    except CorruptLogError as e:
        reason = f"{e.reason}: open will refuse the log; frames checked with the default limits"
        findings.append(Finding(FindingKind.CORRUPT, path, 0, None, reason))
        return DEFAULT_LIMITS
    if limits is None:
        reason = "no limits file (a log written before it existed): the default limits apply"
        findings.append(_info(path, reason))
        return DEFAULT_LIMITS
    return limits


def _load_state(directory: Path, findings: list[Finding]) -> ReplicaState | None:
    path = directory / STATE_FILE
    try:
        return load_replica_state(directory) or ReplicaState()
    except CorruptLogError as e:
        findings.append(Finding(FindingKind.CORRUPT, path, 0, None, e.reason))
        return None


def _check_floor(path: Path, state: ReplicaState | None, log_end: int | None) -> list[Finding]:
    """A committed floor above the log end: open refuses the log (committed events lost)."""
    if state is None or log_end is None or state.committed_floor <= log_end:
        return []
    reason = (
        f"committed floor {state.committed_floor} is above the log end {log_end}: committed "
        "events are missing, open will refuse the log"
    )
    return [Finding(FindingKind.CORRUPT, path, None, log_end, reason)]


@dataclass(slots=True)
class _SegmentCheck:
    """What verify keeps about the segment being walked, to check its index at its end."""

    segment: SegmentFile
    stats: StatsAccumulator = field(default_factory=StatsAccumulator)
    frame_starts: dict[int, int] = field(default_factory=dict)  # byte position -> offset
    damaged: bool = False

    @property
    def end_offset(self) -> int:
        last = self.stats.last_offset
        return self.segment.base_offset if last is None else last + 1

    def add(self, frame: CheckedFrame) -> None:
        self.stats.add(frame)
        self.frame_starts[frame.position] = frame.header.base_offset

    def finish(self, findings: list[Finding]) -> SegmentStats:
        if not self.segment.last:
            findings += self._check_index()
        s = self.segment
        return SegmentStats(s.path, s.base_offset, s.file_bytes, self.stats.counts())

    def _check_index(self) -> list[Finding]:
        """A sealed segment's index: open trusts a fresh one instead of scanning."""
        path = self.segment.path.with_suffix(INDEX_SUFFIX)
        if not path.exists():
            return [_info(path, "no index: open will rebuild it by scanning the segment")]
        size = self.segment.file_bytes
        loaded = SparseIndex.load(
            path,
            1,  # the interval only matters to an index being built
            base_offset=self.segment.base_offset,
            segment_bytes=size,
        )
        if loaded is None:
            return [_info(path, "index stale or damaged: open will rebuild it by scanning")]
        if self.damaged or size == 0:
            return []
        index, end_offset, _ = loaded
        if end_offset != self.end_offset:
            reason = (
                f"index says the segment ends at offset {end_offset}, its frames end at "
                f"{self.end_offset} (open trusts the index)"
            )
            return [Finding(FindingKind.CORRUPT, path, None, end_offset, reason)]
        for offset, position in zip(index.offsets, index.positions, strict=True):
            if self.frame_starts.get(position) != offset:
                reason = f"index entry points at byte {position} of the segment: no frame there"
                return [Finding(FindingKind.CORRUPT, path, None, offset, reason)]
        return []


def _info(path: Path, reason: str) -> Finding:
    return Finding(FindingKind.INFO, path, None, None, reason)


def _load_history(directory: Path, findings: list[Finding]) -> EpochHistory | None:
    """The epoch history (empty if there is no file), or None if it cannot be read."""
    path = directory / FILE_NAME
    try:
        history = EpochHistory.load(directory)
    except CorruptLogError as e:
        findings.append(Finding(FindingKind.CORRUPT, path, 0, None, e.reason))
        return None
    entries = history.entries
    for before, entry in itertools.pairwise(entries):
        if entry.epoch <= before.epoch or entry.start_offset < before.start_offset:
            reason = (
                f"epoch {entry.epoch} from offset {entry.start_offset} follows "
                f"epoch {before.epoch} from offset {before.start_offset}"
            )
            findings.append(Finding(FindingKind.CORRUPT, path, None, entry.start_offset, reason))
    return history


class _EpochCheck:
    """Every frame's epoch against ``history.epoch_at`` (one finding per run of mismatches)."""

    def __init__(self, history: EpochHistory | None, path: Path) -> None:
        self.history = history
        self.path = path
        self.mismatch: tuple[int, int] | None = None  # (frame epoch, history epoch) of a run
        self.uncovered: tuple[int, int] | None = None  # offsets [first, end) not covered

    def check(self, frame: CheckedFrame, last_segment: bool) -> Finding | None:
        if self.history is None:
            return None
        header = frame.header
        said = self.history.epoch_at(header.base_offset)
        if said is None:
            first = header.base_offset if self.uncovered is None else self.uncovered[0]
            self.uncovered = (first, header.end_offset)
            return None
        if said == header.epoch:
            self.mismatch = None
            return None
        if self.mismatch == (header.epoch, said):
            return None  # a run of mismatching frames is reported at its first frame
        self.mismatch = (header.epoch, said)
        kind, where = FindingKind.CORRUPT, f"{frame.segment.name} byte {frame.position}"
        reason = f"frames from offset {header.base_offset} ({where}) have epoch {header.epoch}"
        if last_segment and header.epoch > self.history.last_epoch:
            kind, reason = FindingKind.INFO, f"{reason}, missing here: open will add it"
        else:
            reason = f"{reason}, the history says epoch {said}"
        return Finding(kind, self.path, None, header.base_offset, reason)

    def after_walk(self, log_end: int | None) -> list[Finding]:
        if self.history is None:
            return []
        found = []
        if self.uncovered is not None:
            first, end = self.uncovered
            if self.history.entries:
                reason = f"does not cover offsets {first}..{end - 1} (it starts later)"
            else:
                reason = "missing or empty: open rebuilds it from the newest segment only"
            found.append(Finding(FindingKind.INFO, self.path, None, first, reason))
        for entry in self.history.entries:
            if log_end is not None and entry.start_offset > log_end:
                reason = (
                    f"epoch {entry.epoch} starts at offset {entry.start_offset}, past the log "
                    f"end {log_end}: open will drop it"
                )
                found.append(Finding(FindingKind.INFO, self.path, None, entry.start_offset, reason))
        return found


def _stray_files(directory: Path) -> list[Finding]:
    found = []
    for name in sorted(os.listdir(directory)):
        if name.endswith(".tmp"):
            found.append(_info(directory / name, "stale temp file: open will remove it"))
        elif name.endswith(INDEX_SUFFIX):
            segment = name[: -len(INDEX_SUFFIX)] + SUFFIX
            if parse_segment_name(segment) is not None and not (directory / segment).exists():
                found.append(_info(directory / name, "index without a segment (ignored)"))
    return found


def _apply_pending_truncation(directory: Path, findings: list[Finding]) -> list[Finding]:
    """Report a pending truncation; damage it will cut off becomes information."""
    path = directory / MARKER
    try:
        pending = read_pending(directory)
    except CorruptLogError:
        reason = "truncation intent record fails its checksum: open will refuse the log"
        return [*findings, Finding(FindingKind.CORRUPT, path, 0, None, reason)]
    if pending is None:
        return findings
    target, segment_base, position = pending.target_offset, pending.segment_base, pending.position
    reason = (
        f"a truncation to offset {target} is pending: open will finish it (cut segment "
        f"{segment_base:020d}{SUFFIX} at byte {position}, delete the later segments)"
    )
    kept = [Finding(FindingKind.INFO, path, None, target, reason)]
    for finding in findings:
        if finding.kind is not FindingKind.INFO and _cut_off(
            finding, target, segment_base, position
        ):
            note = f"cut off by the pending truncation: {finding.reason}"
            finding = Finding(
                FindingKind.INFO, finding.path, finding.position, finding.offset, note
            )
        kept.append(finding)
    return kept


def _cut_off(finding: Finding, target: int, segment_base: int, position: int) -> bool:
    """Whether the pending truncation removes what ``finding`` is about."""
    name = finding.path.name
    if name == FILE_NAME:
        return finding.offset is not None and finding.offset >= target
    stem, suffix = os.path.splitext(name)
    base = parse_segment_name(stem + SUFFIX) if suffix in (SUFFIX, INDEX_SUFFIX) else None
    if base is None or base < segment_base:
        return False
    if base > segment_base or suffix == INDEX_SUFFIX:
        return True  # deleted, or the index of the cut segment (deleted too)
    return finding.position is not None and finding.position >= position
