"""The asyncio shell around ``LeaseMachine``: store calls, timeouts, heartbeats, callbacks.

It feeds the machine with ticks from a monotonic clock and with the results of store
calls, and carries out the actions it returns. Store calls run as tasks, so the
machine keeps ticking (and fences at its deadline) while a call hangs; every call has
a timeout (``call_timeout_ms``), and any error is "no answer" to the machine.

Callbacks ``on_promoted(epoch)`` and ``on_fenced(epoch, reason)`` are called from the
loop, in the order the machine decided; they must not block. ``holds_lease()`` is the
check the node makes right before acknowledging anything under its epoch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from walrep.errors import CoordinationError, WalrepError
from walrep.replica.lease import (
    Action,
    Fence,
    LeaseMachine,
    LeaseTiming,
    Phase,
    Promoted,
    Release,
    Renew,
    TryAcquire,
)
from walrep.replica.store import CoordinationStore, NodeInfo, NodeRow

log = logging.getLogger(__name__)


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class Coordinator:
    def __init__(
        self,
        store: CoordinationStore,
        group: str,
        node_id: str,
        timing: LeaseTiming,
        *,
        call_timeout_ms: int | None = None,
        clock_ms: Callable[[], int] = monotonic_ms,
        on_promoted: Callable[[int], None] = lambda epoch: None,
        on_fenced: Callable[[int, str], None] = lambda epoch, reason: None,
        node_info: Callable[[], NodeInfo] | None = None,
        auto_acquire: bool = True,
    ) -> None:
        self.store = store
        self.group = group
        self.node_id = node_id
        self.timing = timing
        # A call may not outlive the leader's own lease: the deadline must stay meaningful.
        self.call_timeout_ms = call_timeout_ms or timing.valid_for_ms
        self.machine = LeaseMachine(node_id, timing, auto_acquire=auto_acquire)
        self._clock_ms = clock_ms
        self._on_promoted = on_promoted
        self._on_fenced = on_fenced
        self._node_info = node_info
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    # --- state for the node ---------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self.machine.epoch

    def holds_lease(self) -> bool:
        """True only while leader and before the own-clock deadline of the lease."""
        m = self.machine
        return m.phase is Phase.LEADER and self._clock_ms() < m.valid_until_ms

    # --- running -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Tick until ``stop``; publish this node's row every heartbeat interval.

        May be called again after ``stop`` (a node that stepped down follows again).
        """
        self._stopping = False
        self.machine.resume()
        heartbeat = asyncio.create_task(self._heartbeats()) if self._node_info else None
        try:
            while not self._stopping:
                self._carry_out(self.machine.tick(self._clock_ms()))
                delay_ms = max(1, min(self.machine.next_wakeup_ms() - self._clock_ms(), 1000))
                self._wake.clear()
                try:
                    async with asyncio.timeout(delay_ms / 1000):
                        await self._wake.wait()
                except TimeoutError:
                    pass
        finally:
            if heartbeat is not None:
                heartbeat.cancel()

    async def stop(self, *, release: bool = True) -> None:
        """Stop following; as leader, fence and (if ``release``) expire the lease now."""
        actions = self.machine.release()
        self._stopping = True
        self._wake.set()
        for action in actions:
            if isinstance(action, Release):
                if release:
                    await self._release(action.epoch)
            else:
                self._carry_out([action])
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def force_takeover(self) -> None:
        """Acquire at the next tick even if not in-sync or under maintenance (recorded)."""
        self.machine.request_forced_acquire()
        self._wake.set()

    # --- actions -----------------------------------------------------------------------------

    def _carry_out(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, TryAcquire):
                self._spawn(self._acquire(action))
            elif isinstance(action, Renew):
                self._spawn(self._renew(action))
            elif isinstance(action, Release):
                self._spawn(self._release(action.epoch))
            elif isinstance(action, Promoted):
                log.info(
                    "node %s holds the lease of group %s under epoch %d",
                    self.node_id,
                    self.group,
                    action.epoch,
                )
                self._on_promoted(action.epoch)
            elif isinstance(action, Fence):
                level = logging.INFO if action.reason == "released" else logging.WARNING
                log.log(
                    level,
                    "node %s fenced under epoch %d: %s",
                    self.node_id,
                    action.epoch,
                    action.reason,
                )
                self._on_fenced(action.epoch, action.reason)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _acquire(self, action: TryAcquire) -> None:
        sent = self._clock_ms()
        try:
            async with asyncio.timeout(self.call_timeout_ms / 1000):
                won, seen = await self.store.try_acquire(
                    self.group,
                    self.node_id,
                    action.expected_epoch,
                    self.timing.lease_ttl_ms,
                    force=action.force,
                )
            result = self.machine.acquire_done(sent, self._clock_ms(), won, seen)
        except (WalrepError, TimeoutError) as e:
            log.warning("node %s: acquire failed: %s", self.node_id, e)
            result = self.machine.acquire_done(sent, self._clock_ms(), False, None)
        self._carry_out(result)
        self._wake.set()

    async def _renew(self, action: Renew) -> None:
        sent = self._clock_ms()
        ok: bool | None
        try:
            async with asyncio.timeout(self.call_timeout_ms / 1000):
                ok = await self.store.renew(
                    self.group, self.node_id, action.epoch, self.timing.lease_ttl_ms
                )
        except (WalrepError, TimeoutError) as e:
            log.warning("node %s: renew failed: %s", self.node_id, e)
            ok = None
        self._carry_out(self.machine.renew_done(sent, self._clock_ms(), ok))
        self._wake.set()

    async def _release(self, epoch: int) -> None:
        try:
            async with asyncio.timeout(self.call_timeout_ms / 1000):
                await self.store.release(self.group, self.node_id, epoch)
        except (WalrepError, TimeoutError) as e:  # the lease then simply expires
            log.warning(
                "node %s: release failed, the lease will expire instead: %s", self.node_id, e
            )

    # --- in-sync standby and peer discovery -----------------------------------------------------

    async def set_in_sync(self, standby: str, in_sync: bool) -> bool:
        """Record ``standby`` in or out of sync under our epoch; False (and fenced) if not leader.

        Callers acknowledge events a standby lacks only after this returned True with
        ``in_sync=False``: the record must exist before the ack.
        """
        if not self.holds_lease():
            return False
        epoch = self.machine.epoch
        try:
            async with asyncio.timeout(self.call_timeout_ms / 1000):
                ok = await self.store.set_in_sync(
                    self.group, self.node_id, epoch, standby, in_sync, self.timing.lease_ttl_ms
                )
        except (WalrepError, TimeoutError) as e:
            raise CoordinationError(
                f"recording {standby} {'in' if in_sync else 'out of'} sync failed: {e}"
            ) from e
        if not ok:
            self._carry_out(
                self.machine.lost(epoch, "in-sync record refused: the lease is no longer ours")
            )
        return ok and self.holds_lease()

    async def wait_for_passive(self, timeout_ms: int, retry_sleep_ms: int) -> NodeRow | None:
        """The peer's published row (with its event-sync address), waiting up to ``timeout_ms``."""
        deadline = self._clock_ms() + timeout_ms
        while True:
            try:
                for row in await self.store.nodes(self.group):
                    if row.info.node_id != self.node_id and row.info.event_sync_port > 0:
                        return row
            except WalrepError as e:
                log.warning("node %s: reading the peer's details failed: %s", self.node_id, e)
            if self._clock_ms() >= deadline:
                return None
            await asyncio.sleep(retry_sleep_ms / 1000)

    async def _heartbeats(self) -> None:
        assert self._node_info is not None
        while not self._stopping:
            try:
                async with asyncio.timeout(self.call_timeout_ms / 1000):
                    await self.store.publish_node(self.group, self._node_info())
            except (WalrepError, TimeoutError) as e:
                log.warning("node %s: heartbeat not recorded: %s", self.node_id, e)
            await asyncio.sleep(self.timing.heartbeat_interval_ms / 1000)
