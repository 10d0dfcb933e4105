"""Reading a log: frames, records, tailing, and the rule for readers across a truncation.

``LogReader`` is the read side of ``Wal`` and ``MemoryLog``; each supplies only how to
find the checked frame that holds an offset (``_frame_at``). Ordering contracts:

* Frames and records come in offset order, each offset once; only frames that passed
  their checks (CRC, sequence) are yielded, and only payloads that decode (else
  ``CorruptLogError`` naming the segment, byte position and first offset of the frame).
* The end is re-read at every step: a reader also sees what is appended while it runs.
* **Truncation** (``TruncationHistory``, the one place of this rule): a reader whose next
  offset is above the point a ``truncate_after`` cut the log to raises
  ``LogTruncatedError(offset, truncated_to)`` — the history it was reading is gone, and
  the new one must not be spliced onto it. A truncation at or above its next offset is
  harmless: what it has read still stands, and it reads on from there.
* Retention (``delete_before``) under a reader: ``OffsetOutOfRangeError``, never bytes of
  a deleted file.

All of it runs on the log's event loop thread (``Wal``'s writer thread only appends).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Generic, TypeVar

from walrep.errors import (
    CorruptLogError,
    LogTruncatedError,
    MalformedFrameError,
    OffsetOutOfRangeError,
)
from walrep.log.frame import Event, decode_payload
from walrep.log.limits import LogLimits
from walrep.log.types import Record, StoredFrame

HintT = TypeVar("HintT")
_NO_LIMIT = 2**63


class _Span:
    """The log's history between two truncations; ``cut_to`` and ``next`` set at its end."""

    __slots__ = ("cut_to", "next")

    def __init__(self) -> None:
        self.cut_to = 0
        self.next: _Span | None = None


class TruncationHistory:
    """The truncations of one log, as a chain readers follow from where they started.

    Spans nobody reads any more are garbage: memory is bounded by the live readers.
    """

    def __init__(self) -> None:
        self._current = _Span()

    def cursor(self) -> ReadCursor:
        """A reader's position in the history: it sees every truncation from now on."""
        return ReadCursor(self._current)

    def record(self, truncated_to: int) -> None:
        """``truncate_after(truncated_to)`` cut the log: end the current span."""
        span = self._current
        span.cut_to = truncated_to
        span.next = self._current = _Span()


class ReadCursor:
    __slots__ = ("_span",)

    def __init__(self, span: _Span) -> None:
        self._span = span

    def changed(self) -> bool:
        """A truncation happened since the last ``check``."""
        return self._span.next is not None

    def check(self, next_offset: int) -> bool:
        """Apply the truncation rule for a reader about to read ``next_offset``.

        Raises ``LogTruncatedError`` if a truncation since the last check cut the log
        below ``next_offset``; returns whether there was any truncation (harmless ones:
        the reader must locate its offset again, the bytes may have moved).
        """
        span: _Span | None = self._span
        lowest: int | None = None
        while span is not None and span.next is not None:
            lowest = span.cut_to if lowest is None else min(lowest, span.cut_to)
            self._span = span = span.next
        if lowest is None:
            return False
        if lowest < next_offset:
            raise LogTruncatedError(next_offset, lowest)
        return True


