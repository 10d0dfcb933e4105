"""The write-ahead log: a directory of segments, an epoch history and a group-commit writer.

Ordering contracts:

* Offsets are assigned by the writer, under the write lock, in the order appends
  reached the queue; they are gap-free and never reused (``truncate_after`` drops a
  tail, later appends continue from the new end).
* With ``FsyncPolicy.ALWAYS`` an append returns only after ``fdatasync`` of every byte
  of it (and of everything before it): **fsync before ack**.
* A new epoch is recorded in the epoch history (durably) before its first frame is
  written; a frame with an epoch lower than the last one is refused (``FencedError``).
* Readers see an event only after its bytes are written (``log_end``); ``durable_end``
  says how much of that is forced to disk.
* A write or fsync error leaves the log failed: every later call raises, and the next
  open recovers from what is on disk (an fsync error cannot be retried safely).
"""

from __future__ import annotations

import asyncio
import bisect
import fcntl
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

from walrep.errors import (
    ClosedError,
    CorruptLogError,
    FencedError,
    LogError,
    OffsetOutOfRangeError,
    WalrepError,
)
from walrep.log.config import FsyncPolicy, LogConfig
from walrep.log.epochs import EpochHistory
from walrep.log.frame import (
    EncodedBatch,
    Event,
    FrameHeader,
    FrameStatus,
    build_header,
    decode_payload,
    encode_batch,
    inspect_frame,
)
from walrep.log.fsutil import fsync_dir
from walrep.log.open import open_segments
from walrep.log.segment import Segment
from walrep.log.truncate import finish_pending, truncate_segments
from walrep.log.types import AppendResult, Record, RecoveryReport, StoredFrame
from walrep.log.writer import GroupCommitter, Pending

log = logging.getLogger(__name__)


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


Buffer = bytes | memoryview


class _Staged:
    """Frames of one group waiting to be written: buffers in order, headers, byte count."""

    __slots__ = ("buffers", "bytes", "headers")

    def __init__(self) -> None:
        self.buffers: list[Buffer] = []
        self.headers: list[FrameHeader] = []
        self.bytes = 0

    def add(self, buffers: list[Buffer], header: FrameHeader) -> None:
        self.buffers += buffers
        self.headers.append(header)
        self.bytes += header.frame_bytes

    def end(self, log_end: int) -> int:
        return self.headers[-1].end_offset if self.headers else log_end

    def clear(self) -> None:
        self.buffers, self.headers, self.bytes = [], [], 0


