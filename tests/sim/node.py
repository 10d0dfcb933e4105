"""One simulated node: the production ``NodeCore`` with simulated IO around it.

The node's decisions are all ``walrep.node.core.NodeCore``'s, exactly as in production;
this module only carries out its effects in the simulated world (``world.py``, ``disk.py``)
and feeds the results back, as ``walrep.node.runtime`` does with real sockets, files and
databases: one FIFO queue of effects, results as new inputs, never a decision of its own.

Everything a node does happens in a scheduler event; everything it schedules carries its
incarnation, so a crash silently voids what the dead process had pending, and a stalled
process (``paused_until_ms``) runs it late. What survives a crash is the ``SimDisk``
(the durable part of the log, and maybe more) and the simulator's ghost record of the
highest offset the node ever knew committed, used by the invariants.

The client workload runs on whichever node is ACTIVE: a batch of events every 5-60 ms,
through ``NodeCore.submit`` like a publisher's append; an event counts as acknowledged
only when the core emits ``Acked`` for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tests.sim.disk import SimDisk
from tests.sim.engine import APPS, DIGEST_INTERVAL
from tests.sim.settings import CLIENT_BATCHES_MAX, GROUP, WALL_CLOCK_BASE_MS, node_settings
from tests.sim.world import run_now
from walrep.engine.canonical import FORMAT_VERSION, digest_of
from walrep.engine.core import DigestPoint, Engine
from walrep.engine.types import SnapshotMeta
from walrep.errors import SnapshotError, WalrepError
from walrep.log.frame import Event
from walrep.log.types import AppendResult
from walrep.node import effects as fx
from walrep.node.apply import apply_committed
from walrep.node.core import NodeCore
from walrep.node.queue import EffectQueue
from walrep.node.restore import log_epoch_before, raised_floor, refusal_for
from walrep.node.retention import retention_floor
from walrep.node.role import Role
from walrep.node.stores import run_store_op

if TYPE_CHECKING:
    from tests.sim.cluster import Simulation

_FAR = 2**61
RESTORE_TIMEOUT_MS = 5000  # a cold standby's snapshot read at promotion
STALE_TICKS_MAX = 3


@dataclass(frozen=True, slots=True)
class ClientBatch:
    events: list[Event]
    epoch_seen: int  # the epoch the node was active under when it submitted


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
        self.settings = node_settings(name, sim.settings)
        self.disk = SimDisk(self.settings.log)
        self.known_committed = 0  # ghost: highest offset this node ever knew committed
        self.diverged = False  # ghost: lost a forced takeover; prefixes differ until rebuilt
        self.lost_data = False  # ghost: a disk fault took durable events; until caught up
        self.durable_at_crash = 0
        self.incarnation = 0
        self.up = False
        self.fsync_slow_until_ms = 0
        self.paused_until_ms = 0
        self.boot()

    # --- life cycle ---------------------------------------------------------------------

    def boot(self) -> None:
        self.incarnation += 1
        self.up = True
        self.log = self.disk.log
        self.engine = self._restore_engine()
        self.loaded: dict[int, Engine] = {}  # cold promotions: loaded, not installed yet
        self.core = NodeCore(
            self.settings,
            self.log,
            now_ms=self.local_ms(),
            nonce=lambda: self.rng.randbytes(16),
            applied=self.engine.applied,
        )
        self.effects = EffectQueue(self._carry_out, lambda: self.up)
        self.to_net: dict[int, int] = {}  # core connection id -> network connection id
        self.from_net: dict[int, int] = {}
        self.requests: dict[int, ClientBatch] = {}
        self.next_request = 0
        self.syncing = False
        self.answers_at_ms = 0  # when the last append's answer is delivered
        self.wake_ms = _FAR
        self.stale_ticks = 0  # ticks in a row after which the wake-up was not in the future
        self.feed(self.core.start(self.local_ms()))

    def _restore_engine(self) -> Engine:
        """The newest snapshot this node can use (at or below what it holds as committed,
        at or above its log start), verified; else a replay from 0."""
        log = self.log
        found = self.sim.snapshots.newest(self.usable_snapshot)
        if found is not None:
            meta, state = found
            assert digest_of(state) == meta.digest, "the store verifies what it returns"
            self.sim.count("engine_restored_from_snapshot")
            raised = raised_floor(meta, log.replica_state)  # as EngineHost.open does
            if raised != log.replica_state:
                log.save_replica_state(raised)
            return Engine.restore(APPS, state, digest_interval=DIGEST_INTERVAL)
        if log.log_start > 0 and self.lost_data:
            # A disk fault took the log after the last snapshot it could use (seed 300164):
            # the engine cannot start (the node fences, naming it) until an operator
            # rebuilds the node; bootstrapping a node from a snapshot is not built yet.
            self.sim.count("engine_unrecoverable_after_disk_fault")
        elif log.log_start > 0:
            self.sim.no_state_source(self)
        return Engine(APPS, digest_interval=DIGEST_INTERVAL)

    def usable_snapshot(self, meta: SnapshotMeta) -> bool:
        return refusal_for(meta, self.log) is None

    def crash(self) -> None:
        for cid in list(self.from_net):
            self.net.cut(cid, (self.peer,) if self.rng.random() < 0.7 else ())
        self.incarnation += 1  # everything the process had scheduled dies with it
        self.up = False
        self.durable_at_crash = self.log.durable_end  # a crash keeps what is durable
        self.paused_until_ms = 0
        lost, torn = self.disk.crash(self.rng)
        self.sim.note(f"{self.name} crashed: {lost} unsynced frames lost, torn tail {torn} B")

    def restart(self) -> None:
        self.disk.recover()
        log = self.disk.log
        self.known_committed = min(self.known_committed, log.durable_end)
        if self.disk.damaged and log.durable_end < self.durable_at_crash:
            self.lost_data = True  # until it has caught up (invariants 7 and 9)
        if self.disk.damaged:  # the node legitimately forgot: it knows what its disk says
            self.known_committed = min(self.known_committed, log.replica_state.committed_floor)
            self.disk.damaged = False
            if log.log_end == 0:
                self.diverged = False  # what it held is gone: nothing left to disagree about
        self.sim.note(
            f"{self.name} restarted: log [{log.log_start}, {log.log_end}), epoch "
            f"{log.last_epoch}, floor {log.replica_state.committed_floor}"
        )
        self.boot()

    @property
    def role(self) -> Role:
        return self.core.role

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
        return self.up and self.core.holds_lease_at(self.local_ms())

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

    def _tick(self) -> None:
        if self.sched.now_ms < self.wake_ms:
            return  # superseded by an earlier wake-up
        self.wake_ms = _FAR
        now = self.local_ms()
        core = self.core
        self.feed(core.tick(now))
        # The process's tick loop sleeps until next_wakeup_ms() and ticks again at once
        # when that is not in the future. One such immediate tick is by design (a fenced
        # leader demotes first, then acquires at its next tick); a core that keeps asking
        # for a wake-up it has already had would spin the event loop (seen: 3 s after
        # every switchover, the stopped lease machine's old due time).
        if not (self.up and self.core is core):
            return
        self.stale_ticks = self.stale_ticks + 1 if core.next_wakeup_ms() <= now else 0
        if self.stale_ticks > STALE_TICKS_MAX:
            raise AssertionError(
                f"{self.name}: {self.stale_ticks} ticks in a row left the core's wake-up at "
                f"{core.next_wakeup_ms()}, not after {now} (role {core.role.value}): the "
                "process's tick loop would spin"
            )

    def _arm(self) -> None:
        """Wake the core when it has something to do (at least 1 ms ahead)."""
        due = max(self.sched.now_ms + 1, self.sim_ms(self.core.next_wakeup_ms()))
        if due < self.wake_ms:
            self.wake_ms = due
            self.after(due - self.sched.now_ms, "tick", self._tick)

    # --- the effect queue (walrep.node.runtime.Node._feed, in the simulated world) ------------

    def feed(self, effects: list[fx.Effect]) -> None:
        if not self.effects.feed(effects):
            return  # inside a drain: the outer call finishes the queue
        if self.up:
            self._arm()
            self.net.resume(self.name)
            if self.core.term is not None:
                epoch, committed = self.core.term.epoch, self.core.committed
                seen = self.sim.committed_in_epoch
                seen[epoch] = max(seen.get(epoch, 0), committed)

    def _input(self, call: Callable[[int], list[fx.Effect]]) -> None:
        self.feed(call(self.local_ms()))

    def _carry_out(self, effect: fx.Effect) -> None:
        core, log, now = self.core, self.log, self.local_ms()
        if isinstance(effect, fx.Send):
            cid = self.to_net.get(effect.cid)
            if cid is not None:
                self.sim.trace_bytes(self.name, "sends", effect.data)
                self.net.send(cid, self.name, effect.data)
        elif isinstance(effect, fx.Close):
            cid = self.to_net.pop(effect.cid, None)
            if cid is not None:
                self.from_net.pop(cid, None)
                self.net.close(cid, self.name)
        elif isinstance(effect, fx.Connect):
            cid = self.net.connect(self.name, effect.host)
            self.to_net[effect.cid], self.from_net[cid] = cid, effect.cid
        elif isinstance(effect, fx.AppendEvents):
            batch = self.requests[effect.request]
            self.sim.on_write(self, effect.epoch)
            outcome = self._attempt(
                lambda: run_now(
                    log.append(
                        batch.events,
                        epoch=effect.epoch,
                        ingest_time_ms=WALL_CLOCK_BASE_MS + now,
                    )
                )
            )
            request = effect.request
            self._answer(lambda t: self.core.appended_events(request, outcome, t))
        elif isinstance(effect, fx.AppendFrames):
            outcome = self._attempt(lambda: run_now(log.append_frames(effect.frames)))
            token = effect.token
            self._answer(lambda t: self.core.appended_frames(token, outcome, t))
        elif isinstance(effect, fx.ReadFrames):
            self.effects.push(core.frames_read(effect.token, self.disk.read(effect), now))
        elif isinstance(effect, fx.Sync):
            self._sync()
        elif isinstance(effect, fx.Truncate):
            self.sim.on_truncate(self, effect.to_offset)
            error: WalrepError | None = None
            try:
                self.disk.truncate_after(effect.to_offset)
            except WalrepError as e:
                error = e
            self.effects.push(core.truncated(error, now))
        elif isinstance(effect, fx.Apply):
            done = apply_committed(self.engine, log, effect.from_offset, effect.to_offset)
            if isinstance(done, WalrepError):
                self.effects.push(core.applied_to(effect.from_offset, done, now))
                return
            for out in done[1]:
                if isinstance(out, DigestPoint):
                    self.sim.on_digest(self, out)
            self.effects.push(core.applied_to(done[0], None, now))
        elif isinstance(effect, fx.RestoreEngine):
            self._restore_for_promotion(effect.epoch)
        elif isinstance(effect, fx.AdoptEngine):
            self.engine = self.loaded.pop(effect.epoch)
            self.loaded.clear()
            self.sim.count("engine_restored_at_promotion")
        elif isinstance(effect, fx.PersistState):
            log.save_replica_state(effect.state)
        elif isinstance(effect, fx.StoreCall):
            self._store_call(effect)
        elif isinstance(effect, fx.Acked):
            batch = self.requests.pop(effect.request)
            self.sim.on_acked(self, effect.result, batch.events)
        elif isinstance(effect, fx.Failed):
            self.requests.pop(effect.request, None)
            self.sim.count(f"client_failed_{type(effect.error).__name__}")
        elif isinstance(effect, fx.RoleChanged):
            self.sim.on_role(self, effect)
            if effect.new == Role.ACTIVE.value:
                self.after(self.rng.randint(0, 30), "append", self._workload, effect.epoch)
                self.after(self.rng.randint(50, 800), "snapshot", self._snapshot, effect.epoch)
        elif isinstance(effect, fx.Fatal):
            self.sim.on_fatal(self, effect.error)
        elif isinstance(effect, fx.StepDone | fx.Notice):
            self.sim.trace(f"{self.name}: {effect}")

    def _answer(self, report: Callable[[int], list[fx.Effect]]) -> None:
        """The log's answer to an append comes back later, in order (the writer thread
        resolves it after the write): its durable progress, announced by a sync, and the
        standby's ack may come first."""
        delay = self.rng.choice([0, 0, 1, 2, 5]) if self.rng.random() < 0.8 else 30
        self.answers_at_ms = max(self.answers_at_ms, self.sched.now_ms + delay)
        self.after(self.answers_at_ms - self.sched.now_ms, "appended", self._input, report)

    def _attempt(self, call: Callable[[], AppendResult]) -> AppendResult | WalrepError:
        try:
            return call()
        except WalrepError as e:
            return e

    # --- effects that take time ----------------------------------------------------------------

    def _sync(self) -> None:
        """An fsync: it covers what was written when it started, and takes 1-5 ms (slow:
        20-400 ms). A failing disk (``disk.fail_next_sync``) reports an error instead."""
        assert not self.syncing, "the core asks for one sync at a time"
        self.syncing = True
        self.disk.sync_begin()
        slow = self.sched.now_ms < self.fsync_slow_until_ms
        delay = self.rng.randint(20, 400) if slow else self.rng.randint(1, 5)
        self.after(delay, "fsync", self._synced)

    def _synced(self) -> None:
        self.syncing = False
        error = self.disk.sync_end()
        self._input(lambda now: self.core.synced(error, now))

    def _restore_for_promotion(self, epoch: int) -> None:
        """A cold standby's promotion: the newest usable snapshot, read through the store's
        link (slow or failing as the database is); loaded only if ahead of the engine,
        installed only at ``AdoptEngine``, as ``EngineHost.load_newer`` does."""

        def execute() -> tuple[SnapshotMeta, bytes] | None:
            return self.sim.snapshots.newest(self.usable_snapshot)

        def done(found: tuple[SnapshotMeta, bytes] | None) -> None:
            error: WalrepError | None = None
            applied: int | None = None
            if found is None:  # none usable, or the call failed: the engine stays
                error = SnapshotError("no usable snapshot answered")
            elif found[0].offset > self.engine.applied:
                engine = Engine.restore(APPS, found[1], digest_interval=DIGEST_INTERVAL)
                self.loaded[epoch] = engine
                applied = engine.applied
            self._input(lambda now: self.core.engine_restored(epoch, applied, error, now))

        self.sim.store_link.call(self.name, execute, self.guard(done), RESTORE_TIMEOUT_MS)

    def _store_call(self, effect: fx.StoreCall) -> None:
        store, name = self.sim.store, self.name

        def execute() -> object:
            return run_now(run_store_op(store, GROUP, name, effect.op))

        def done(result: object) -> None:
            self._input(lambda now: self.core.store_done(effect.call, result, now))

        self.sim.store_link.call(name, execute, self.guard(done), effect.timeout_ms)

    # --- the client workload (active) ------------------------------------------------------------

    def _workload(self, epoch: int) -> None:
        if self.role is not Role.ACTIVE or self.core.epoch != epoch:
            return  # that term ended
        if self.sim.workload_on and len(self.requests) < CLIENT_BATCHES_MAX:
            self.next_request += 1
            events = self.sim.new_batch(self.name, epoch)
            self.requests[self.next_request] = ClientBatch(events, epoch)
            self._input(lambda now: self.core.submit(self.next_request, len(events), now))
        self.after(self.rng.randint(5, 60), "append", self._workload, epoch)

    def _snapshot(self, epoch: int) -> None:
        """Capture the engine (cheap, copy-on-write), encode it later while apply goes on
        (as production does in a thread), save it fenced by the term's epoch."""
        if self.role is not Role.ACTIVE or self.core.epoch != epoch:
            return
        capture = self.engine.begin_capture()
        log_epoch = log_epoch_before(capture.applied, self.log.epochs.epoch_at)

        def save() -> None:
            state = capture.encode()
            meta = SnapshotMeta(
                capture.applied,
                epoch,
                digest_of(state),
                capture.app_versions,
                FORMAT_VERSION,
                WALL_CLOCK_BASE_MS + self.local_ms(),
                log_epoch,
            )
            if self.sim.snapshots.save(meta, state):
                self.sim.count("snapshots_saved")

        self.after(self.rng.choice([0, 1, 5, 30]), "snapshot encode", save)
        self.after(self.rng.randint(200, 1500), "snapshot", self._snapshot, epoch)

    # --- operator actions --------------------------------------------------------------------

    def release(self, resume_after_ms: int) -> None:
        self._input(lambda now: self.core.release(now, resume_after_ms))

    def force_takeover(self) -> None:
        self._input(self.core.force_takeover)

    def retention(self) -> int | None:
        """Delete the log as production's rule allows (``retention_floor``): below the
        newest snapshot under the standby's acks and the persisted committed floor."""
        term = self.core.term
        if term is None or term.link is None:
            return None
        keep = retention_floor(
            committed_floor=self.log.replica_state.committed_floor,
            standby_acked=term.shipper.acked,
            snapshot_offsets=[
                m.offset for m, _ in self.sim.snapshots.saved if self.usable_snapshot(m)
            ],
        )
        before = self.log.log_start
        if self.log.delete_before(keep) == before:
            return None
        self._input(self.core.log_start_moved)
        return self.log.log_start

    # --- network callbacks --------------------------------------------------------------------

    def on_accept(self, net_cid: int) -> bool:
        if not self.up:
            return False  # nobody listens on a dead node's port
        cid = self.core.new_id()
        self.to_net[cid], self.from_net[net_cid] = net_cid, cid
        self._input(lambda now: self.core.accepted(cid, now))
        return True

    def on_connected(self, net_cid: int, ok: bool) -> None:
        cid = self.from_net.get(net_cid) if self.up else None
        if cid is None:
            if ok:
                self.net.close(net_cid, self.name)  # the core gave up on it
            return
        if not ok:
            del self.from_net[net_cid], self.to_net[cid]
        self._input(lambda now: self.core.connect_done(cid, ok, now))

    def wants_data(self, net_cid: int) -> bool:
        cid = self.from_net.get(net_cid)
        return cid is None or self.core.wants_data(cid)

    def on_data(self, net_cid: int, data: bytes) -> None:
        cid = self.from_net.get(net_cid) if self.up else None
        if cid is None:
            self.sim.count("stale_deliveries_ignored")
            return
        self.sim.trace_bytes(self.name, "got", data)
        self._input(lambda now: self.core.received(cid, data, now))

    def on_closed(self, net_cid: int, reason: str) -> None:
        cid = self.from_net.pop(net_cid, None) if self.up else None
        if cid is None:
            return
        del self.to_net[cid]
        self._input(lambda now: self.core.closed(cid, reason, now))
