"""Durable progress: telling listeners that ``durable_end`` advanced, and ``wait_durable``.

Shared by ``Wal`` and ``MemoryLog``. Every method runs on the thread of the log's event
loop: ``Wal`` hands calls from its writer thread over with ``call_soon_threadsafe``;
``MemoryLog`` calls directly (its caller's thread is its "loop").

Ordering contract: a listener is called with each new ``durable_end`` after it advanced
(never a value lower than one it was given since the last truncation, never one that is
not durable yet), before any ``wait_durable`` it satisfies returns. A truncation lowers
``durable_end`` silently (the caller truncated, it knows); the next advance is announced.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

DurableListener = Callable[[int], None]


class DurableNotifier:
    def __init__(self, durable_end: Callable[[], int]) -> None:
        self._durable_end = durable_end
        self._announced = durable_end()
        self._listeners: list[DurableListener] = []
        # (offset, tie-breaker, future) of every waiting ``wait_durable``, lowest first.
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def add_listener(self, callback: DurableListener) -> None:
        self._listeners.append(callback)

    def deliver(self) -> None:
        """Announce an advance since the last call; wake the waiters it satisfies."""
        end = self._durable_end()
        if end > self._announced:
            self._announced = end
            for callback in tuple(self._listeners):
                callback(end)
        while self._waiters and self._waiters[0][0] <= end:
            _, _, waiter = heapq.heappop(self._waiters)
            if not waiter.done():
                waiter.set_result(None)

    def lowered(self, durable_end: int) -> None:
        """A truncation cut ``durable_end`` back: announce from there on."""
        self._announced = min(self._announced, durable_end)

    def fail(self, error: Callable[[], BaseException]) -> None:
        """The log failed or was closed: every waiter raises a fresh ``error()``."""
        waiters, self._waiters = self._waiters, []
        for _, _, waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error())

    async def wait(self, offset: int, check_usable: Callable[[], None]) -> None:
        """Return once ``durable_end >= offset``; ``check_usable`` raises for a dead log."""
        while self._durable_end() < offset:
            check_usable()
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiters, (offset, next(self._order), waiter))
            await waiter