class Wal:
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
        segments: list[Segment],
        epochs: EpochHistory,
        recovery: RecoveryReport,
        lock_fd: int,
        clock_ms: Callable[[], int],
    ) -> None:
        self.directory = directory
        self.config = config
        self.recovery = recovery
        self.epochs = epochs
        self._segments = segments
        self._lock_fd = lock_fd
        self._clock_ms = clock_ms
        self._lock = threading.Lock()  # held by whoever changes files or offsets
        self._log_end = segments[-1].end_offset
        self._durable_end = self._log_end
        self._generation = 0  # bumped by truncate_after so readers re-locate
        self._failed: BaseException | None = None
        self._closed = False
        self._waiters: list[asyncio.Future[None]] = []
        interval = config.fsync_policy is FsyncPolicy.INTERVAL
        self._committer = GroupCommitter(
            self._write_items,
            pending_bytes_max=config.pending_bytes_max,
            idle_sync=self._sync_now if interval else None,
            idle_sync_interval_ms=config.fsync_interval_ms,
            on_written=self._wake_readers,
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
    ) -> Wal:
        """Open (creating if needed) and recover the log in ``directory``.

        Raises ``CorruptLogError`` on damage other than a torn tail, unless ``repair``:
        then everything from the first damaged frame on is dropped and reported.
        """
        path = Path(directory)
        config = config or LogConfig()
        path.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(path / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            os.close(lock_fd)
            raise LogError(f"log directory {path} is in use by another process") from e
        try:
            segments, epochs, report = open_segments(path, config, repair=repair)
        except BaseException:
            os.close(lock_fd)
            raise
        for line in report.lines():
            log.warning("log %s: %s", path, line)
        return cls(path, config, segments, epochs, report, lock_fd, clock_ms)

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
    def last_epoch(self) -> int:
        return self.epochs.last_epoch

    @property
    def last_epoch_start(self) -> int:
        return self.epochs.last_epoch_start

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
            raise LogError(f"log {self.directory} failed earlier: {self._failed}") from self._failed

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
        return await self.append_encoded(
            self.encode(events), epoch=epoch, ingest_time_ms=ingest_time_ms
        )

    async def append_encoded(
        self, batch: EncodedBatch, *, epoch: int, ingest_time_ms: int | None = None
    ) -> AppendResult:
        """Append an already-encoded batch (see ``encode``) at the next offset."""
        ingest = self._clock_ms() if ingest_time_ms is None else ingest_time_ms
        self._check_usable()
        return await self._committer.submit(Pending(batch, None, epoch, ingest, len(batch.payload)))

    async def append_frames(self, frames: bytes) -> AppendResult:
        """Append verbatim frames (replication): they must start at ``log_end``."""
        self._check_usable()
        return await self._committer.submit(Pending(None, frames, 0, 0, len(frames)))

    def append_sync(
        self, events: Sequence[Event], *, epoch: int, ingest_time_ms: int | None = None
    ) -> AppendResult:
        """Blocking append without group commit, for tools and single-threaded callers."""
        self._check_usable()
        ingest = self._clock_ms() if ingest_time_ms is None else ingest_time_ms
        batch = self.encode(events)
        result = self._write_items([Pending(batch, None, epoch, ingest, len(batch.payload))])[0]
        if isinstance(result, BaseException):
            raise result
        self._wake_readers()
        return result

    def _write_items(self, items: list[Pending]) -> list[AppendResult | BaseException]:
        """Writer thread: frame, write and (per policy) force a group of appends."""
        with self._lock:
            if self._failed is not None or self._closed:
                return [LogError(f"log {self.directory} is failed or closed")] * len(items)
            results: list[AppendResult | BaseException] = []
            staged = _Staged()
            try:
                for item in items:
                    try:
                        results.append(self._stage(item, staged))
                    except WalrepError as e:
                        results.append(e)
                self._write_staged(staged)
                forced = any(item.is_sync for item in items)
                if forced or self.config.fsync_policy is FsyncPolicy.ALWAYS:
                    self._segments[-1].sync()
                    self._durable_end = self._log_end
            except OSError as e:
                self._failed = e
                error = LogError(f"write to {self._segments[-1].path} failed: {e}")
                error.__cause__ = e
                return [error] * len(items)
            return results

    def _stage(self, item: Pending, staged: _Staged) -> AppendResult:
        """Assign offsets to one append and queue its bytes; roll the segment if full."""
        if item.frames is not None:
            return self._stage_frames(item.frames, staged)
        if item.batch is None:  # a sync request: nothing to write
            return AppendResult(staged.end(self._log_end), 0)
        base = staged.end(self._log_end)
        self._begin_epoch(item.epoch, base)
        head, header = build_header(
            item.batch, base_offset=base, epoch=item.epoch, ingest_time_ms=item.ingest_time_ms
        )
        self._queue_frame([head, item.batch.payload], header, staged)
        return AppendResult(base, item.batch.count)

    def _stage_frames(self, data: bytes, staged: _Staged) -> AppendResult:
        # Check every frame before staging any: staging may write (a segment roll) and
        # begin epochs durably, so a refusal afterwards could not take that back.
        first, pos, epoch = staged.end(self._log_end), 0, self.epochs.last_epoch
        checked: list[tuple[int, FrameHeader]] = []
        expected = first
        while pos < len(data):
            status, header = inspect_frame(data, pos, self.config.max_payload_bytes)
            if status is not FrameStatus.OK or header is None:
                raise LogError(f"frame at byte {pos} of the appended data: {status.value}")
            if header.base_offset != expected:
                got = header.base_offset
                raise LogError(f"frame at byte {pos} starts at offset {got}, log end is {expected}")
            if header.epoch < epoch:
                raise FencedError(header.epoch, epoch)
            checked.append((pos, header))
            pos += header.frame_bytes
            expected, epoch = header.end_offset, header.epoch
        view = memoryview(data)
        for pos, header in checked:  # all of it or nothing: nothing below refuses
            self._begin_epoch(header.epoch, header.base_offset)
            self._queue_frame([view[pos : pos + header.frame_bytes]], header, staged)
        return AppendResult(first, expected - first)

    def _begin_epoch(self, epoch: int, start_offset: int) -> None:
        if epoch < self.epochs.last_epoch:
            raise FencedError(epoch, self.epochs.last_epoch)
        if epoch > self.epochs.last_epoch:
            self.epochs.begin(epoch, start_offset)  # durable before the frame is written

    def _queue_frame(self, buffers: list[Buffer], header: FrameHeader, staged: _Staged) -> None:
        active = self._segments[-1]
        size = header.frame_bytes
        if active.size + staged.bytes + size > self.config.segment_bytes_max and (
            active.size + staged.bytes > 0
        ):
            self._write_staged(staged)
            self._roll()
        staged.add(buffers, header)

    def _write_staged(self, staged: _Staged) -> None:
        """Write staged frames to the active segment, then publish them to readers."""
        if not staged.headers:
            return
        active = self._segments[-1]
        position = active.size
        written = active.write_at_end(staged.buffers)
        assert written == staged.bytes, (written, staged.bytes)
        for header in staged.headers:
            active.index.note(header.base_offset, position)
            position += header.frame_bytes
        active.last_epoch = staged.headers[-1].epoch
        active.end_offset = staged.headers[-1].end_offset
        active.size = position
        self._log_end = active.end_offset
        staged.clear()

    def _roll(self) -> None:
        """Seal the active segment (forced, index saved) and start the next one."""
        old = self._segments[-1]
        old.sync()
        self._durable_end = self._log_end
        old.index.save(
            old.index_path,
            base_offset=old.base_offset,
            segment_bytes=old.size,
            end_offset=old.end_offset,
            last_epoch=old.last_epoch,
        )
        old.close_writer()
        new = Segment(self.directory, self._log_end, self.config.index_interval_bytes)
        new.create()
        fsync_dir(self.directory)
        new.last_epoch = old.last_epoch
        self._segments.append(new)

    async def sync(self) -> int:
        """Force everything written so far; returns the new ``durable_end``."""
        self._check_usable()
        await self._committer.submit(Pending(None, None, 0, 0, 0))
        return self._durable_end

    def _sync_now(self) -> None:
        with self._lock:
            if self._closed or self._failed is not None or self._durable_end == self._log_end:
                return
            end = self._log_end
            try:
                self._segments[-1].sync()
            except OSError as e:
                self._failed = e
                raise LogError(f"fdatasync of {self._segments[-1].path} failed: {e}") from e
            self._durable_end = end

    # --- waiting for growth ------------------------------------------------------------

    async def _wait_for_change(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    def _wake_readers(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_beyond(self, offset: int) -> None:
        """Return once ``log_end > offset`` (or the log is closed or failed)."""
        while self._log_end <= offset:
            self._check_usable()
            await self._wait_for_change()
        self._check_usable()

    # --- reading -------------------------------------------------------------------------

    def frames(
        self, from_offset: int | None = None, to_offset: int | None = None
    ) -> Iterator[StoredFrame]:
        """Checked frames holding offsets in ``[from_offset, to_offset)``, in order.

        The end is re-read at every step, so a reader also sees frames appended while it
        iterates. Raises ``OffsetOutOfRangeError`` below ``log_start`` and
        ``CorruptLogError`` for damage; never yields a frame that failed its check.
        """
        self._check_usable()
        offset = self.log_start if from_offset is None else from_offset
        if not self.log_start <= offset <= self._log_end:
            raise OffsetOutOfRangeError(offset, self.log_start, self._log_end)
        limit = 2**63 if to_offset is None else to_offset
        generation, segment, position = -1, self._segments[0], 0
        while offset < min(self._log_end, limit):
            if generation != self._generation or position >= segment.size:
                generation = self._generation
                segment, position = self._locate(offset)
            try:
                header, frame = segment.read_frame(
                    position, None, self.config.max_payload_bytes, reading_offset=offset
                )
            except OSError as e:  # the segment was deleted by retention under us
                raise OffsetOutOfRangeError(offset, self.log_start, self._log_end) from e
            if not header.base_offset <= offset < header.end_offset:
                raise CorruptLogError(str(segment.path), position, offset, "frame out of sequence")
            yield StoredFrame(str(segment.path), position, header, frame)
            offset = header.end_offset
            position += header.frame_bytes

    def _locate(self, offset: int) -> tuple[Segment, int]:
        segments = self._segments
        i = bisect.bisect_right([s.base_offset for s in segments], offset) - 1
        if i < 0 or offset >= segments[i].end_offset:
            raise OffsetOutOfRangeError(offset, self.log_start, self._log_end)
        return segments[i], segments[i].locate(offset)

    def read(
        self, from_offset: int | None = None, to_offset: int | None = None
    ) -> Iterator[Record]:
        """Events with offsets in ``[from_offset, to_offset)``, each with its frame's metadata."""
        start = self.log_start if from_offset is None else from_offset
        for frame in self.frames(start, to_offset):
            header = frame.header
            events = decode_payload(header, frame.payload, self.config.max_batch_bytes)
            for i, event in enumerate(events):
                offset = header.base_offset + i
                if offset >= start and (to_offset is None or offset < to_offset):
                    yield Record(offset, header.epoch, header.ingest_time_ms, event)

    async def tail(self, from_offset: int) -> AsyncIterator[Record]:
        """Every event from ``from_offset`` on, waiting for new ones as they are written."""
        offset = from_offset
        while True:
            for record in self.read(offset):
                yield record
                offset = record.offset + 1
            await self.wait_beyond(offset)

    # --- cutting the log -------------------------------------------------------------------

    def truncate_after(self, offset: int) -> None:
        """Drop every event at or after ``offset``; afterwards ``log_end == offset``.

        Crash-safe: an intent record is made durable first and redone on open, so a crash
        leaves either the old log or exactly the truncated one.
        """
        with self._lock:
            self._check_usable()
            if not self.log_start <= offset <= self._log_end:
                raise OffsetOutOfRangeError(offset, self.log_start, self._log_end)
            if offset == self._log_end:
                return
            self._segments = truncate_segments(self.directory, self._segments, offset, self.config)
            self.epochs.truncate_from(offset)
            finish_pending(self.directory)  # only now: a crash before this redoes it all
            self._log_end = self._segments[-1].end_offset
            self._durable_end = min(self._durable_end, self._log_end)
            self._generation += 1

    def delete_before(self, offset: int) -> int:
        """Delete whole segments whose events are all below ``offset``; returns ``log_start``.

        The newest segment is never deleted. Oldest first, each unlink made durable before
        the next, so a crash leaves a contiguous suffix of the log.
        """
        with self._lock:
            self._check_usable()
            while len(self._segments) > 1 and self._segments[1].base_offset <= offset:
                old = self._segments.pop(0)
                old.close()
                for path in (old.path, old.index_path):
                    path.unlink(missing_ok=True)
                fsync_dir(self.directory)
            return self.log_start

    # --- closing ------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Wait for queued appends, force everything, release the directory."""
        if self._closed:
            return
        await self._committer.aclose()  # writes everything queued, then the thread ends
        self.close()

    def close(self) -> None:
        """Force what is written and release files (no appends may be in flight)."""
        if self._closed:
            return
        self._committer.join()  # writes anything still queued first
        with self._lock:
            try:
                if self._failed is None:
                    self._segments[-1].sync()
                    self._durable_end = self._log_end
            finally:
                self._closed = True
                for segment in self._segments:
                    segment.close()
                os.close(self._lock_fd)
        self._wake_readers()

    def __enter__(self) -> Wal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
