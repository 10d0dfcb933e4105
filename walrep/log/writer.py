"""Group commit: one writer thread that takes everything queued and writes it at once.

Appenders on the event loop queue a ``Pending`` and await its future. The writer
thread takes the whole queue, hands it to ``write_group`` (which frames, writes and —
per policy — forces it: **fsync before ack**), then resolves every future of the group
with one ``call_soon_threadsafe``. While it writes, new appends queue up: that queue is
the next group. So the number of ``fdatasync`` calls follows the disk, not the callers.

Bounded: at most ``pending_bytes_max`` bytes wait in the queue; an appender beyond
that waits (backpressure) until the writer takes the queue. With the ``interval_ms``
policy the writer also calls ``interval_sync`` once per interval, busy or idle (it forces
the log without holding the log's lock, see ``Wal._interval_sync``); so a lone append is
forced within about one interval, without waiting for a next one.

A ``Wal``'s async API is used from one event loop (the first one that appends).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from walrep.errors import ClosedError
from walrep.log.frame import EncodedBatch
from walrep.log.types import AppendResult

Result = AppendResult | BaseException
log = logging.getLogger(__name__)


@dataclass(slots=True)
class Pending:
    """One queued request: a batch to frame, verbatim frames, or (neither) a forced sync."""

    batch: EncodedBatch | None
    frames: bytes | None
    epoch: int
    ingest_time_ms: int
    size: int
    future: asyncio.Future[AppendResult] | None = None

    @property
    def is_sync(self) -> bool:
        return self.batch is None and self.frames is None


class GroupCommitter:
    def __init__(
        self,
        write_group: Callable[[list[Pending]], list[Result]],
        *,
        pending_bytes_max: int,
        interval_sync: Callable[[], None] | None,
        sync_interval_ms: int,
        on_written: Callable[[], None],
        name: str,
    ) -> None:
        self._write_group = write_group
        self._pending_bytes_max = pending_bytes_max
        self._interval_sync = interval_sync
        self._sync_interval_s = sync_interval_ms / 1000
        self._sync_due = 0.0  # time.monotonic() of the next interval sync (writer thread)
        self._on_written = on_written
        self._name = name
        self._cond = threading.Condition()
        self._queue: list[Pending] = []  # guarded by _cond
        self._queued_bytes = 0  # guarded by _cond
        self._space_waiters: list[asyncio.Future[None]] = []  # guarded by _cond
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Future[None] | None = None
        self.groups_written = 0  # metrics: groups taken by the writer, and requests in them
        self.requests_written = 0

    async def submit(self, item: Pending) -> AppendResult:
        """Queue ``item`` (waiting for room if the queue is full) and await its result."""
        loop = self._bind_loop()
        item.future = loop.create_future()
        while True:
            with self._cond:
                if self._closing:
                    raise ClosedError(f"{self._name} is closed")
                if not self._queue or self._queued_bytes + item.size <= self._pending_bytes_max:
                    self._queue.append(item)
                    self._queued_bytes += item.size
                    self._cond.notify()
                    break
                waiter = loop.create_future()
                self._space_waiters.append(waiter)
            await waiter
        return await item.future

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop results are delivered on (None before the first request)."""
        return self._loop

    def bind_loop(self) -> asyncio.AbstractEventLoop:
        """Use the running loop from now on (and start the writer thread)."""
        return self._bind_loop()

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._stopped = loop.create_future()
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        elif self._loop is not loop:
            raise RuntimeError(f"{self._name} is used from a second event loop")
        return loop

    def _run(self) -> None:
        """The writer thread."""
        loop = self._loop
        assert loop is not None
        self._sync_due = time.monotonic() + self._sync_interval_s
        while True:
            with self._cond:
                if not self._queue and not self._closing:
                    self._cond.wait(self._until_sync_s())
                items, self._queue, self._queued_bytes = self._queue, [], 0
                waiters, self._space_waiters = self._space_waiters, []
                closing = self._closing
            if waiters:
                _call_on(loop, _wake_all, waiters)
            if items:
                self.groups_written += 1
                self.requests_written += len(items)
                try:
                    results = self._write_group(items)
                except BaseException as e:  # the writer itself broke: nobody gets an answer
                    results = [e] * len(items)
                _call_on(loop, self._resolve, items, results)
            elif closing:
                _call_on(loop, _wake_all, [self._stopped])
                return
            self._sync_if_due()

    def _until_sync_s(self) -> float | None:
        if self._interval_sync is None:
            return None
        return max(0.0, self._sync_due - time.monotonic())

    def _sync_if_due(self) -> None:
        if self._interval_sync is None or time.monotonic() < self._sync_due:
            return
        self._sync_due = time.monotonic() + self._sync_interval_s
        try:
            self._interval_sync()
        except Exception as e:  # the log marked itself failed: the next call raises
            log.error("%s: interval fsync failed: %s", self._name, e)

    def _resolve(self, items: list[Pending], results: list[Result]) -> None:
        """On the loop: hand every result of one group to its appender."""
        for item, result in zip(items, results, strict=True):
            future = item.future
            assert future is not None
            if future.done():  # the appender was cancelled; its events may still be written
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        self._on_written()

    async def aclose(self) -> None:
        """Write what is queued, then stop the thread."""
        self.request_close()
        if self._stopped is not None:
            await self._stopped

    def request_close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()

    def join(self) -> None:
        """Blocking close for callers outside the loop (the queue must be empty)."""
        self.request_close()
        if self._thread is not None:
            self._thread.join()


def call_on_loop(loop: asyncio.AbstractEventLoop | None, callback: Callable[[], None]) -> None:
    """Run ``callback`` on ``loop``'s thread: now if this is it (or there is no loop yet).

    A closed loop has nobody waiting on it: the callback is dropped.
    """
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is None or running is loop:
        callback()
    elif not loop.is_closed():
        _call_on(loop, callback)


def _call_on(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: object) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for the answer
        loop.call_soon_threadsafe(callback, *args)


def _wake_all(waiters: list[asyncio.Future[None]] | list[asyncio.Future[None] | None]) -> None:
    for waiter in waiters:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