class LogReader(ABC, Generic[HintT]):
    """``frames``, ``read``, ``tail`` and ``wait_beyond`` over ``_frame_at``."""

    _truncations: TruncationHistory
    _change_waiters: list[asyncio.Future[None]]

    def _init_reader(self) -> None:
        self._truncations = TruncationHistory()
        self._change_waiters = []

    # --- what an implementation supplies -------------------------------------------------

    @property
    @abstractmethod
    def log_start(self) -> int: ...

    @property
    @abstractmethod
    def log_end(self) -> int: ...

    @property
    @abstractmethod
    def limits(self) -> LogLimits:
        """The limits reads apply (at least those of every frame ever written here)."""

    @abstractmethod
    def _check_usable(self) -> None:
        """Raise ``ClosedError`` or ``LogFailedError`` if the log cannot be used."""

    @abstractmethod
    def _frame_at(self, offset: int, hint: HintT | None) -> tuple[StoredFrame, HintT]:
        """The checked frame holding ``offset`` and a hint for the frame after it.

        ``hint`` is the one returned with the previous frame (None: locate afresh).
        """

    # --- waiting for growth --------------------------------------------------------------

    def _wake_readers(self) -> None:
        """The log grew, was cut, closed or failed (call on the loop thread)."""
        waiters, self._change_waiters = self._change_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_beyond(self, offset: int) -> None:
        """Return once ``log_end > offset``.

        Raises if the log is closed or failed, and ``LogTruncatedError`` if a truncation
        made during the wait cut the log below ``offset``.
        """
        await self._wait_beyond(offset, self._truncations.cursor())

    async def _wait_beyond(self, offset: int, cursor: ReadCursor) -> None:
        while True:
            self._check_usable()
            cursor.check(offset)
            if self.log_end > offset:
                return
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._change_waiters.append(waiter)
            await waiter

    # --- reading -------------------------------------------------------------------------

    def frames(
        self, from_offset: int | None = None, to_offset: int | None = None
    ) -> Iterator[StoredFrame]:
        """Checked frames holding offsets in ``[from_offset, to_offset)``, in order.

        The first frame may start before ``from_offset``. Raises ``OffsetOutOfRangeError``
        outside ``[log_start, log_end]``, ``CorruptLogError`` for damage and
        ``LogTruncatedError`` (see the module docstring); payloads are not decoded.
        """
        return self._frames(from_offset, to_offset, None)

    def _frames(
        self, from_offset: int | None, to_offset: int | None, cursor: ReadCursor | None
    ) -> Generator[StoredFrame, None, None]:
        self._check_usable()
        if cursor is None:
            cursor = self._truncations.cursor()
        offset = self.log_start if from_offset is None else from_offset
        cursor.check(offset)
        if not self.log_start <= offset <= self.log_end:
            raise OffsetOutOfRangeError(offset, self.log_start, self.log_end)
        limit = _NO_LIMIT if to_offset is None else to_offset
        hint: HintT | None = None
        while True:
            self._check_usable()
            if cursor.check(offset):
                hint = None
            if offset >= min(self.log_end, limit):
                return
            frame, hint = self._frame_at(offset, hint)
            yield frame
            offset = frame.header.end_offset

    def read(
        self, from_offset: int | None = None, to_offset: int | None = None
    ) -> Iterator[Record]:
        """Events with offsets in ``[from_offset, to_offset)``, each with its frame's metadata.

        Raises like ``frames``, and ``CorruptLogError`` for a payload that passed its CRC
        but does not decode. An event is never yielded after a truncation removed it.
        """
        start = self.log_start if from_offset is None else from_offset
        return self._records(start, to_offset, None)

    def _records(
        self, start: int, to_offset: int | None, cursor: ReadCursor | None
    ) -> Iterator[Record]:
        cursor = self._truncations.cursor() if cursor is None else cursor
        offset = start
        while True:
            frames = self._frames(offset, to_offset, cursor)
            truncated = False
            for frame in frames:
                header = frame.header
                for i, event in enumerate(self._decode(frame)):
                    at = header.base_offset + i
                    if at < offset:
                        continue
                    if to_offset is not None and at >= to_offset:
                        return
                    if cursor.changed():  # decoded before a truncation: read it again
                        truncated = True
                        break
                    yield Record(at, header.epoch, header.ingest_time_ms, event)
                    offset = at + 1
                if truncated:
                    break
            frames.close()
            if not truncated:
                return

    def _decode(self, frame: StoredFrame) -> list[Event]:
        try:
            return decode_payload(frame.header, frame.payload, self.limits.max_batch_bytes)
        except MalformedFrameError as e:
            reason = f"payload does not decode: {e}"
            offset = frame.header.base_offset
            raise CorruptLogError(frame.segment, frame.position, offset, reason) from e

    async def tail(self, from_offset: int) -> AsyncIterator[Record]:
        """Every event from ``from_offset`` on, waiting for new ones as they are written.

        Raises like ``read``; a truncation below its position raises
        ``LogTruncatedError``, also while it waits.
        """
        cursor = self._truncations.cursor()
        offset = from_offset
        while True:
            for record in self._records(offset, None, cursor):
                yield record
                offset = record.offset + 1
            await self._wait_beyond(offset, cursor)
