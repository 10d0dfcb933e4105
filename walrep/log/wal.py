"""The write-ahead log: a directory of segments, an epoch history and a group-commit writer.

Ordering contracts:

* Offsets are assigned by the writer, under the write lock, in the order appends
  reached the queue; they are gap-free and never reused (``truncate_after`` drops a
  tail, later appends continue from the new end).
* Every append path checks its input against every limit a reader applies
  (``accept``) before anything is written; a refusal leaves the log unchanged.
* With ``FsyncPolicy.ALWAYS`` an append returns only after ``fdatasync`` of every byte
  of it (and of everything before it): **fsync before ack**.
* A new epoch is recorded in the epoch history (durably) before its first frame is
  written; a frame with an epoch lower than the last one is refused (``FencedError``).
* Readers see an event only after its bytes are written (``log_end``); ``durable_end``
  says how much of that is forced to disk, and every advance of it is announced to the
  durable listeners, on the event loop, before ``wait_durable`` calls it satisfies return.
* A write or fsync error leaves the log failed: that call and every later one raise
  ``LogFailedError``, ``durable_end`` stays where it was, and the next open recovers
  from what is on disk (an fsync error is never retried as if the data were safe).
* ``truncate_after`` never cuts below ``replica_state.committed_floor``.

Reading (``frames``, ``read``, ``tail``, ``wait_beyond``) is ``reader.LogReader``.
Threads: the async API and ``truncate_after``, ``delete_before``, ``save_replica_state``
run on one event loop thread; one writer thread writes groups and, under ``INTERVAL``,
forces the log without holding the lock.
"""

from __future__ import annotations

import bisect
import fcntl
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from walrep.errors import (
    ClosedError,
    CommittedTruncationError,
    CorruptLogError,
    LogError,
    LogFailedError,
    OffsetOutOfRangeError,
)
from walrep.log.accept import check_batch
from walrep.log.clock import wall_clock_ms
from walrep.log.config import FsyncPolicy, LogConfig
from walrep.log.durable import DurableListener, DurableNotifier
from walrep.log.epochs import EpochHistory
from walrep.log.frame import EncodedBatch, Event, encode_batch
from walrep.log.fsutil import DEFAULT_FILE_OPS, FileOps, fsync_dir
from walrep.log.groupwrite import GroupWriter
from walrep.log.limits import LogLimits, save_limits
from walrep.log.open import open_log, settle_limits
from walrep.log.reader import LogReader
from walrep.log.recent import RecentFrames
from walrep.log.replica_state import ReplicaState
from walrep.log.replica_state import save_replica_state as write_replica_state
from walrep.log.segment import Segment
from walrep.log.truncate import finish_pending, truncate_segments
from walrep.log.types import AppendResult, RecoveryReport, StoredFrame
from walrep.log.writer import GroupCommitter, Pending, call_on_loop

log = logging.getLogger(__name__)

__all__ = ["Wal", "wall_clock_ms"]


