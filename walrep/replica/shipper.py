"""The active side of log shipping: a pure state machine, one per term of the active.

Inputs: connection events, received messages, results of the actions it asked for
(``frames_read``, ``in_sync_recorded``), growth of the local log (``log_grew``,
``local_durable``) and ``tick(now_ms)``. Outputs: messages to send, WAL reads, in-sync
records for the coordinator, and the committed offset. Ordering contracts:

* **Committed** = durable locally and, while the standby counts, acknowledged by it:
  ``min(local durable, acked)``. The standby counts while it is recorded in-sync, and
  also while a change of that record is on its way (both directions), so nothing is
  committed that an in-sync standby lacks.
* ``acked`` belongs to the **current connection**: 0 until the handshake, then the
  passive's durable end as it reported it (a passive that returns with a shorter or
  empty log — replaced data directory, a repaired log, a restored backup — reports
  less than it once acknowledged), then its Acks. The standby is recorded in sync only
  after an Ack on the current connection reaches ``committed``. A standby recorded in
  sync that returns without every committed event is recorded out of sync at once
  (under both ``degrade`` and ``block``: it is no longer a copy of the committed log).
* Standby lost (disconnect, or no progress for ``standby_timeout_ms``): with ``degrade``
  the standby is recorded **out of sync first** (``RecordInSync(False)``), and only once
  that is confirmed does the commit offset move on without it; with ``block`` it never
  moves on without it. A standby that has caught up (acked >= committed) is recorded
  in-sync again.
* Flow control: at most ``window_bytes`` and ``window_batches`` of Appends unacknowledged.
* Divergence (KIP-101): after the handshake the passive's last epoch is answered with
  that epoch's end offset here; ``Truncate`` is sent until the passive's log is a
  prefix of ours, then streaming starts at its end.
* Retention: ``log_start_moved`` tells it that the log now starts later; a passive that
  needs offsets below the start gets ``Error(snapshot_needed)``.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from walrep.replica import auth
from walrep.replica.messages import (
    Ack,
    Append,
    Challenge,
    Error,
    Heartbeat,
    Hello,
    HelloOk,
    Message,
    Reject,
    Truncate,
)
from walrep.replica.receiver import Close, Count, Send


@dataclass(frozen=True, slots=True)
class ReadFrames:
    """Read whole WAL frames from ``from_offset`` (at least one, at most ``max_bytes``)."""

    from_offset: int
    max_bytes: int


@dataclass(frozen=True, slots=True)
class RecordInSync:
    """Ask the coordinator to record the standby in or out of sync under our epoch."""

    standby: str
    in_sync: bool


@dataclass(frozen=True, slots=True)
class Committed:
    offset: int


ShipperAction = Send | ReadFrames | RecordInSync | Committed | Close | Count


class Conn(enum.Enum):
    DOWN = "down"
    AWAIT_CHALLENGE = "await challenge"
    AWAIT_HELLO_OK = "await hello ok"
    SYNCING = "syncing"
    STREAMING = "streaming"


class Standby(enum.Enum):
    OUT_OF_SYNC = "out of sync"
    MARKING_IN = "being recorded in sync"
    IN_SYNC = "in sync"
    MARKING_OUT = "being recorded out of sync"


@dataclass(frozen=True, slots=True)
class ShipperConfig:
    window_bytes: int = 8 * 1024 * 1024
    window_batches: int = 64
    read_bytes_max: int = 1024 * 1024
    standby_timeout_ms: int = 1000
    heartbeat_interval_ms: int = 250
    ack_all: bool = True  # ack policy: "all" (True) or "local"
    degrade: bool = True  # on standby loss: "degrade" (True) or "block"


class Shipper:
    def __init__(
        self,
        group: str,
        node_id: str,
        secret: bytes,
        *,
        epoch: int,
        epoch_end: Callable[[int], tuple[int, int]],
        log_start: int,
        log_end: int,
        durable_end: int,
        standby: str | None,
        standby_in_sync: bool,
        config: ShipperConfig,
    ) -> None:
        self.group = group
        self.node_id = node_id
        self._secret = secret
        self.epoch = epoch
        self._epoch_end = epoch_end  # KIP-101: epoch -> (largest epoch <= it here, its end)
        self.log_start = log_start
        self.log_end = log_end
        self.local_durable = durable_end
        self.config = config
        self.standby = standby
        self.standby_state = Standby.IN_SYNC if standby_in_sync else Standby.OUT_OF_SYNC
        self.acked = 0
        self.committed = 0
        self.conn = Conn.DOWN
        self._nonce = b""
        self._peer_nonce = b""
        self._next_send = 0
        self._in_flight: deque[tuple[int, int]] = deque()  # (end offset, bytes)
        self._in_flight_bytes = 0
        self._unfit_bytes = 0  # size of the read at _next_send that did not fit the window
        self._reading = False
        self._last_heard_ms = 0
        self._last_progress_ms = 0
        self._last_sent_ms = 0
        self._lost_while_marking = False
        self._out_when_marked = False  # lacks committed events: record out after marking in
        self._absent_since_ms: int | None = None  # first tick without a streaming standby

    # --- connection ------------------------------------------------------------------------

    def connected(self, now_ms: int, nonce: bytes) -> list[ShipperAction]:
        self.conn = Conn.AWAIT_CHALLENGE
        self.acked = 0  # what this connection's passive holds is unknown until HelloOk
        self._nonce = nonce
        self._in_flight.clear()
        self._in_flight_bytes = 0
        self._unfit_bytes = 0
        self._reading = False
        self._last_heard_ms = self._last_progress_ms = self._last_sent_ms = now_ms
        if not self.config.ack_all and self.standby_state is Standby.IN_SYNC and self.standby:
            self.standby_state = Standby.MARKING_OUT  # see _maybe_mark_in_sync
            return [RecordInSync(self.standby, False)]
        return []

    def disconnected(self, reason: str) -> list[ShipperAction]:
        was_up = self.conn is not Conn.DOWN
        self.conn = Conn.DOWN
        return self._standby_lost() if was_up or self.standby_state is Standby.IN_SYNC else []

    def received(self, message: Message, now_ms: int) -> list[ShipperAction]:
        self._last_heard_ms = now_ms
        if self.conn is Conn.AWAIT_CHALLENGE and isinstance(message, Challenge):
            return self._hello(message)
        if self.conn is Conn.AWAIT_HELLO_OK and isinstance(message, HelloOk):
            return self._hello_ok(message, now_ms)
        if isinstance(message, (Reject, Error)):
            reason = (
                message.reason
                if isinstance(message, Reject)
                else f"{message.code}: {message.message}"
            )
            self.conn = Conn.DOWN
            return [
                Count("replication_peer_refused"),
                Close(f"passive refused: {reason}", by_peer=True),
                *self._standby_lost(),
            ]
        if isinstance(message, Ack) and self.conn in (Conn.SYNCING, Conn.STREAMING):
            return self._ack(message, now_ms)
        if isinstance(message, Heartbeat):
            return []
        reason = f"unexpected {type(message).__name__} in state {self.conn.value}"
        self.conn = Conn.DOWN
        return [Send(Error("protocol", reason)), Close(reason, by_peer=True), *self._standby_lost()]

    def _hello(self, challenge: Challenge) -> list[ShipperAction]:
        if self.standby is not None and challenge.node != self.standby:
            self.conn = Conn.DOWN
            reason = f"expected standby {self.standby!r}, {challenge.node!r} answered"
            return [Count("replication_wrong_peer"), Close(reason, by_peer=True)]
        self.standby = challenge.node
        self._peer_nonce = challenge.nonce
        proof = auth.proof(
            self._secret,
            "active",
            self.group,
            self.node_id,
            challenge.node,
            challenge.nonce,
            self._nonce,
        )
        self.conn = Conn.AWAIT_HELLO_OK
        return [Send(Hello(self.group, self.node_id, self.epoch, self.log_end, self._nonce, proof))]

    def _hello_ok(self, ok: HelloOk, now_ms: int) -> list[ShipperAction]:
        assert self.standby is not None
        expected = auth.proof(
            self._secret,
            "passive",
            self.group,
            self.node_id,
            ok.node,
            self._peer_nonce,
            self._nonce,
        )
        if ok.node != self.standby or not auth.verify(expected, ok.proof):
            self.conn = Conn.DOWN
            return [
                Count("replication_rejected_auth"),
                Close("passive failed authentication", by_peer=True),
            ]
        self.conn = Conn.SYNCING
        return self._resync(ok.log_end, ok.last_epoch, ok.last_epoch_start, now_ms)

    def _resync(
        self, passive_end: int, passive_epoch: int, passive_epoch_start: int, now_ms: int
    ) -> list[ShipperAction]:
        """Truncate the passive to a prefix of our log, or start streaming at its end."""
        # The largest epoch here not above the passive's last one, and where it ends here.
        found, end = self._epoch_end(passive_epoch) if passive_epoch > 0 else (0, 0)
        agreed = min(end, passive_end) if passive_epoch > 0 else 0
        if found != passive_epoch:
            # Its last epoch never wrote here: none of its events are ours, and none was
            # committed (we would hold them). Cut back to where that epoch begins on the
            # passive (KIP-279), then ask again: older epochs may agree further.
            agreed = min(agreed, passive_epoch_start)
        if agreed < passive_end:
            return [Send(Truncate(agreed))]
        if passive_end < self.log_start:  # retention removed what it needs
            return self._snapshot_needed(passive_end)
        self.conn = Conn.STREAMING
        self._absent_since_ms = None
        self.acked = passive_end  # this connection's: never an older connection's acks
        self._next_send = passive_end
        self._last_progress_ms = now_ms
        lacking: list[ShipperAction] = []
        if passive_end < self.committed and self.standby_state is not Standby.OUT_OF_SYNC:
            lacking = [Count("replication_standby_lacks_committed"), *self._record_out()]
        # A passive that returns holding everything committed is in sync at once.
        marking = self._maybe_mark_in_sync()
        return [*lacking, *self._advance_commit(), *marking, *self._read_more()]

    def _snapshot_needed(self, passive_at: int) -> list[ShipperAction]:
        self.conn = Conn.DOWN
        reason = f"passive at {passive_at}, log starts at {self.log_start}: needs a snapshot"
        return [
            Count("replication_snapshot_needed"),
            Send(Error("snapshot_needed", reason)),
            Close(reason, False),
            *self._standby_lost(),
        ]

    def _ack(self, ack: Ack, now_ms: int) -> list[ShipperAction]:
        if self.conn is Conn.SYNCING:
            return self._resync(ack.durable_offset, ack.last_epoch, ack.last_epoch_start, now_ms)
        if ack.durable_offset > self._next_send:
            self.conn = Conn.DOWN
            reason = f"Ack of {ack.durable_offset}, beyond what was sent ({self._next_send})"
            return [
                Send(Error("protocol", reason)),
                Close(reason, by_peer=True),
                *self._standby_lost(),
            ]
        if ack.durable_offset > self.acked:
            self.acked = ack.durable_offset
            self._last_progress_ms = now_ms
        while self._in_flight and self._in_flight[0][0] <= self.acked:
            self._in_flight_bytes -= self._in_flight.popleft()[1]
        return [*self._advance_commit(), *self._maybe_mark_in_sync(), *self._read_more()]

    # --- data ---------------------------------------------------------------------------------

    def log_start_moved(self, log_start: int) -> list[ShipperAction]:
        """Retention deleted the log below ``log_start``: a passive behind it needs a snapshot."""
        self.log_start = max(self.log_start, log_start)
        if self.conn is Conn.STREAMING and self._next_send < self.log_start:
            return self._snapshot_needed(self._next_send)
        return []

    def log_grew(self, log_end: int) -> list[ShipperAction]:
        self.log_end = max(self.log_end, log_end)
        return self._read_more()

    def local_durable_to(self, durable_end: int) -> list[ShipperAction]:
        self.local_durable = max(self.local_durable, durable_end)
        return self._advance_commit()

    def frames_read(
        self, base_offset: int, end_offset: int, frames: bytes, now_ms: int
    ) -> list[ShipperAction]:
        self._reading = False
        if self.conn is not Conn.STREAMING or base_offset != self._next_send:
            return []  # the connection changed while reading: this read is stale
        if self._in_flight and self._in_flight_bytes + len(frames) > self.config.window_bytes:
            # A read returns at least one frame, which may not fit: drop it, and read it
            # again once acks leave room for it (alone, when nothing is in flight).
            self._unfit_bytes = len(frames)
            return []
        self._unfit_bytes = 0
        self._next_send = end_offset
        if not self._in_flight:  # the stall clock runs from here, not from an old ack
            self._last_progress_ms = now_ms
        self._in_flight.append((end_offset, len(frames)))
        self._in_flight_bytes += len(frames)
        self._last_sent_ms = now_ms
        append = Append(self.epoch, base_offset, end_offset - base_offset, self.committed, frames)
        return [Send(append), *self._read_more()]

    def _read_more(self) -> list[ShipperAction]:
        c = self.config
        room = c.window_bytes - self._in_flight_bytes
        if (
            self.conn is not Conn.STREAMING
            or self._reading
            or self._next_send >= self.log_end
            or len(self._in_flight) >= c.window_batches
            or room <= 0
            or (self._in_flight and self._unfit_bytes > room)
        ):
            return []
        self._reading = True
        return [ReadFrames(self._next_send, min(room, c.read_bytes_max))]

    # --- commit and in-sync record ---------------------------------------------------------------

    def _standby_counts(self) -> bool:
        return self.config.ack_all and self.standby_state is not Standby.OUT_OF_SYNC

    def _advance_commit(self) -> list[ShipperAction]:
        candidate = (
            min(self.local_durable, self.acked) if self._standby_counts() else self.local_durable
        )
        if candidate <= self.committed:
            return []
        self.committed = candidate
        return [Committed(candidate)]

    def _maybe_mark_in_sync(self) -> list[ShipperAction]:
        # Under ack policy "local" commits never wait for the standby, so it must never be
        # recorded in sync: it could then take over without events we acknowledged.
        if (
            self.config.ack_all
            and self.standby_state is Standby.OUT_OF_SYNC
            and self.standby
            and self.conn is Conn.STREAMING  # acked is this connection's
            and self.acked >= self.committed
        ):
            self.standby_state = Standby.MARKING_IN
            self._lost_while_marking = self._out_when_marked = False
            return [RecordInSync(self.standby, True)]
        return []

    def _standby_lost(self) -> list[ShipperAction]:
        if self.standby_state is Standby.MARKING_IN:
            self._lost_while_marking = True
            return []
        if self.standby_state is Standby.IN_SYNC and self.config.degrade and self.standby:
            return [Count("replication_standby_lost"), *self._record_out()]
        return [Count("replication_standby_lost")] if self.standby_state is Standby.IN_SYNC else []

    def _record_out(self) -> list[ShipperAction]:
        """Record the standby out of sync (it counts for commits until that is confirmed)."""
        if self.standby_state is Standby.MARKING_IN:
            self._out_when_marked = True  # recorded out once the "in" record answers
            return []
        if self.standby_state is not Standby.IN_SYNC or not self.standby:
            return []
        self.standby_state = Standby.MARKING_OUT
        return [RecordInSync(self.standby, False)]

    def in_sync_recorded(self, in_sync: bool, ok: bool) -> list[ShipperAction]:
        """The coordinator answered a ``RecordInSync``; not ok means the lease is gone."""
        if not ok:
            return []  # the node fences itself; commits stay frozen
        if in_sync:
            self.standby_state = Standby.IN_SYNC
            if self._out_when_marked:
                self._out_when_marked = False
                return self._record_out()
            if self._lost_while_marking or self.conn is Conn.DOWN:
                return self._standby_lost()
            return self._advance_commit()
        self.standby_state = Standby.OUT_OF_SYNC
        return self._advance_commit()

    @property
    def unprotected_offsets(self) -> int:
        """Committed offsets the standby has not acknowledged (nonzero only when degraded)."""
        return max(0, self.committed - self.acked)

    # --- time ---------------------------------------------------------------------------------

    def tick(self, now_ms: int) -> list[ShipperAction]:
        timeout = self.config.standby_timeout_ms
        if self.conn is Conn.DOWN:
            # A standby that never gets to streaming (down, refusing, failing the
            # handshake) has no connection to lose: it is lost once this lasts too long.
            if self._absent_since_ms is None:
                self._absent_since_ms = now_ms
            if (
                self.standby_state is Standby.IN_SYNC
                and self.config.degrade
                and now_ms - self._absent_since_ms > timeout
            ):
                return [Count("replication_standby_timeout"), *self._standby_lost()]
            return []
        stalled = bool(self._in_flight) and now_ms - self._last_progress_ms > timeout
        if stalled or now_ms - self._last_heard_ms > timeout:
            self.conn = Conn.DOWN
            reason = f"standby silent or stalled for more than {timeout} ms"
            return [
                Count("replication_standby_timeout"),
                Close(reason, by_peer=True),
                *self._standby_lost(),
            ]
        if (
            self.conn is Conn.STREAMING
            and now_ms - self._last_sent_ms >= self.config.heartbeat_interval_ms
        ):
            self._last_sent_ms = now_ms
            return [Send(Heartbeat(self.committed))]
        return []
