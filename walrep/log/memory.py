"""``MemoryLog``: the write-ahead log in memory, with ``Wal``'s API and contracts.

For the deterministic simulator and for tests of code that uses a log. It keeps real
frame bytes (built and checked by the same codec), the real ``EpochHistory`` (with a
``MemoryEpochStore``), the replica state and the limits, and takes every decision with
the code ``Wal`` uses: the limits and frame checks (``accept``), the roll rule
(``segment.needs_roll``, so the same appends give the same segments and the same
``log_start`` after ``delete_before``), the re-framing of a batch cut by
``truncate_after`` (``frame.reframe_prefix``), the readers' truncation rule
(``reader``), and on ``recover`` the recovery plan, epoch trimming and floor rule of
``Wal.open`` (``recovery``). Segment names are pseudo names (``memory:<base>.wal``).

Driving it without an event loop: ``append``, ``append_encoded``, ``append_frames``,
``sync``, ``aclose`` (and ``wait_durable`` of an offset that is durable already) never
suspend, so a caller may run one with ``coro.send(None)`` and take the result from the
``StopIteration`` (as the simulator does with ``MemoryStore``). Only ``wait_durable`` of
an offset not yet durable, ``wait_beyond`` and ``tail`` wait, which needs a loop.
Durable listeners are called synchronously, in the call that made progress durable.

Durability follows ``config.fsync_policy``: ``ALWAYS`` makes an append durable before it
returns; ``NEVER`` and ``INTERVAL`` leave it written but not durable until ``sync()`` or
``sync_to(offset)`` (there is no timer: the simulator decides when an fsync completes).
A segment roll, a truncation and ``close`` force what they keep, as in ``Wal``.

Crash faults: ``disk_image()`` is what is on the "disk" (per segment the bytes written
and how many are durable, the epoch entries, the replica state, the limits); the
simulator cuts it as a crash would and ``MemoryLog.recover(image)`` opens the result
(``memdisk.py``).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

from walrep.errors import (
    ClosedError,
    CommittedTruncationError,
    CorruptLogError,
    MalformedFrameError,
    OffsetOutOfRangeError,
)
from walrep.log.accept import check_batch, check_frames, fence
from walrep.log.clock import wall_clock_ms
from walrep.log.config import FsyncPolicy, LogConfig
from walrep.log.durable import DurableListener, DurableNotifier
from walrep.log.epochs import EpochHistory, MemoryEpochStore
from walrep.log.frame import (
    HEADER_SIZE,
    EncodedBatch,
    Event,
    FrameHeader,
    build_header,
    encode_batch,
    parse_header,
    reframe_prefix,
)
from walrep.log.limits import LogLimits
from walrep.log.memdisk import DiskImage, MemorySegment, SegmentImage, recover_image
from walrep.log.reader import LogReader
from walrep.log.replica_state import ReplicaState
from walrep.log.segment import needs_roll
from walrep.log.types import AppendResult, RecoveryReport, StoredFrame

__all__ = ["DiskImage", "MemoryLog", "SegmentImage"]


class MemoryLog(LogReader[tuple[MemorySegment, int]]):
    """An in-memory log with ``Wal``'s public API (see the module docstring)."""

    def __init__(
        self,
        config: LogConfig,
        limits: LogLimits,
        segments: list[MemorySegment],
        epochs: EpochHistory,
        replica_state: ReplicaState,
        recovery: RecoveryReport,
        clock_ms: Callable[[], int],
    ) -> None:
        assert isinstance(epochs.store, MemoryEpochStore)
        self.config = config
        self.recovery = recovery
        self.epochs = epochs
        self._epoch_store: MemoryEpochStore = epochs.store
        self._limits = limits
        self._segments = segments
        self._replica_state = replica_state
        self._clock_ms = clock_ms
        self._log_end = segments[-1].end_offset
        self._appends = 0
        self._closed = False
        self._init_reader()
        self._durable = DurableNotifier(lambda: self.durable_end)

    @classmethod
    def create(
        cls, config: LogConfig | None = None, *, clock_ms: Callable[[], int] = wall_clock_ms
    ) -> MemoryLog:
        """A new, empty log (what ``Wal.open`` makes of an empty directory)."""
        config = LogConfig() if config is None else config
        epochs = EpochHistory.in_memory()
        return cls(
            config,
            config.limits,
            [MemorySegment(0)],
            epochs,
            ReplicaState(),
            RecoveryReport(),
            clock_ms,
        )

    @classmethod
    def recover(
        cls,
        image: DiskImage,
        config: LogConfig | None = None,
        *,
        repair: bool = False,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> MemoryLog:
        """Open what a crash left: the recovery decisions of ``Wal.open`` on ``image``.

        A torn tail of the newest segment is cut and reported; other damage raises
        ``CorruptLogError`` (naming the pseudo segment) unless ``repair``, which cuts the
        log before it (and lowers a committed floor above the new end). Unlike ``Wal``,
        which trusts a fresh index, every segment is scanned. Config and limits as in
        ``Wal.open``: reads use the image's limits joined with the config's.
        """
        config = LogConfig.for_limits(image.limits) if config is None else config
        limits = image.limits.union(config.limits)
        recovered = recover_image(image, limits, repair=repair)
        return cls(
            config,
            limits,
            recovered.segments,
            recovered.epochs,
            recovered.replica_state,
            recovered.report,
            clock_ms,
        )

    # --- state ---------------------------------------------------------------------

    @property
    def log_start(self) -> int:
        return self._segments[0].base_offset

    @property
    def log_end(self) -> int:
        return self._log_end

    @property
    def durable_end(self) -> int:
        """Every offset below it survives a crash (sealed segments are all durable)."""
        return self._segments[-1].durable_end()

    @property
    def limits(self) -> LogLimits:
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
        """``(groups, requests)``: every append is a group of its own here."""
        return self._appends, self._appends

    def segments(self) -> list[tuple[int, int, int, str]]:
        """``(base offset, end offset, bytes, pseudo name)`` of each segment, oldest first."""
        return [(s.base_offset, s.end_offset, s.size, s.name) for s in self._segments]

    def _check_usable(self) -> None:
        if self._closed:
            raise ClosedError("memory log is closed")

    # --- appending -------------------------------------------------------------------

    def encode(self, events: Sequence[Event]) -> EncodedBatch:
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
        return self.append_sync(events, epoch=epoch, ingest_time_ms=ingest_time_ms)

    def append_sync(
        self, events: Sequence[Event], *, epoch: int, ingest_time_ms: int | None = None
    ) -> AppendResult:
        self._check_usable()
        return self._append_batch(self.encode(events), epoch, ingest_time_ms)

    async def append_encoded(
        self, batch: EncodedBatch, *, epoch: int, ingest_time_ms: int | None = None
    ) -> AppendResult:
        self._check_usable()
        return self._append_batch(batch, epoch, ingest_time_ms)

    def _append_batch(
        self, batch: EncodedBatch, epoch: int, ingest_time_ms: int | None
    ) -> AppendResult:
        ingest = self._clock_ms() if ingest_time_ms is None else ingest_time_ms
        check_batch(batch, self.config.max_batch_bytes)
        base = self._log_end
        if fence(epoch, self.epochs.last_epoch):
            self.epochs.begin(epoch, base)
        head, header = build_header(batch, base_offset=base, epoch=epoch, ingest_time_ms=ingest)
        self._add_frame(head + batch.payload, header)
        self._appended()
        return AppendResult(base, batch.count)

    async def append_frames(self, frames: bytes) -> AppendResult:
        """Verbatim frames (replication), checked exactly as ``Wal`` checks them."""
        self._check_usable()
        first = self._log_end
        checked = check_frames(
            frames,
            first_offset=first,
            last_epoch=self.epochs.last_epoch,
            max_batch_bytes=self.config.max_batch_bytes,
        )
        for pos, header in checked:
            if fence(header.epoch, self.epochs.last_epoch):
                self.epochs.begin(header.epoch, header.base_offset)
            self._add_frame(frames[pos : pos + header.frame_bytes], header)
        self._appended()
        return AppendResult(first, self._log_end - first)

    def _add_frame(self, frame: bytes, header: FrameHeader) -> None:
        active = self._segments[-1]
        if needs_roll(active.size, header.frame_bytes, self.config.segment_bytes_max):
            active.durable_bytes = active.size  # a roll forces the sealed segment
            active = MemorySegment(self._log_end)
            self._segments.append(active)
        active.add(frame, header)
        self._log_end = header.end_offset

    def _appended(self) -> None:
        self._appends += 1
        if self.config.fsync_policy is FsyncPolicy.ALWAYS:
            active = self._segments[-1]
            active.durable_bytes = active.size
        self._wake_readers()
        self._durable.deliver()

    # --- durability ------------------------------------------------------------------

    async def sync(self) -> int:
        """Force everything written; returns the new ``durable_end``."""
        self._check_usable()
        self.sync_to(self._log_end)
        return self.durable_end

    def sync_to(self, offset: int) -> None:
        """An fsync started when ``log_end`` was ``offset`` completed: that much is durable.

        Pass a ``log_end`` seen after the last ``truncate_after`` (a truncation forces
        what it keeps itself). Listeners are told of the advance.
        """
        self._check_usable()
        self._segments[-1].make_durable(offset)
        self._durable.deliver()

    def add_durable_listener(self, callback: DurableListener) -> None:
        """Call ``callback(durable_end)`` whenever it advances (synchronously)."""
        self._durable.add_listener(callback)

    async def wait_durable(self, offset: int) -> None:
        """Return once ``durable_end >= offset`` (suspends only if it must wait)."""
        await self._durable.wait(offset, self._check_usable)

    # --- replica state -----------------------------------------------------------------

    def save_replica_state(self, state: ReplicaState) -> None:
        """As ``Wal.save_replica_state``: fields only grow; durable on return."""
        self._check_usable()
        merged = self._replica_state.merged(state)
        assert merged.committed_floor <= self._log_end, (merged, self._log_end)
        self._replica_state = merged

    # --- reading -------------------------------------------------------------------------

    def _frame_at(
        self, offset: int, hint: tuple[MemorySegment, int] | None
    ) -> tuple[StoredFrame, tuple[MemorySegment, int]]:
        if hint is None or hint[1] >= len(hint[0].frames):
            segment = self._locate(offset)
            index = segment.index_of(offset)
        else:
            segment, index = hint
        if segment.deleted:  # retention dropped it under the reader
            raise OffsetOutOfRangeError(offset, self.log_start, self._log_end)
        header = segment.headers[index]
        assert header.base_offset <= offset < header.end_offset, (header, offset)
        frame = StoredFrame(segment.name, segment.positions[index], header, segment.frames[index])
        return frame, (segment, index + 1)

    def _locate(self, offset: int) -> MemorySegment:
        segments = self._segments
        i = bisect.bisect_right([s.base_offset for s in segments], offset) - 1
        if i < 0 or offset >= segments[i].end_offset:
            raise OffsetOutOfRangeError(offset, self.log_start, self._log_end)
        return segments[i]

    # --- cutting the log -------------------------------------------------------------------

    def truncate_after(self, offset: int) -> None:
        """As ``Wal.truncate_after``: a batch cut in two is re-framed the same way."""
        self._check_usable()
        if not self.log_start <= offset <= self._log_end:
            raise OffsetOutOfRangeError(offset, self.log_start, self._log_end)
        floor = self._replica_state.committed_floor
        if offset < floor:
            raise CommittedTruncationError(offset, floor)
        if offset == self._log_end:
            return
        # The newest segment starting at or below the cut is the last one kept.
        keep = bisect.bisect_right([s.base_offset for s in self._segments], offset) - 1
        segment = self._segments[keep]
        replacement: tuple[bytes, FrameHeader] | None = None
        index = len(segment.frames)
        if offset < segment.end_offset:
            index = segment.index_of(offset)
            header = segment.headers[index]
            if header.base_offset < offset:
                replacement = self._reframe(segment, index, offset)
        segment.cut(index)
        if replacement is not None:
            segment.add(*replacement)
        for later in self._segments[keep + 1 :]:
            later.deleted = True
        del self._segments[keep + 1 :]
        segment.durable_bytes = segment.size  # the truncation forces what it keeps
        self.epochs.truncate_from(offset)
        self._log_end = offset
        self._truncations.record(offset)
        self._durable.lowered(self.durable_end)
        self._wake_readers()
        self._durable.deliver()

    def _reframe(
        self, segment: MemorySegment, index: int, offset: int
    ) -> tuple[bytes, FrameHeader]:
        header, frame = segment.headers[index], segment.frames[index]
        try:
            data = reframe_prefix(
                header,
                frame[HEADER_SIZE:],
                offset,
                max_batch_bytes=self._limits.max_batch_bytes,
                compress_threshold_bytes=self.config.compress_threshold_bytes,
            )
        except MalformedFrameError as e:
            reason = f"the batch to cut does not decode: {e}"
            raise CorruptLogError(
                segment.name, segment.positions[index], header.base_offset, reason
            ) from e
        return data, parse_header(data)

    def delete_before(self, offset: int) -> int:
        """As ``Wal.delete_before``: whole segments, never the newest; returns ``log_start``."""
        self._check_usable()
        while len(self._segments) > 1 and self._segments[1].base_offset <= offset:
            self._segments.pop(0).deleted = True
        return self.log_start

    # --- crash images ----------------------------------------------------------------------

    def disk_image(self) -> DiskImage:
        """What is on the simulated disk now (also the unsynced bytes: see ``SegmentImage``)."""
        return DiskImage(
            tuple(s.image() for s in self._segments),
            self._epoch_store.saved,
            self._replica_state,
            self._limits,
        )

    # --- closing ---------------------------------------------------------------------------

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """Force what is written (as ``Wal.close``); later calls raise ``ClosedError``."""
        if self._closed:
            return
        self.sync_to(self._log_end)
        self._closed = True
        self._wake_readers()
        self._durable.fail(lambda: ClosedError("memory log is closed"))

    def __enter__(self) -> MemoryLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