class Wal(GroupWriter, LogReader[tuple[Segment, int]]):
    """A segmented, checksummed, group-committed write-ahead log in one directory.

    Open with ``Wal.open(directory, config)``. Appends are async (``append``,
    ``append_encoded``, ``append_frames``) and group-committed by one writer thread; a
    blocking ``append_sync`` serves tools. Reads (``read``, ``frames``, ``tail``) may
    run while the log grows. ``truncate_after`` and ``delete_before`` are crash-safe.
    """

    def __init__(
        self,
        directory: Path,
        config: LogConfig,
        limits: LogLimits,
        segments: list[Segment],
        epochs: EpochHistory,
        replica_state: ReplicaState,
        recovery: RecoveryReport,
        lock_fd: int,
        clock_ms: Callable[[], int],
        ops: FileOps,
    ) -> None:
        self.directory = directory
        self.config = config
        self.recovery = recovery
        self.epochs = epochs
        self._limits = limits
        self._segments = segments
        self._replica_state = replica_state
        self._lock_fd = lock_fd
        self._clock_ms = clock_ms
        self._ops = ops
        self._lock = threading.Lock()  # held by whoever changes files or offsets
        self._log_end = segments[-1].end_offset
        self._durable_end = self._log_end
        self._truncation_count = 0  # so that a sync outside the lock sees a cut meanwhile
        self._failed: BaseException | None = None
        self._closed = False
        self._recent: RecentFrames[Segment] = RecentFrames(config.recent_frames_bytes)
        self._init_reader()
        self._durable = DurableNotifier(lambda: self._durable_end)
        interval = config.fsync_policy is FsyncPolicy.INTERVAL
        self._committer = GroupCommitter(
            self._write_items,
            pending_bytes_max=config.pending_bytes_max,
            interval_sync=self._interval_sync if interval else None,
            sync_interval_ms=config.fsync_interval_ms,
            on_written=self._after_write,
            name=f"walrep-wal {directory}",
        )

    @classmethod
    def open(
        cls,
        directory: str | Path,
        config: LogConfig | None = None,
        *,
        repair: bool = False,
        clock_ms: Callable[[], int] = wall_clock_ms,
        file_ops: FileOps | None = None,
    ) -> Wal:
        """Open (creating if needed) and recover the log in ``directory``.

        Without ``config`` the log's recorded limits are used (``limits.py``); with one,
        appends use its limits and reads the larger of recorded and configured, recorded
        before this returns. Raises ``CorruptLogError`` on damage other than a torn tail,
        unless ``repair``: then everything from the first damaged frame on is dropped and
        reported. ``file_ops`` replaces the file writes and forces (fault injection).
        """
        path = Path(directory)
        ops = DEFAULT_FILE_OPS if file_ops is None else file_ops
        try:
            path.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(path / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise LogFailedError(f"cannot open log directory {path}: {e}") from e
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            os.close(lock_fd)
            raise LogError(f"log directory {path} is in use by another process") from e
        try:
            config, limits, recorded = settle_limits(path, config)
            opened = open_log(
                path,
                limits,
                index_interval_bytes=config.index_interval_bytes,
                ops=ops,
                repair=repair,
            )
            if limits != recorded:  # before any frame that needs them can be written
                save_limits(path, limits, ops)
        except OSError as e:
            os.close(lock_fd)
            raise LogFailedError(f"opening log {path} failed: {e}") from e
        except BaseException:
            os.close(lock_fd)
            raise
        report = opened.report
        for line in report.lines():
            log.warning("log %s: %s", path, line)
        return cls(
            path,
            config,
            limits,
            opened.segments,
            opened.epochs,
            opened.replica_state,
            report,
            lock_fd,
            clock_ms,
            ops,
        )

    # --- state ---------------------------------------------------------------------

    @property
    def log_start(self) -> int:
        """Lowest offset still stored (retention deletes whole segments below it)."""
        return self._segments[0].base_offset

    @property
    def log_end(self) -> int:
        """Next offset to assign; every offset below it is written and readable."""
        return self._log_end

    @property
    def durable_end(self) -> int:
        """Every offset below it is forced to disk on this node."""
        return self._durable_end

    @property
    def limits(self) -> LogLimits:
        """What reads accept: the recorded limits joined with the config's."""
        return self._limits

    @property
    def last_epoch(self) -> int:
        return self.epochs.last_epoch

    @property
    def last_epoch_start(self) -> int:
        return self.epochs.last_epoch_start

    @property
    def replica_state(self) -> ReplicaState:
        return self._replica_state

    @property
    def group_commit_stats(self) -> tuple[int, int]:
        """``(groups, requests)`` written by the group-commit writer since open."""
        return self._committer.groups_written, self._committer.requests_written

    def segments(self) -> list[tuple[int, int, int, Path]]:
        """``(base offset, end offset, bytes, path)`` of each segment, oldest first."""
        return [(s.base_offset, s.end_offset, s.size, s.path) for s in self._segments]

    def _check_usable(self) -> None:
        if self._closed:
            raise ClosedError(f"log {self.directory} is closed")
        if self._failed is not None:
            raise LogFailedError(
                f"log {self.directory} failed earlier: {self._failed}"
            ) from self._failed

    def _fail(self, error: OSError, what: str) -> LogFailedError:
        """Mark the log failed (a disk error: ours); the error to raise, cause attached."""
        if self._failed is None:
            self._failed = error
            self._on_loop(self._after_failure)
        failure = LogFailedError(f"{what}: {error}")
        failure.__cause__ = error
        return failure

    # --- appending -------------------------------------------------------------------

    def encode(self, events: Sequence[Event]) -> EncodedBatch:
        """Encode events with this log's limits (for callers that pre-encode)."""
        c = self.config
        return encode_batch(
            events,
            max_event_bytes=c.max_event_bytes,
            max_batch_bytes=c.max_batch_bytes,
            compress_threshold_bytes=c.compress_threshold_bytes,
        )

    async def append(
        self, events: Sequence[Event], *, epoch: int, ingest_time_ms: int | None = None
    ) -> AppendResult:
        """Append events as one batch; returns their offsets once written (and forced)."""
        # Encoded here with this log's limits: within them by construction, not re-checked.
        return await self._submit(self.encode(events), epoch, ingest_time_ms)

    async def append_encoded(
        self, batch: EncodedBatch, *, epoch: int, ingest_time_ms: int | None = None
    ) -> AppendResult:
        """Append an already-encoded batch (see ``encode``) at the next offset.

        ``LimitExceededError`` / ``MalformedFrameError`` if a reader would refuse it.
        """
        check_batch(batch, self.config.max_batch_bytes)
        return await self._submit(batch, epoch, ingest_time_ms)

    async def _submit(
        self, batch: EncodedBatch, epoch: int, ingest_time_ms: int | None
    ) -> AppendResult:
        ingest = self._clock_ms() if ingest_time_ms is None else ingest_time_ms
        self._check_usable()
        return await self._committer.submit(Pending(batch, None, epoch, ingest, len(batch.payload)))

    async def append_frames(self, frames: bytes) -> AppendResult:
        """Append verbatim frames (replication): they must start at ``log_end``.

        All or nothing: ``RejectedFrameError`` (naming the byte position),
        ``LimitExceededError`` or ``FencedError`` for the first bad frame.
        """
        self._check_usable()
        return await self._committer.submit(Pending(None, frames, 0, 0, len(frames)))

    def append_sync(
        self, events: Sequence[Event], *, epoch: int, ingest_time_ms: int | None = None
    ) -> AppendResult:
        """Blocking append without group commit, for tools and single-threaded callers."""
        self._check_usable()
        ingest = self._clock_ms() if ingest_time_ms is None else ingest_time_ms
        batch = self.encode(events)
        check_batch(batch, self.config.max_batch_bytes)
        result = self._write_items([Pending(batch, None, epoch, ingest, len(batch.payload))])[0]
        if isinstance(result, BaseException):
            raise result
        self._on_loop(self._after_write)
        return result

    # --- durability (the writing itself is groupwrite.GroupWriter) ---------------------

    async def sync(self) -> int:
        """Force everything written so far; returns the new ``durable_end``."""
        self._check_usable()
        await self._committer.submit(Pending(None, None, 0, 0, 0))
        return self._durable_end

    def add_durable_listener(self, callback: DurableListener) -> None:
        """Call ``callback(durable_end)`` on the event loop whenever ``durable_end`` advances.

        After each group under ``ALWAYS``, after an interval sync, after ``sync()``, after
        a segment roll (see ``durable.py`` for the ordering contract).
        """
        self._durable.add_listener(callback)

    async def wait_durable(self, offset: int) -> None:
        """Return once ``durable_end >= offset``; raises if the log failed or is closed."""
        if self._durable_end >= offset:
            return
        self._check_usable()
        self._committer.bind_loop()  # progress is announced on this loop from now on
        await self._durable.wait(offset, self._check_usable)

    def _on_loop(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the log's event loop: now if this is it (or there is none)."""
        call_on_loop(self._committer.loop, callback)

    def _after_write(self) -> None:
        """On the loop, after a group (or a blocking append, a truncation) went out."""
        self._wake_readers()
        self._durable.deliver()

    def _after_failure(self) -> None:
        self._wake_readers()
        self._durable.fail(lambda: LogFailedError(f"log {self.directory} failed"))

    # --- replica state ---------------------------------------------------------------

    def save_replica_state(self, state: ReplicaState) -> None:
        """Persist ``state`` (each field kept at the max of stored and given); durable on return.

        A committed floor above ``log_end`` is a caller's bug (assertion).
        """
        with self._lock:
            self._check_usable()
            merged = self._replica_state.merged(state)
            assert merged.committed_floor <= self._log_end, (merged, self._log_end)
            if merged == self._replica_state:
                return
            try:
                write_replica_state(self.directory, merged, self._ops)
            except OSError as e:
                raise self._fail(e, "saving the replica state failed") from e
            self._replica_state = merged

    # --- reading (the rest is reader.LogReader) --------------------------------------

    def _frame_at(
        self, offset: int, hint: tuple[Segment, int] | None
    ) -> tuple[StoredFrame, tuple[Segment, int]]:
        kept = self._recent.get(offset)  # just written: the same bytes, checked when framed
        if kept is not None and offset >= self.log_start:  # not in a segment deleted since
            header, position, data, segment = kept
            stored = StoredFrame(str(segment.path), position, header, data)
            return stored, (segment, position + header.frame_bytes)
        try:
            if hint is None or hint[1] >= hint[0].size:
                segment, position = self._locate(offset)
            else:
                segment, position = hint
            header, frame = segment.read_frame(
                position, None, self._limits.max_batch_bytes, reading_offset=offset
            )
        except FileNotFoundError as e:  # the segment was deleted by retention under us
            raise OffsetOutOfRangeError(offset, self.log_start, self._log_end) from e
        except OSError as e:  # the disk failed us: ours, like a failed write
            with self._lock:
                failure = self._fail(e, f"reading offset {offset} of {self.directory} failed")
            raise failure from e
        if not header.base_offset <= offset < header.end_offset:
            raise CorruptLogError(str(segment.path), position, offset, "frame out of sequence")
        stored = StoredFrame(str(segment.path), position, header, frame)
        return stored, (segment, position + header.frame_bytes)

    def _locate(self, offset: int) -> tuple[Segment, int]:
        segments = self._segments
        i = bisect.bisect_right([s.base_offset for s in segments], offset) - 1
        if i < 0 or offset >= segments[i].end_offset:
            raise OffsetOutOfRangeError(offset, self.log_start, self._log_end)
        return segments[i], segments[i].locate(offset)

    # --- cutting the log -------------------------------------------------------------------

    def truncate_after(self, offset: int) -> None:
        """Drop every event at or after ``offset``; afterwards ``log_end == offset``.

        Crash-safe: an intent record is made durable first and redone on open, so a crash
        leaves either the old log or exactly the truncated one. Everything kept is forced
        (``durable_end == log_end`` afterwards). ``CommittedTruncationError`` below the
        committed floor (nothing changes); readers past ``offset`` get
        ``LogTruncatedError``.
        """
        with self._lock:
            self._check_usable()
            if not self.log_start <= offset <= self._log_end:
                raise OffsetOutOfRangeError(offset, self.log_start, self._log_end)
            floor = self._replica_state.committed_floor
            if offset < floor:
                raise CommittedTruncationError(offset, floor)
            if offset == self._log_end:
                return
            self._recent.drop_from(offset)  # before any reader can see the new history
            try:
                self._segments = truncate_segments(
                    self.directory,
                    self._segments,
                    offset,
                    self._limits,
                    self.config.compress_threshold_bytes,
                    self._ops,
                )
                self.epochs.truncate_from(offset)
                finish_pending(self.directory, self._ops)  # only now: a crash redoes it all
            except OSError as e:
                raise self._fail(e, f"truncating {self.directory} to {offset} failed") from e
            self._log_end = self._segments[-1].end_offset
            self._durable_end = self._log_end
            self._truncation_count += 1
            self._truncations.record(offset)
            self._durable.lowered(self._durable_end)
        self._on_loop(self._after_write)

    def delete_before(self, offset: int) -> int:
        """Delete whole segments whose events are all below ``offset``; returns ``log_start``.

        The newest segment is never deleted. Oldest first, each unlink made durable before
        the next, so a crash leaves a contiguous suffix of the log.
        """
        with self._lock:
            self._check_usable()
            try:
                while len(self._segments) > 1 and self._segments[1].base_offset <= offset:
                    old = self._segments[0]
                    old.close()
                    for path in (old.path, old.index_path):
                        path.unlink(missing_ok=True)
                    self._segments.pop(0)
                    fsync_dir(self.directory, self._ops)
                    self._recent.drop_below(self.log_start)
            except OSError as e:
                raise self._fail(e, f"deleting old segments of {self.directory} failed") from e
            return self.log_start

    # --- closing ------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Wait for queued appends, force everything, release the directory."""
        if self._closed:
            return
        await self._committer.aclose()  # writes everything queued, then the thread ends
        self.close()

    def close(self) -> None:
        """Force what is written and release files (no appends may be in flight).

        ``LogFailedError`` if that last force fails (the directory is released anyway).
        """
        if self._closed:
            return
        self._committer.join()  # writes anything still queued first
        error: LogFailedError | None = None
        with self._lock:
            try:
                if self._failed is None:
                    try:
                        self._segments[-1].sync()
                        self._durable_end = self._log_end
                    except OSError as e:
                        error = self._fail(e, f"fdatasync of {self._segments[-1].path} failed")
            finally:
                self._closed = True
                for segment in self._segments:
                    segment.close()
                os.close(self._lock_fd)
        self._on_loop(self._after_close)
        if error is not None:
            raise error

    def _after_close(self) -> None:
        self._after_write()
        self._durable.fail(lambda: ClosedError(f"log {self.directory} is closed"))

    def __enter__(self) -> Wal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
