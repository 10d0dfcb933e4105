"""One simulated node: the lease shell, the client workload, fsync and network routing.

Everything a node does happens in a scheduler event; everything it schedules carries
its incarnation, so a crash silently voids what the dead process had pending, and a
stalled process (``paused_until_ms``) runs it late. What survives a crash is only the
``SimLog`` (and the simulator's ghost record of the highest offset the node ever knew
committed, used by the invariants).

The real ``LeaseMachine`` is fed as ``Coordinator`` feeds it: ticks at its next
wake-up on the node's own clock (skewed and drifting), and the results of store calls
that may fail or time out. ``Promoted``: stop receiving (close every receiver
connection), then start an ``ActiveShell`` (a ``Shipper`` under that epoch) and the
client workload. ``Fence``: stop appending and acknowledging at once and drop the
shipper. A client batch is acknowledged only when ``Committed`` covers it and the node
still holds its lease (``Coordinator.holds_lease``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tests.sim.active import ActiveShell
from tests.sim.disk import SimLog
from tests.sim.passive import PassiveShell
from tests.sim.settings import (
    CALL_TIMEOUT_MS,
    CLIENT_BATCHES_MAX,
    GROUP,
    LEASE,
    SHELL_TICK_MS,
    WALL_CLOCK_BASE_MS,
)
from tests.sim.world import run_now
from walrep.log.frame import Event
from walrep.replica.lease import (
    Action,
    Fence,
    LeaseMachine,
    Phase,
    Promoted,
    Release,
    Renew,
    TryAcquire,
)

if TYPE_CHECKING:
    from tests.sim.cluster import Simulation

_FAR = 2**61


@dataclass(frozen=True, slots=True)
class ClientBatch:
    base: int
    end: int
    events: list[Event]


class Node:
    def __init__(self, sim: Simulation, name: str, peer: str, skew_ms: int, drift_ppm: int) -> None:
        self.sim = sim
        self.sched = sim.sched
        self.net = sim.net
        self.rng = sim.rng
        self.name = name
        self.peer = peer
        self.skew_ms = skew_ms
        self.drift_ppm = drift_ppm
        self.log = SimLog()
        self.known_committed = 0  # ghost: highest offset this node ever knew committed
        self.incarnation = 0
        self.up = False
        self.fsync_slow_until_ms = 0
        self.paused_until_ms = 0
        self.boot()

    # --- life cycle ---------------------------------------------------------------------

    def boot(self) -> None:
        self.incarnation += 1
        self.up = True
        self.machine = LeaseMachine(self.name, LEASE)
        self.lease_wake_ms = _FAR
        self.active: ActiveShell | None = None  # while leader
        self.passive = PassiveShell(self)
        self.requests: deque[ClientBatch] = deque()
        self.after(0, "tick", self._shell_tick)
        self._arm_lease()

    def crash(self) -> None:
        for cid in self.open_cids():
            self.net.cut(cid, (self.peer,) if self.rng.random() < 0.7 else ())
        self.incarnation += 1  # everything the process had scheduled dies with it
        self.up = False
        self.paused_until_ms = 0
        self.active = None
        lost, torn = self.log.crash(self.rng)
        self.sim.note(f"{self.name} crashed: {lost} unsynced frames lost, torn tail {torn} B")

    def restart(self) -> None:
        self.log.recover()
        self.sim.note(
            f"{self.name} restarted: log end {self.log.log_end}, epoch {self.log.last_epoch}"
        )
        self.boot()

    @property
    def leader(self) -> bool:
        return self.active is not None

    def open_cids(self) -> list[int]:
        return (self.active.cids() if self.active else []) + list(self.passive.conns)

    # --- time -----------------------------------------------------------------------------

    def local_ms(self) -> int:
        """The node's monotonic clock: offset by ``skew_ms``, running ``drift_ppm`` fast."""
        now = self.sched.now_ms
        return self.skew_ms + now + now * self.drift_ppm // 1_000_000

    def sim_ms(self, local_ms: int) -> int:
        """The first simulated time at which the local clock reads ``local_ms`` or more."""
        elapsed = local_ms - self.skew_ms
        return -(-elapsed * 1_000_000 // (1_000_000 + self.drift_ppm))

    def holds_lease(self) -> bool:
        """``Coordinator.holds_lease``: leader and before the own-clock deadline."""
        m = self.machine
        return self.up and m.phase is Phase.LEADER and self.local_ms() < m.valid_until_ms

    def after(self, delay_ms: int, kind: str, fn: Callable[..., None], *args: Any) -> None:
        """Schedule ``fn`` in this incarnation of the node."""
        self.sched.after(delay_ms, f"{self.name}.{kind}", self._run, self.incarnation, fn, args)

    def _run(self, incarnation: int, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        if incarnation != self.incarnation or not self.up:
            return
        if self.paused_until_ms > self.sched.now_ms:  # stalled: runs when it resumes
            self.sched.at(
                self.paused_until_ms, f"{self.name}.resumed", self._run, incarnation, fn, args
            )
            return
        fn(*args)

    def guard(self, fn: Callable[[Any], None]) -> Callable[[Any], None]:
        """A callback for a store answer: void after a crash, late after a stall."""
        incarnation = self.incarnation
        return lambda result: self._run(incarnation, fn, (result,))

    def _shell_tick(self) -> None:
        if self.active is not None:
            self.active.tick()
            self.ack_clients()
        self.passive.tick()
        self.after(SHELL_TICK_MS, "tick", self._shell_tick)

    # --- lease (Coordinator) ------------------------------------------------------------------

    def _arm_lease(self) -> None:
        """Wake the machine when it has something to do (``Coordinator.run``: at least
        1 ms ahead, at most 1 s; not while stopped by a release)."""
        if self.machine.phase is Phase.STOPPED:
            return
        due_local = min(self.machine.next_wakeup_ms(), self.local_ms() + 1000)
        due = max(self.sched.now_ms + 1, self.sim_ms(due_local))
        if due < self.lease_wake_ms:
            self.lease_wake_ms = due
            self.after(due - self.sched.now_ms, "lease_tick", self._lease_tick)

    def _lease_tick(self) -> None:
        if self.sched.now_ms < self.lease_wake_ms:
            return  # superseded by an earlier wake-up
        self.lease_wake_ms = _FAR
        self.lease(self.machine.tick(self.local_ms()))

    def lease(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, (TryAcquire, Renew, Release)):
                self._store_call(action)
            elif isinstance(action, Promoted):
                self._promote(action.epoch)
            elif isinstance(action, Fence):
                self._fence(action)
        self._arm_lease()

    def _store_call(self, action: TryAcquire | Renew | Release) -> None:
        sent, store, name, ttl = self.local_ms(), self.sim.store, self.name, LEASE.lease_ttl_ms

        def execute() -> Any:
            if isinstance(action, TryAcquire):
                expected, force = action.expected_epoch, action.force
                return run_now(store.try_acquire(GROUP, name, expected, ttl, force=force))
            if isinstance(action, Renew):
                return run_now(store.renew(GROUP, name, action.epoch, ttl))
            return run_now(store.release(GROUP, name, action.epoch))

        def done(result: Any) -> None:
            if isinstance(action, TryAcquire):
                won, seen = result if result is not None else (False, None)
                self.lease(self.machine.acquire_done(sent, self.local_ms(), won, seen))
            elif isinstance(action, Renew):
                self.lease(self.machine.renew_done(sent, self.local_ms(), result))

        self.sim.store_link.call(name, execute, self.guard(done), CALL_TIMEOUT_MS)

    def switchover(self, resume_after_ms: int) -> None:
        """Graceful hand-over: release the lease, follow again a little later."""
        self.lease(self.machine.release())
        self.after(resume_after_ms, "resume", self._resume)

    def _resume(self) -> None:
        self.machine.resume()
        self._arm_lease()

    def _promote(self, epoch: int) -> None:
        self.sim.on_promoted(self, epoch)
        self.passive.close_all("promoted")  # stop receiving first
        self.active = ActiveShell(self, epoch)
        self.request_sync()
        self.active.connect()
        self.after(self.rng.randint(0, 30), "append", self._workload, self.active)

    def _fence(self, action: Fence) -> None:
        self.sim.note(f"{self.name} fenced under epoch {action.epoch}: {action.reason}")
        if self.active is None:
            return
        active, self.active = self.active, None
        active.stop()
        self.sim.count("client_batches_failed", len(self.requests))
        self.requests.clear()

    # --- the client workload (leader) --------------------------------------------------------

    def _workload(self, active: ActiveShell) -> None:
        if active is not self.active:
            return  # that term ended
        if self.sim.workload_on and self.holds_lease() and len(self.requests) < CLIENT_BATCHES_MAX:
            epoch = active.shipper.epoch
            events = self.sim.new_batch(self.name, epoch)
            base = self.log.log_end
            self.sim.on_write(self, epoch)
            end = self.log.append_events(events, epoch, WALL_CLOCK_BASE_MS + self.local_ms())
            self.requests.append(ClientBatch(base, end, events))
            active.ship(active.shipper.log_grew(end))
            self.request_sync()
        self.after(self.rng.randint(5, 60), "append", self._workload, active)

    def ack_clients(self) -> None:
        if self.active is None or not self.requests or not self.holds_lease():
            return
        committed = self.active.shipper.committed
        while self.requests and self.requests[0].end <= committed:
            batch = self.requests.popleft()
            for i, event in enumerate(batch.events):
                self.sim.acknowledge(self, batch.base + i, event)

    # --- disk -----------------------------------------------------------------------------------

    def request_sync(self) -> None:
        if self.log.sync_start():
            slow = self.sched.now_ms < self.fsync_slow_until_ms
            self.after(
                self.rng.randint(20, 400) if slow else self.rng.randint(1, 5), "fsync", self._synced
            )

    def _synced(self) -> None:
        self.log.sync_done()
        if self.active is not None:
            self.active.ship(self.active.shipper.local_durable_to(self.log.durable_end))
            self.ack_clients()
        self.passive.synced()
        if self.log.durable_frames < len(self.log.frames):
            self.request_sync()

    # --- network callbacks ----------------------------------------------------------------------

    def on_accept(self, cid: int) -> bool:
        if not self.up or self.active is not None:
            return False  # a leader does not receive; a dead node does not answer
        self.passive.open_connection(cid)
        return True

    def on_connected(self, cid: int, ok: bool) -> None:
        if self.up and self.active is not None:
            self.active.on_connected(cid, ok)
        elif ok:
            self.net.close(cid, self.name)

    def on_data(self, cid: int, data: bytes) -> None:
        if not self.up:
            return
        if self.active is not None and cid == self.active.cid:
            self.active.on_data(data)
        elif cid in self.passive.conns:
            self.passive.on_data(self.passive.conns[cid], data)
        else:
            self.sim.count("stale_deliveries_ignored")

    def on_closed(self, cid: int, reason: str) -> None:
        if not self.up:
            return
        if self.active is not None and cid == self.active.cid:
            self.active.lost(reason)
        elif cid in self.passive.conns:
            self.passive.close(self.passive.conns[cid], reason)
