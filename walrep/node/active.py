"""The active's side of one term (sans-IO): the shipper, its connection, commit waiters.

One ``ActiveTerm`` lives from promotion to the end of the lease under one epoch. It owns:

* the ``Shipper`` (the replication protocol) and the one connection to the passive: the
  peer's event-sync address is looked up in the store, connects are bounded by
  ``connect_timeout_ms`` and retried with exponential backoff;
* in-sync records through the store, retried on store errors until they succeed or the
  lease is gone (commits stay frozen meanwhile: the shipper counts the standby);
* admission of publishers' appends (``max_pending`` written-but-uncommitted appends and
  ``max_uncommitted_events``; beyond, up to ``max_queued`` wait for room; beyond that,
  ``OverloadedError``) and the commit waiters, a heap by end offset.

Ordering contracts: an append is acknowledged (``Acked``) only once ``Committed`` covers
it **and** the lease is valid at that moment (``Context.holds_lease``); if it is not, the
core fences at once and every waiting append fails with ``NotActiveError``.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

from walrep.errors import (
    CorruptLogError,
    LogFailedError,
    NotActiveError,
    OverloadedError,
    PeerProtocolError,
    WalrepError,
)
from walrep.log.types import AppendResult
from walrep.node.context import Context
from walrep.node.effects import (
    Acked as AckedEffect,
)
from walrep.node.effects import (
    AppendEvents,
    Close,
    Connect,
    Failed,
    Notice,
    ReadFrames,
    ReadNodes,
    SetInSync,
)
from walrep.node.effects import (
    Send as SendEffect,
)
from walrep.node.link import Link
from walrep.replica.messages import encode
from walrep.replica.receiver import Close as CoreClose
from walrep.replica.receiver import Count, Send
from walrep.replica.shipper import (
    Committed,
    RecordInSync,
    Shipper,
    ShipperAction,
    Standby,
)
from walrep.replica.shipper import ReadFrames as CoreReadFrames
from walrep.replica.store import NodeRow


@dataclass(order=True, slots=True)
class _Waiter:
    end_offset: int
    request: int
    result: AppendResult = field(compare=False)
    count: int = field(compare=False)


class ActiveTerm:
    def __init__(self, ctx: Context, epoch: int) -> None:
        s = ctx.settings
        log = ctx.log
        self.ctx = ctx
        self.epoch = epoch
        self.started_ms = ctx.now_ms
        self.shipping = False  # the "ship" promotion step has run
        self.ended: str | None = None  # why the term ended (fenced, released, stopped)
        self.shipper = Shipper(
            s.group,
            s.node_id,
            s.secret,
            epoch=epoch,
            epoch_end=lambda e: log.epochs.end_offset(e, log.log_end),
            log_start=log.log_start,
            log_end=log.log_end,
            durable_end=log.durable_end,
            standby=None,  # learnt from the store's node rows
            standby_in_sync=False,  # nobody is in sync under a new epoch (store contract)
            config=s.shipper,
        )
        # The connection to the passive.
        self.link: Link | None = None
        self._connecting: tuple[int, int] | None = None  # (cid, deadline)
        self._lookup: int | None = None  # ReadNodes call in flight
        self._next_attempt_ms = ctx.now_ms
        self._backoff_ms = s.reconnect_backoff_ms[0]
        self._warned_no_peer = False
        # In-sync records: the one in flight (call id, in_sync) or waiting for a retry.
        self._record: tuple[int, bool] | None = None
        self._record_retry: tuple[int, bool] | None = None  # (due ms, in_sync)
        self._record_backoff_ms = s.reconnect_backoff_ms[0]
        # Reads of the local log for the shipper (token of the one in flight).
        self._read_token: int | None = None
        # Publishers' appends.
        self.waiters: list[_Waiter] = []  # heap by end offset
        self.queued: deque[tuple[int, int]] = deque()  # (request, events) awaiting room
        self.writing: dict[int, int] = {}  # request -> events: AppendEvents not reported
        self.uncommitted_events = 0

    # --- publishers ---------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Admitted appends not yet acknowledged: being written, or waiting for commit."""
        return len(self.writing) + len(self.waiters)

    def submit(self, request: int, events: int) -> None:
        """Admit, queue (backpressure) or refuse one append of ``events`` events."""
        limits = self.ctx.settings.appends
        if not self.queued and self._has_room(events):
            self._admit(request, events)
        elif len(self.queued) < limits.max_queued:
            self.queued.append((request, events))
            self.ctx.metrics["appends_queued"] += 1
        else:
            self.ctx.metrics["appends_refused_overload"] += 1
            error = OverloadedError(
                f"{self.pending} appends pending and {len(self.queued)} queued: try again later"
            )
            self.ctx.emit(Failed(request, error))

    def _has_room(self, events: int) -> bool:
        limits = self.ctx.settings.appends
        if self.pending == 0:
            return True  # one append always fits, however large
        return (
            self.pending < limits.max_pending
            and self.uncommitted_events + events <= limits.max_uncommitted_events
        )

    def _admit(self, request: int, events: int) -> None:
        self.writing[request] = events
        self.uncommitted_events += events
        self.ctx.emit(AppendEvents(request, self.epoch))

    def _admit_queued(self) -> None:
        while self.queued and self._has_room(self.queued[0][1]):
            request, events = self.queued.popleft()
            self._admit(request, events)

    def appended(self, request: int, outcome: AppendResult | WalrepError) -> None:
        """The log wrote (and per its policy forced) request ``request``, or refused it."""
        events = self.writing.pop(request)
        if self.ended is not None and not isinstance(outcome, LogFailedError):
            # Written (or not) after the term ended: its events may be in the log, but
            # nothing is acknowledged outside the lease. A retry learns the truth.
            self.ctx.emit(Failed(request, NotActiveError(f"not the active: {self.ended}")))
            return
        if isinstance(outcome, WalrepError):
            self.uncommitted_events -= events
            self.ctx.emit(Failed(request, outcome))  # refused (bad input), or our disk failed
            if isinstance(outcome, LogFailedError):
                self.ctx.fatal(outcome)
                return
            self._admit_queued()
            return
        heapq.heappush(self.waiters, _Waiter(outcome.end_offset, request, outcome, events))
        self.log_changed()
        # The log may have announced its durable progress (and the standby acked it)
        # before this result arrived: the offsets may be committed already.
        self._ack_committed(self.shipper.committed)

    def log_changed(self) -> None:
        """The local log grew or became more durable: ship it, maybe commit."""
        log = self.ctx.log
        self._run(self.shipper.log_grew(log.log_end))
        self._run(self.shipper.local_durable_to(log.durable_end))
        if log.durable_end < log.log_end:
            self.ctx.request_sync()

    def _ack_committed(self, committed: int) -> None:
        if not self.waiters or self.waiters[0].end_offset > committed:
            return
        if not self.ctx.holds_lease():
            # The lease's validity ended: acknowledge nothing; the core fences next.
            return
        while self.waiters and self.waiters[0].end_offset <= committed:
            waiter = heapq.heappop(self.waiters)
            self.uncommitted_events -= waiter.count
            self.ctx.emit(AckedEffect(waiter.request, waiter.result))
        self._admit_queued()

    def fail_all(self, error: WalrepError) -> None:
        """The term ended: every waiting or queued append fails (retriable elsewhere)."""
        while self.waiters:
            self.ctx.emit(Failed(heapq.heappop(self.waiters).request, error))
        while self.queued:
            self.ctx.emit(Failed(self.queued.popleft()[0], error))
        self.uncommitted_events = sum(self.writing.values())

    def end(self, reason: str) -> None:
        """Fenced, released or stopped: close the connection, fail every append."""
        self.ended = reason
        self.fail_all(NotActiveError(f"not the active any more: {reason}"))
        for cid in self.cids():
            self.ctx.emit(Close(cid, reason, by_peer=False))
        self.link = None
        self._connecting = None

    def cids(self) -> list[int]:
        cids = [self.link.cid] if self.link is not None else []
        return cids + ([self._connecting[0]] if self._connecting is not None else [])

    # --- time ------------------------------------------------------------------------------

    def tick(self) -> None:
        ctx, now = self.ctx, self.ctx.now_ms
        self._run(self.shipper.tick(now))
        if self._connecting is not None and now >= self._connecting[1]:
            cid = self._connecting[0]
            self._connecting = None
            ctx.emit(Close(cid, "connect timed out", by_peer=True))
            self._failed_attempt("connect timed out")
        if (
            self.shipping
            and self.link is None
            and self._connecting is None
            and self._lookup is None
            and now >= self._next_attempt_ms
        ):
            self._lookup = ctx.store_call(ReadNodes())
        if self._record_retry is not None and now >= self._record_retry[0]:
            in_sync = self._record_retry[1]
            self._record_retry = None
            self._record_in_sync(in_sync)

    def _failed_attempt(self, reason: str) -> None:
        self.ctx.metrics["replication_connect_failures"] += 1
        self._retry_later()

    def _retry_later(self) -> None:
        """Connect again after the backoff (which doubles up to its maximum)."""
        self._next_attempt_ms = self.ctx.now_ms + self._backoff_ms
        self._backoff_ms = min(self._backoff_ms * 2, self.ctx.settings.reconnect_backoff_ms[1])

    # --- finding and connecting to the passive ------------------------------------------------

    def peer_rows(self, call: int, rows: list[NodeRow] | None) -> None:
        """The answer to ``ReadNodes`` (None: the store failed)."""
        ctx, s = self.ctx, self.ctx.settings
        if call != self._lookup:
            return  # asked by an earlier term
        self._lookup = None
        # The live passive: a node that left the group keeps its row, so prefer a row
        # that says PASSIVE, then the freshest heartbeat.
        candidates = sorted(
            (r for r in rows or [] if r.info.node_id != s.node_id and r.info.event_sync_port > 0),
            key=lambda r: (r.info.role != "PASSIVE", r.heartbeat_age_ms, r.info.node_id),
        )
        peer = candidates[0].info if candidates else None
        if peer is None:
            self._next_attempt_ms = ctx.now_ms + s.peer_retry_sleep_ms
            waited = ctx.now_ms - self.started_ms
            if waited >= s.peer_wait_timeout_ms and not self._warned_no_peer:
                self._warned_no_peer = True
                ctx.emit(Notice("warning", f"no passive has published its address in {waited} ms"))
            return
        # The standby is whom commits wait for once recorded in sync, so it changes only
        # while it is out of sync (and not being recorded): a row chosen once (a departed
        # node whose port a live one now has) must not pin the term to a node that is gone.
        if self.shipper.standby_state is Standby.OUT_OF_SYNC:
            self.shipper.standby = peer.node_id
        cid = ctx.new_id()
        self._connecting = (cid, ctx.now_ms + s.connect_timeout_ms)
        ctx.emit(Connect(cid, peer.event_sync_host, peer.event_sync_port))

    def connect_done(self, cid: int, ok: bool) -> bool:
        """Outcome of ``Connect``; False if ``cid`` is not this term's."""
        if self._connecting is None or self._connecting[0] != cid:
            return False
        self._connecting = None
        if not ok:
            self._failed_attempt("connection refused")
            return True
        self.ctx.metrics["replication_connections"] += 1
        self._backoff_ms = self.ctx.settings.reconnect_backoff_ms[0]
        # Only small messages come back from a passive (Challenge, HelloOk, Ack, Error).
        self.link = Link(cid, self.ctx.now_ms, self.ctx.settings.edges)
        self._run(self.shipper.connected(self.ctx.now_ms, self.ctx.nonce()))
        return True

    def received(self, cid: int, data: bytes) -> bool:
        """Bytes from the passive; False if ``cid`` is not this term's connection."""
        link = self.link
        if link is None or link.cid != cid:
            return False
        try:
            messages = link.feed(data, self.ctx.now_ms)
        except PeerProtocolError as e:
            self.ctx.metrics["replication_errors_malformed"] += 1
            self._drop(f"malformed stream from the passive: {e}", by_peer=True)
            return True
        for message in messages:
            if self.link is not link:
                break  # an action closed it
            self._run(self.shipper.received(message, self.ctx.now_ms))
        return True

    def closed(self, cid: int, reason: str) -> bool:
        """The connection ended under us; False if ``cid`` is not this term's."""
        if self._connecting is not None and self._connecting[0] == cid:
            self._connecting = None
            self._failed_attempt(reason)
            return True
        if self.link is None or self.link.cid != cid:
            return False
        self.link = None
        self.ctx.metrics["replication_disconnects"] += 1
        self._retry_later()
        self._run(self.shipper.disconnected(reason))
        return True

    def _drop(self, reason: str, *, by_peer: bool) -> None:
        """We give up on the connection: tell the shipper, close it, reconnect later."""
        assert self.link is not None
        cid, self.link = self.link.cid, None
        self._run(self.shipper.disconnected(reason))
        self.ctx.emit(Close(cid, reason, by_peer))
        self.ctx.metrics["replication_disconnects"] += 1
        self._retry_later()

    # --- the shipper's actions ----------------------------------------------------------------

    def _run(self, actions: list[ShipperAction]) -> None:
        ctx = self.ctx
        for action in actions:
            if isinstance(action, Send):
                if self.link is not None:
                    ctx.emit(SendEffect(self.link.cid, encode(action.message)))
            elif isinstance(action, CoreReadFrames):
                self._read_token = token = ctx.new_id()
                ctx.emit(ReadFrames(token, action.from_offset, action.max_bytes))
            elif isinstance(action, Committed):
                ctx.note_committed(action.offset)
                self._ack_committed(action.offset)
            elif isinstance(action, RecordInSync):
                self._record_in_sync(action.in_sync)
            elif isinstance(action, Count):
                ctx.metrics[action.metric] += 1
            elif isinstance(action, CoreClose) and self.link is not None:
                cid, self.link = self.link.cid, None
                ctx.emit(Close(cid, action.reason, action.by_peer))
                ctx.metrics["replication_disconnects"] += 1
                self._backoff_ms = ctx.settings.reconnect_backoff_ms[0]
                self._retry_later()

    def frames_read(self, token: int, outcome: tuple[int, int, bytes] | WalrepError) -> None:
        if token != self._read_token:
            return  # a read of an earlier connection or term
        self._read_token = None
        if isinstance(outcome, WalrepError):
            if isinstance(outcome, (LogFailedError, CorruptLogError)):
                self.ctx.fatal(outcome)  # our own log is broken, not the session
                return
            # Deleted by retention or otherwise unreadable: this session cannot go on.
            if self.link is not None:
                self._drop(f"reading the log failed: {outcome}", by_peer=False)
            return
        base, end, data = outcome
        self._run(self.shipper.frames_read(base, end, data, self.ctx.now_ms))

    def log_start_moved(self) -> None:
        self._run(self.shipper.log_start_moved(self.ctx.log.log_start))

    # --- in-sync records ------------------------------------------------------------------------

    def _record_in_sync(self, in_sync: bool) -> None:
        ctx, s = self.ctx, self.ctx.settings
        standby = self.shipper.standby
        assert standby is not None and self._record is None
        if not ctx.holds_lease():
            self._run(self.shipper.in_sync_recorded(in_sync, False))
            return
        op = SetInSync(self.epoch, standby, in_sync, s.lease.lease_ttl_ms)
        self._record = (ctx.store_call(op), in_sync)

    def record_done(self, call: int, ok: bool | None) -> None:
        if self._record is None or self._record[0] != call:
            return
        in_sync = self._record[1]
        self._record = None
        ctx = self.ctx
        if ok is None:  # the store failed: retry; commits stay frozen meanwhile
            ctx.metrics["in_sync_record_retries"] += 1
            self._record_retry = (ctx.now_ms + self._record_backoff_ms, in_sync)
            self._record_backoff_ms = min(
                self._record_backoff_ms * 2, ctx.settings.reconnect_backoff_ms[1]
            )
            return
        self._record_backoff_ms = ctx.settings.reconnect_backoff_ms[0]
        if not ok:
            ctx.lease_refused(self.epoch, "in-sync record refused: the lease is no longer ours")
            return
        ctx.emit(
            Notice("info", f"{self.shipper.standby} recorded {'in' if in_sync else 'out of'} sync")
        )
        self._run(self.shipper.in_sync_recorded(in_sync, ctx.holds_lease()))
