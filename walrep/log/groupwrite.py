"""Wal's write side: one group of appends staged, written, forced; segment rolls.

``GroupWriter`` is the part of ``Wal`` its writer thread runs (``_write_items``, under
``Wal._lock``) and the interval force (``_interval_sync``, mostly outside the lock). Order
within a group, the contract behind "fsync before ack": every request is checked and
staged (offsets assigned, a new epoch recorded durably before its first frame), the
staged frames are written in one ``pwritev`` per segment, then forced by one
``fdatasync`` (``ALWAYS``, or a ``sync()`` in the group) before any result is handed out.
A frame that does not fit the active segment first writes what is staged, seals the
segment (forced, index saved) and starts the next one (``segment.needs_roll``).
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from walrep.errors import ClosedError, LogFailedError, WalrepError
from walrep.log.accept import check_frames, fence
from walrep.log.config import FsyncPolicy, LogConfig
from walrep.log.durable import DurableNotifier
from walrep.log.epochs import EpochHistory
from walrep.log.frame import FrameHeader, build_header
from walrep.log.fsutil import FileOps, fsync_dir
from walrep.log.recent import RecentFrames
from walrep.log.segment import Segment, needs_roll
from walrep.log.types import AppendResult
from walrep.log.writer import Pending

Buffer = bytes | memoryview


class _Staged:
    """Frames of one group waiting to be written: buffers in order, headers, byte count."""

    __slots__ = ("buffers", "bytes", "headers", "kept")

    def __init__(self) -> None:
        self.buffers: list[Buffer] = []
        self.headers: list[FrameHeader] = []
        self.kept: list[list[Buffer] | None] = []  # per frame: its buffers, to keep in memory
        self.bytes = 0

    def add(self, buffers: list[Buffer], header: FrameHeader, *, keep: bool) -> None:
        self.buffers += buffers
        self.headers.append(header)
        self.kept.append(buffers if keep else None)
        self.bytes += header.frame_bytes

    def end(self, log_end: int) -> int:
        return self.headers[-1].end_offset if self.headers else log_end

    def clear(self) -> None:
        self.buffers, self.headers, self.kept, self.bytes = [], [], [], 0


class GroupWriter(ABC):
    """Staging and writing of groups; the state it shares with ``Wal`` is declared here."""

    directory: Path
    config: LogConfig
    epochs: EpochHistory
    _ops: FileOps
    _lock: threading.Lock
    _segments: list[Segment]
    _log_end: int
    _durable_end: int
    _truncation_count: int
    _failed: BaseException | None
    _closed: bool
    _durable: DurableNotifier
    _recent: RecentFrames[Segment]

    @abstractmethod
    def _fail(self, error: OSError, what: str) -> LogFailedError:
        """Mark the log failed; the error to raise."""

    @abstractmethod
    def _on_loop(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the log's event loop."""

    def _write_items(self, items: list[Pending]) -> list[AppendResult | BaseException]:
        """Writer thread: frame, write and (per policy) force a group of appends."""
        with self._lock:
            if self._closed:
                return [ClosedError(f"log {self.directory} is closed") for _ in items]
            if self._failed is not None:
                return [LogFailedError(f"log {self.directory} failed earlier") for _ in items]
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
                path = self._segments[-1].path
                return [self._fail(e, f"write or fdatasync of {path} failed") for _ in items]
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
        self._queue_frame([head, item.batch.payload], header, staged, keep=True)
        return AppendResult(base, item.batch.count)

    def _stage_frames(self, data: bytes, staged: _Staged) -> AppendResult:
        # Check every frame before staging any: staging may write (a segment roll) and
        # begin epochs durably, so a refusal afterwards could not take that back.
        first = staged.end(self._log_end)
        checked = check_frames(
            data,
            first_offset=first,
            last_epoch=self.epochs.last_epoch,
            max_batch_bytes=self.config.max_batch_bytes,
        )
        view = memoryview(data)
        for pos, header in checked:  # all of it or nothing: nothing below refuses
            self._begin_epoch(header.epoch, header.base_offset)
            # Not kept in memory: a passive ships only to catch a peer up, from the file.
            self._queue_frame([view[pos : pos + header.frame_bytes]], header, staged, keep=False)
        return AppendResult(first, (checked[-1][1].end_offset if checked else first) - first)

    def _begin_epoch(self, epoch: int, start_offset: int) -> None:
        if fence(epoch, self.epochs.last_epoch):
            self.epochs.begin(epoch, start_offset)  # durable before the frame is written

    def _queue_frame(
        self, buffers: list[Buffer], header: FrameHeader, staged: _Staged, *, keep: bool
    ) -> None:
        position = self._segments[-1].size + staged.bytes
        if needs_roll(position, header.frame_bytes, self.config.segment_bytes_max):
            self._write_staged(staged)
            self._roll()
        staged.add(buffers, header, keep=keep and self._recent.max_bytes > 0)

    def _write_staged(self, staged: _Staged) -> None:
        """Write staged frames to the active segment, keep the new ones in memory
        (``recent.py``), then publish them to readers (``log_end``)."""
        if not staged.headers:
            return
        active = self._segments[-1]
        position = active.size
        written = active.write_at_end(staged.buffers)
        assert written == staged.bytes, (written, staged.bytes)
        for header, kept in zip(staged.headers, staged.kept, strict=True):
            active.index.note(header.base_offset, position)
            if kept is not None:
                self._recent.add(header, position, kept, active)
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
            ops=self._ops,
        )
        old.close_writer()
        new = Segment(self.directory, self._log_end, self.config.index_interval_bytes, self._ops)
        new.create()
        fsync_dir(self.directory, self._ops)
        new.last_epoch = old.last_epoch
        self._segments.append(new)

    def _interval_sync(self) -> None:
        """Writer thread, ``INTERVAL`` policy: force the log without holding the lock.

        The active segment's descriptor is duplicated under the lock (a roll or close may
        close the original meanwhile); ``durable_end`` then advances only to the end seen
        before the fdatasync, and not at all if a truncation came in between (it forced
        what it kept itself).
        """
        with self._lock:
            if self._closed or self._failed is not None or self._durable_end >= self._log_end:
                return
            end, truncations, active = self._log_end, self._truncation_count, self._segments[-1]
            try:
                fd = active.dup_writer()
            except OSError as e:
                raise self._fail(e, f"fdatasync of {active.path} failed") from e
        try:
            try:
                self._ops.fdatasync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            with self._lock:
                raise self._fail(e, f"fdatasync of {active.path} failed") from e
        with self._lock:
            if truncations != self._truncation_count or end <= self._durable_end:
                return
            self._durable_end = end
        self._on_loop(self._durable.deliver)
