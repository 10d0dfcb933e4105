"""The node core: every decision of a walrep node, sans-IO, driven by inputs and ticks.

``NodeCore`` owns the role machine, the lease machine, the active's term (shipper,
connection, in-sync records, admission, commit waiters, the lease gate) and the
passive's receiving side (connections, the one-writer slot, receivers), the committed
offset and the persisted replica state. Every public method is an input: it takes the
node's monotonic time ``now_ms`` and returns one ordered list of effects
(``walrep.node.effects``, whose module docstring states the ordering rules). Executors
(the asyncio process, the simulator, the transcript harness) carry effects out and feed
results back; they decide nothing.

It reads the log only through ``LogState`` (offsets, epochs, replica state) and never
writes it; it imports no asyncio, socket, time or database driver.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from walrep.errors import NotActiveError, WalrepError
from walrep.log.replica_state import ReplicaState
from walrep.log.types import AppendResult
from walrep.node.active import ActiveTerm
from walrep.node.context import LogState
from walrep.node.effects import (
    Acquire,
    AdoptEngine,
    Apply,
    Close,
    Effect,
    Failed,
    Fatal,
    Notice,
    PersistState,
    PublishNode,
    ReadNodes,
    Release,
    Renew,
    RestoreEngine,
    RoleChanged,
    SetInSync,
    StoreCall,
    StoreOp,
    Sync,
)
from walrep.node.guard import Knowledge, hold_back
from walrep.node.passive import Receiving
from walrep.node.promotion import Promotion
from walrep.node.role import (
    RECEIVES,
    TICKS_LEASE,
    Event,
    Role,
    RoleMachine,
)
from walrep.node.settings import NodeSettings
from walrep.replica import lease as lm
from walrep.replica.store import NodeInfo, NodeRow


class NodeCore:
    def __init__(
        self,
        settings: NodeSettings,
        log: LogState,
        *,
        now_ms: int,
        nonce: Callable[[], bytes],
        applied: int | None = None,
    ) -> None:
        """``applied``: the engine's position (offsets ``[0, applied)`` applied, e.g. from a
        restored snapshot), or None for a node without an engine (no ``Apply`` asked)."""
        self.settings = settings
        self.log = log
        self.metrics: Counter[str] = Counter()
        self.held_back = ""  # why the last acquire was not asked for ("": it was)
        self.now_ms = now_ms
        self._nonce = nonce
        self._ids = 0
        self._out: list[Effect] = []
        self.roles = RoleMachine()
        self.lease = lm.LeaseMachine(settings.node_id, settings.lease)
        state = log.replica_state
        self._persisted = state
        self._last_persist_ms = now_ms
        self.known_committed = min(state.committed_floor, log.durable_end)
        self.highest_epoch = max(state.highest_epoch, log.last_epoch)
        self.receiving = Receiving(self, highest_epoch=self.highest_epoch)
        self.term: ActiveTerm | None = None
        self._ending: list[ActiveTerm] = []  # ended terms with appends still in flight
        self.promotion: Promotion | None = None
        self._calls: dict[int, tuple[StoreOp, int]] = {}  # call -> (op, sent at)
        self._publishing: int | None = None
        self._next_publish_ms = now_ms
        self._sync_in_flight = False
        self._resume_at_ms: int | None = None
        self._last_tick_ms = now_ms
        # The committed offset this node published before it started (read once).
        self._published_durable: int | None = None
        self._own_row_call: int | None = None
        self.failure: WalrepError | None = None
        # The engine: offsets [0, applied) applied; one Apply in flight at a time.
        self.applied = applied
        self._apply_in_flight = False
        self._restoring: int | None = None  # the epoch of the RestoreEngine awaited

    # --- what executors and operators read ---------------------------------------------

    @property
    def role(self) -> Role:
        return self.roles.role

    @property
    def epoch(self) -> int:
        """The lease epoch while leader; otherwise the highest epoch seen."""
        return self.lease.epoch if self.lease.phase is lm.Phase.LEADER else self.highest_epoch

    @property
    def committed(self) -> int:
        return self.term.shipper.committed if self.term is not None else self.known_committed

    def wants_data(self, cid: int) -> bool:
        """False while a passive connection's buffer is full: do not read it (backpressure)."""
        if cid in self.receiving.conns:
            return self.receiving.wants_data(cid)
        return True

    @property
    def resume_at_ms(self) -> int | None:
        """After a switchover's release: when this node follows (may acquire) again."""
        return self._resume_at_ms

    def next_wakeup_ms(self) -> int:
        """When ``tick`` has something to do next, on this node's clock."""
        due = self._last_tick_ms + self.settings.tick_interval_ms
        if self.role in TICKS_LEASE:
            due = min(due, self.lease.next_wakeup_ms())
        return due

    # --- inputs: life cycle and time ------------------------------------------------------

    def start(self, now_ms: int) -> list[Effect]:
        """The executor is ready (log open and recovered, event-sync port bound)."""
        self._at(now_ms)
        self.fire(Event.STARTED, "started")
        if self.role is Role.PASSIVE:
            # Read what this node published before, then publish anew (see _lost_history).
            self._own_row_call = self.store_call(ReadNodes())
            self._lease_actions(self.lease.tick(now_ms))
        return self._take()

    def tick(self, now_ms: int) -> list[Effect]:
        self._at(now_ms)
        self._last_tick_ms = now_ms
        if self.role in (Role.STARTING, Role.FENCED, Role.STOPPED):
            return self._take()  # a stop (or a failure) always wins
        if self._resume_at_ms is not None and now_ms >= self._resume_at_ms:
            self._resume_at_ms = None
            self.lease.resume()
        if self.role in TICKS_LEASE:
            self._lease_actions(self.lease.tick(now_ms))
        self.receiving.tick()
        if self.term is not None:
            self.term.tick()
        if (
            now_ms >= self._next_publish_ms
            and self._publishing is None
            and self._published_durable is not None  # its old row is read: may overwrite
        ):
            self._publish()
        if (
            self.known_committed > self._persisted.committed_floor
            and now_ms - self._last_persist_ms >= self.settings.persist_interval_ms
        ):
            self._persist()
        return self._take()

    def stop(self, now_ms: int) -> list[Effect]:
        """Stop on purpose: fail waiting appends, close connections, release the lease."""
        self._at(now_ms)
        if self.role is Role.STOPPED:
            return self._take()
        self._end_term("the node is stopping")
        self.fire(Event.STOP, "stopped")
        self.receiving.close_all("the node is stopping")
        self._lease_actions(self.lease.release())
        self._persist()
        return self._take()

    def release(self, now_ms: int, resume_after_ms: int) -> list[Effect]:
        """Give the lease up now (the peer takes over at once); follow again later."""
        self._at(now_ms)
        if self.role in TICKS_LEASE:
            self._lease_actions(self.lease.release())
            self._resume_at_ms = now_ms + resume_after_ms
        return self._take()

    def force_takeover(self, now_ms: int) -> list[Effect]:
        """Operator: acquire even if not recorded in sync (recorded with its possible loss)."""
        self._at(now_ms)
        self.lease.request_forced_acquire()
        return self._take()

    def failed(self, error: WalrepError, now_ms: int) -> list[Effect]:
        """The executor found a local failure (persisting state failed, a task died)."""
        self._at(now_ms)
        self.fatal(error)
        return self._take()

    # --- inputs: the coordination store ---------------------------------------------------

    def store_done(self, call: int, result: object, now_ms: int) -> list[Effect]:
        """The answer to ``StoreCall(call)``; None if it failed or timed out."""
        self._at(now_ms)
        op, sent_ms = self._calls.pop(call)
        if result is None:
            self.metrics[f"store_{type(op).__name__.lower()}_failures"] += 1
        if isinstance(op, Acquire):
            won, seen = result if isinstance(result, tuple) else (False, None)
            self._lease_actions(self.lease.acquire_done(sent_ms, now_ms, won, seen))
        elif isinstance(op, Renew):
            ok = result if isinstance(result, bool) else None
            self._lease_actions(self.lease.renew_done(sent_ms, now_ms, ok))
        elif isinstance(op, SetInSync):
            if self.term is not None:
                self.term.record_done(call, result if isinstance(result, bool) else None)
        elif isinstance(op, PublishNode):
            self._publishing = None
        elif isinstance(op, ReadNodes) and call == self._own_row_call:
            self._own_row_call = None
            rows = _rows(result if isinstance(result, list) else None)
            if rows is not None:
                own = [r.info.acked for r in rows if r.info.node_id == self.settings.node_id]
                self._published_durable = own[0] if own else 0
                self._publish()
        elif isinstance(op, ReadNodes) and self.term is not None:
            self.term.peer_rows(call, _rows(result if isinstance(result, list) else None))
        return self._take()

    # --- inputs: connections ------------------------------------------------------------------

    def accepted(self, cid: int, now_ms: int) -> list[Effect]:
        """An inbound event-sync connection was accepted."""
        self._at(now_ms)
        self.receiving.accepted(cid, receiving=self.role in RECEIVES)
        return self._take()

    def connect_done(self, cid: int, ok: bool, now_ms: int) -> list[Effect]:
        self._at(now_ms)
        if (self.term is None or not self.term.connect_done(cid, ok)) and ok:
            self._out.append(Close(cid, "the term that asked for it ended", by_peer=False))
        return self._take()

    def received(self, cid: int, data: bytes, now_ms: int) -> list[Effect]:
        self._at(now_ms)
        if self.term is None or not self.term.received(cid, data):
            self.receiving.received(cid, data)
        return self._take()

    def closed(self, cid: int, reason: str, now_ms: int) -> list[Effect]:
        """The peer or the network ended connection ``cid`` (not after our own Close)."""
        self._at(now_ms)
        if self.term is None or not self.term.closed(cid, reason):
            self.receiving.closed(cid)
        return self._take()

    # --- inputs: the log --------------------------------------------------------------------

    def submit(self, request: int, events: int, now_ms: int) -> list[Effect]:
        """A publisher asks to append ``events`` events as request ``request``."""
        self._at(now_ms)
        term = self.term
        if self.role is Role.ACTIVE and term is not None and self.holds_lease():
            term.submit(request, events)
        else:
            why = (
                "its lease's validity has ended (it is fencing itself)"
                if self.role is Role.ACTIVE
                else f"it is {self.role.value}"
            )
            error = NotActiveError(f"node {self.settings.node_id} is not the active: {why}")
            self._out.append(Failed(request, error))
        return self._take()

    def appended_events(
        self, request: int, outcome: AppendResult | WalrepError, now_ms: int
    ) -> list[Effect]:
        """``AppendEvents(request)`` finished: written (and per policy forced), or refused."""
        self._at(now_ms)
        term = next(t for t in (self.term, *self._ending) if t and request in t.writing)
        term.appended(request, outcome)
        if term is not self.term and not term.writing:
            self._ending.remove(term)
        self._maybe_demoted()
        return self._take()

    def appended_frames(
        self, token: int, outcome: AppendResult | WalrepError, now_ms: int
    ) -> list[Effect]:
        """``AppendFrames(token)`` finished."""
        self._at(now_ms)
        self.receiving.appended(token, outcome)
        self._advance_promotion()
        self._maybe_demoted()
        return self._take()

    def synced(self, error: WalrepError | None, now_ms: int) -> list[Effect]:
        """``Sync`` finished (or failed: a local failure)."""
        self._at(now_ms)
        self._sync_in_flight = False
        if error is not None:
            self.fatal(error)
        else:
            self._durable_progress()
            self.request_sync()  # what was written while it ran (no-op when all is forced)
        return self._take()

    def durable(self, now_ms: int) -> list[Effect]:
        """The log's durable end advanced (its durable listener)."""
        self._at(now_ms)
        self._durable_progress()
        return self._take()

    def frames_read(
        self, token: int, outcome: tuple[int, int, bytes] | WalrepError, now_ms: int
    ) -> list[Effect]:
        """``ReadFrames(token)``: ``(base, end, frames)`` or the error reading them."""
        self._at(now_ms)
        if self.term is not None:
            self.term.frames_read(token, outcome)
        return self._take()

    def applied_to(self, offset: int, error: WalrepError | None, now_ms: int) -> list[Effect]:
        """``Apply`` finished: the engine applied ``[.., offset)``; an error fences the node
        (the engine refused the log: a gap, or a splice across a truncation)."""
        self._at(now_ms)
        self._apply_in_flight = False
        if error is not None:
            self.fatal(error)
            return self._take()
        assert self.applied is not None and offset >= self.applied, (offset, self.applied)
        self.applied = offset
        self._advance_promotion()
        return self._take()

    def engine_restored_for(self, epoch: int) -> bool:
        """Promotion under ``epoch``: True once a cold standby's engine holds the newest
        snapshot (asked for once per promotion, when no Apply is in flight); at once
        otherwise. The load of an abandoned promotion is not waited for."""
        promotion = self.promotion
        if self.applied is None or not self.settings.cold_standby or promotion is None:
            return True
        if promotion.restored:
            return True
        if self._restoring != epoch and not self._apply_in_flight:
            self._restoring = epoch
            self._out.append(RestoreEngine(epoch))
        return False

    def engine_restored(
        self, epoch: int, applied: int | None, error: WalrepError | None, now_ms: int
    ) -> list[Effect]:
        """``RestoreEngine(epoch)`` finished: the loaded engine's position (None: none
        ahead of the engine in use), or the error that kept the engine as it was; the log
        after it is replayed either way (a log that lacks it fences the node at that
        Apply). The load of a promotion abandoned meanwhile is ignored."""
        self._at(now_ms)
        if epoch != self._restoring:
            return self._take()
        self._restoring = None
        if error is not None:
            self._out.append(
                Notice(
                    "warning",
                    f"no snapshot restored for the promotion ({error}): replaying the log "
                    f"from offset {self.applied}",
                )
            )
        elif applied is not None and self.applied is not None and applied > self.applied:
            self.applied = applied
            # Its prefix is the snapshot writer's, committed (walrep.node.restore): known
            # from now on, and persisted like any committed offset.
            self.known_committed = max(self.known_committed, applied)
            self._out.append(AdoptEngine(epoch))
        if self.promotion is not None and self.promotion.epoch == epoch:
            self.promotion.restored = True
        self._advance_promotion()
        return self._take()

    def caught_up(self) -> bool:
        """The engine (if any) has applied everything this node knows committed."""
        return self.applied is None or self.applied >= self._apply_target()

    def truncated(self, error: WalrepError | None, now_ms: int) -> list[Effect]:
        self._at(now_ms)
        self.receiving.truncated(error)
        return self._take()

    def log_start_moved(self, now_ms: int) -> list[Effect]:
        """Retention deleted segments: the log starts later now."""
        self._at(now_ms)
        if self.term is not None:
            self.term.log_start_moved()
        return self._take()

    # --- Context: what the drivers use ------------------------------------------------------

    def emit(self, effect: Effect) -> None:
        self._out.append(effect)

    def new_id(self) -> int:
        self._ids += 1
        return self._ids

    def nonce(self) -> bytes:
        return self._nonce()

    def holds_lease(self) -> bool:
        return self.holds_lease_at(self.now_ms)

    def holds_lease_at(self, now_ms: int) -> bool:
        """Leader, and ``now_ms`` before the lease's own-clock deadline (a pure query)."""
        m = self.lease
        return m.phase is lm.Phase.LEADER and now_ms < m.valid_until_ms

    def store_call(self, op: StoreOp) -> int:
        call = self.new_id()
        self._calls[call] = (op, self.now_ms)
        self._out.append(StoreCall(call, op, self.settings.call_timeout_ms))
        return call

    def lease_refused(self, epoch: int, reason: str) -> None:
        self._lease_actions(self.lease.lost(epoch, reason))

    def request_sync(self) -> None:
        if not self._sync_in_flight and self.log.durable_end < self.log.log_end:
            self._sync_in_flight = True
            self._out.append(Sync())

    def note_committed(self, offset: int) -> None:
        self.known_committed = max(self.known_committed, offset)

    def note_epoch(self, epoch: int) -> None:
        if epoch > self.highest_epoch:
            self.highest_epoch = epoch
        if self.highest_epoch > self._persisted.highest_epoch:
            self._persist()

    def fatal(self, error: WalrepError) -> None:
        if self.role in (Role.FENCED, Role.STOPPED):
            return
        self.failure = error
        self.metrics["node_local_failures"] += 1
        self._end_term(f"local failure: {error}")
        self.fire(Event.LOCAL_FAILURE, str(error))
        self.receiving.close_all("the node failed")
        self._lease_actions(self.lease.release())  # the peer takes over at once
        self._out.append(Fatal(error))

    # --- lease ----------------------------------------------------------------------------

    def _lease_actions(self, actions: list[lm.Action]) -> None:
        ttl = self.settings.lease.lease_ttl_ms
        for action in actions:
            if isinstance(action, lm.TryAcquire):
                if self._lost_history(action):
                    continue
                self.store_call(Acquire(action.expected_epoch, action.force, ttl))
            elif isinstance(action, lm.Renew):
                self.store_call(Renew(action.epoch, ttl))
            elif isinstance(action, lm.Release):
                self.store_call(Release(action.epoch))
            elif isinstance(action, lm.Promoted):
                self._promoted(action.epoch)
            elif isinstance(action, lm.Fence):
                self._lease_lost(action.reason)

    def _lost_history(self, action: lm.TryAcquire) -> bool:
        """Hold back an automatic acquire while this node may lack what the store takes it
        to hold (``walrep.node.guard``); the lease machine is then answered as if the
        store had refused."""
        seen = self.lease.observed
        me = Knowledge(
            self.settings.node_id,
            self.log.durable_end,
            self.highest_epoch,
            self._persisted.highest_epoch,
            self._published_durable,
        )
        why = hold_back(me, seen, action.expected_epoch, action.force)
        self.held_back = why  # observability only (the admin API's takeover answer)
        if not why:
            return False
        if self._published_durable is None and self._own_row_call is None:
            self._own_row_call = self.store_call(ReadNodes())
        if self._published_durable is not None and not self.metrics["acquire_held_back"]:
            self._out.append(Notice("warning", f"not taking the lease automatically: {why}"))
        self.metrics["acquire_held_back"] += 1
        placeholder = lm.Observed(None, self.lease.epoch, 0, 0, False)
        answer = self.lease.acquire_done(self.now_ms, self.now_ms, False, seen or placeholder)
        self._lease_actions(answer)
        return True

    def _lease_lost(self, reason: str) -> None:
        if self.role in (Role.PROMOTING, Role.ACTIVE):
            self.promotion = None
            self._end_term(f"lease lost: {reason}")
            self.fire(Event.LEASE_LOST, reason)
            self._maybe_demoted()
        else:
            self.fire(Event.LEASE_LOST, reason)

    def _end_term(self, reason: str) -> None:
        term, self.term = self.term, None
        if term is not None:
            term.end(reason)
            if term.writing:
                self._ending.append(term)

    def _maybe_demoted(self) -> None:
        if (
            self.role is Role.DEMOTING
            and not self._ending
            and self.receiving.appends_in_flight == 0
        ):
            self.fire(Event.DEMOTED, "the term's appends have settled")

    # --- promotion ------------------------------------------------------------------------

    def _promoted(self, epoch: int) -> None:
        self.fire(Event.PROMOTED, f"won the lease under epoch {epoch}")
        # Its log is the history now (after a forced takeover, what it lacked was written
        # off): what it publishes as committed starts again from what it holds.
        self._published_durable = min(self.known_committed, self.log.durable_end)
        self.term = ActiveTerm(self, epoch)
        self.promotion = Promotion(epoch, self.now_ms)
        self._advance_promotion()

    def _advance_promotion(self) -> None:
        if self.promotion is not None:
            self.promotion.advance(self)
            if self.promotion is not None and self.promotion.done:
                self.promotion = None

    # --- helpers --------------------------------------------------------------------------

    def _at(self, now_ms: int) -> None:
        assert not self._out, "an input while the previous one's effects were not taken"
        self.now_ms = now_ms

    def _take(self) -> list[Effect]:
        """The effects of this input; fence first if the lease's validity has ended; then
        ask the engine to apply what became committed."""
        if (
            self.role in (Role.PROMOTING, Role.ACTIVE)
            and self.lease.phase is lm.Phase.LEADER
            and self.now_ms >= self.lease.valid_until_ms
        ):
            self._lease_actions(self.lease.tick(self.now_ms))
        self._request_apply()
        out, self._out = self._out, []
        return out

    def _apply_target(self) -> int:
        """Offsets below this are committed and durable here: the engine may apply them."""
        return min(self.known_committed, self.log.durable_end)

    def _request_apply(self) -> None:
        if self.applied is None or self._apply_in_flight or self.role in _NO_APPLY:
            return
        if self._restoring is not None or (
            self.settings.cold_standby and self.role is Role.PASSIVE
        ):
            return  # a cold standby keeps the log only; a restore replaces the engine
        target = self._apply_target()
        if target > self.applied:
            self._apply_in_flight = True
            self._out.append(Apply(self.applied, target))

    def fire(self, event: Event, reason: str) -> None:
        change = self.roles.fire(event)
        if change is not None:
            old, new = change
            self.metrics[f"role_changes_to_{new.value.lower()}"] += 1
            self._next_publish_ms = self.now_ms  # tell the store soon
            self._out.append(RoleChanged(old.value, new.value, self.epoch, reason))

    def _durable_progress(self) -> None:
        if self.term is not None:
            self.term.log_changed()
        self.receiving.durable_changed()
        self.receiving.try_accept()
        self._advance_promotion()

    def _publish(self) -> None:
        s, log = self.settings, self.log
        # log_end is the durable end; acked the committed offset the node holds durably,
        # and never less than what it published before it started: a restart that finds
        # its log below it lost committed events (_lost_history), and must not forget it
        # by publishing less until it has caught up.
        acked = max(self._published_durable or 0, min(self.known_committed, log.durable_end))
        info = NodeInfo(
            s.node_id,
            self.role.value,
            s.advertised_host,
            s.advertised_port,
            s.admin_url,
            log.durable_end,
            acked,
        )
        self._publishing = self.store_call(PublishNode(info))
        self._next_publish_ms = self.now_ms + s.lease.heartbeat_interval_ms

    def _persist(self) -> None:
        state = ReplicaState(
            max(self._persisted.committed_floor, min(self.known_committed, self.log.durable_end)),
            max(self._persisted.highest_epoch, self.highest_epoch),
        )
        self._last_persist_ms = self.now_ms
        if state != self._persisted:
            self._persisted = state
            self._out.append(PersistState(state))


_NO_APPLY = frozenset({Role.STARTING, Role.FENCED, Role.STOPPED})


def _rows(rows: list[object] | None) -> list[NodeRow] | None:
    if rows is None:
        return None
    return [r for r in rows if isinstance(r, NodeRow)]
