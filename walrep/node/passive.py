"""The passive's side (sans-IO): inbound event-sync connections, one ``Receiver`` each.

Ordering contracts:

* **One writer into the log.** One connection at a time holds the slot: a connection whose
  active proved the secret under an epoch not below the highest seen closes the older
  one, and is accepted (``Receiver.accept``) only once the older one's appends have all
  reported back and the log is forced (log end = durable end): two actives never write
  into this log at once, and the handshake reports what is durable. A stale active is
  rejected without disturbing the current one.
* **fsync before ack**: ``Receiver.durable`` (which sends the Ack) is fed the log's
  durable end only after the append or sync that made it durable reported back.
* **Never below committed**: the receiver refuses a truncation below the committed offset
  it was accepted with, which is at least the persisted floor (so also after a restart,
  or when a fenced old active returns as passive); the log refuses it too.
* **A local log failure is ours, not the peer's**: ``LogFailedError`` from an append,
  truncation or sync makes the node fatal; other refusals (bad frames, stale epochs)
  close the connection as the peer's fault.
* Bounded: at most ``max_connections`` connections; a peer has ``handshake_timeout_ms``
  to authenticate, with messages of at most ``preauth_message_bytes_max`` until then; a
  connection without a complete message for ``idle_timeout_ms`` is closed; the
  receiver's buffer of not-yet-durable bytes and events is bounded (``wants_data``).
"""

from __future__ import annotations

from dataclasses import dataclass

from walrep.errors import CommittedTruncationError, LogFailedError, PeerProtocolError, WalrepError
from walrep.log.types import AppendResult
from walrep.node.context import Context
from walrep.node.effects import AppendFrames, Close, Truncate
from walrep.node.effects import Send as SendEffect
from walrep.node.link import Link
from walrep.replica.messages import encode
from walrep.replica.receiver import AppendFrames as CoreAppendFrames
from walrep.replica.receiver import (
    Authenticated,
    Count,
    Phase,
    Receiver,
    ReceiverAction,
    Send,
    TruncateLog,
)
from walrep.replica.receiver import Close as CoreClose


@dataclass(slots=True)
class _Inbound:
    link: Link
    receiver: Receiver
    appends: int = 0  # AppendFrames not reported back yet
    open: bool = True
    awaiting_accept: bool = False
    truncating: bool = False


class Receiving:
    def __init__(self, ctx: Context, *, highest_epoch: int) -> None:
        self.ctx = ctx
        self.conns: dict[int, _Inbound] = {}  # open, or closed with appends in flight
        self.tokens: dict[int, int] = {}  # AppendFrames token -> cid
        self.slot: int | None = None  # the one connection allowed to write
        self.highest_epoch = highest_epoch

    @property
    def appends_in_flight(self) -> int:
        return len(self.tokens)

    def open_count(self) -> int:
        return sum(1 for c in self.conns.values() if c.open)

    # --- connections -------------------------------------------------------------------

    def accepted(self, cid: int, receiving: bool) -> None:
        ctx, s = self.ctx, self.ctx.settings
        if not receiving:
            ctx.metrics["replication_refused_not_passive"] += 1
            ctx.emit(Close(cid, "this node is not a passive", by_peer=False))
            return
        if self.open_count() >= s.edges.max_connections:
            ctx.metrics["replication_refused_connection_cap"] += 1
            ctx.emit(Close(cid, f"{s.edges.max_connections} connections already", by_peer=False))
            return
        receiver = Receiver(
            s.group,
            s.node_id,
            s.secret,
            ctx.nonce(),
            buffer_bytes_max=s.receiver_buffer_bytes_max,
            buffer_events_max=s.receiver_buffer_events_max,
        )
        conn = _Inbound(Link(cid, ctx.now_ms, s.edges), receiver)
        self.conns[cid] = conn
        self._run(conn, receiver.connected())

    def wants_data(self, cid: int) -> bool:
        conn = self.conns.get(cid)
        return conn is not None and conn.open and conn.receiver.wants_data()

    def received(self, cid: int, data: bytes) -> None:
        conn = self.conns.get(cid)
        if conn is None or not conn.open:
            return  # closed by us: its bytes are dropped
        try:
            messages = conn.link.feed(data, self.ctx.now_ms)
        except PeerProtocolError as e:
            self.ctx.metrics["replication_errors_malformed"] += 1
            self._close(conn, f"malformed stream: {e}", by_peer=True)
            return
        for message in messages:
            self._run(conn, conn.receiver.received(message))
            if conn.receiver.phase is Phase.CLOSED or conn not in self.conns.values():
                return  # an action closed it

    def closed(self, cid: int) -> None:
        """The peer or the network ended the connection."""
        conn = self.conns.get(cid)
        if conn is not None and conn.open:
            self._forget(conn)

    def close_all(self, reason: str) -> None:
        for conn in list(self.conns.values()):
            if conn.open:
                self._close(conn, reason, by_peer=False)

    def tick(self) -> None:
        for conn in list(self.conns.values()):
            why = conn.link.overdue(self.ctx.now_ms) if conn.open else None
            if why is not None:
                self.ctx.metrics["replication_deadline_closes"] += 1
                self._close(conn, why, by_peer=True)

    def _close(self, conn: _Inbound, reason: str, *, by_peer: bool) -> None:
        self.ctx.emit(Close(conn.link.cid, reason, by_peer))
        self._forget(conn)

    def _forget(self, conn: _Inbound) -> None:
        conn.open = False
        if self.slot == conn.link.cid:
            self.slot = None
        if conn.appends == 0:
            del self.conns[conn.link.cid]
        self.try_accept()

    # --- the receiver's actions -------------------------------------------------------------

    def _run(self, conn: _Inbound, actions: list[ReceiverAction]) -> None:
        ctx = self.ctx
        for action in actions:
            if isinstance(action, Send):
                if conn.open:
                    ctx.emit(SendEffect(conn.link.cid, encode(action.message)))
            elif isinstance(action, CoreAppendFrames):
                token = ctx.new_id()
                self.tokens[token] = conn.link.cid
                conn.appends += 1
                ctx.emit(AppendFrames(token, action.frames, action.base_offset, action.end_offset))
            elif isinstance(action, TruncateLog):
                conn.truncating = True
                ctx.emit(Truncate(action.to_offset))
            elif isinstance(action, Authenticated):
                self._authenticated(conn, action.epoch)
            elif isinstance(action, Count):
                ctx.metrics[action.metric] += 1
            elif isinstance(action, CoreClose) and conn.open:
                self._close(conn, action.reason, by_peer=action.by_peer)
        self._learn(conn)

    def _learn(self, conn: _Inbound) -> None:
        """What the receiver learnt: the committed offset and the highest epoch."""
        r = conn.receiver
        self.ctx.note_committed(r.committed)
        if r.highest_epoch > self.highest_epoch and r.phase in (Phase.SYNCING, Phase.STREAMING):
            self.highest_epoch = r.highest_epoch
            self.ctx.note_epoch(r.highest_epoch)

    def _authenticated(self, conn: _Inbound, epoch: int) -> None:
        conn.link.authenticate(self.ctx.settings.max_message_bytes)
        if epoch >= self.highest_epoch:
            # Take the slot: close the older connection (its appends finish first).
            old = self.conns.get(self.slot) if self.slot is not None else None
            if old is not None and old is not conn and old.open:
                self._close(old, "a newer active connected", by_peer=False)
            self.slot = conn.link.cid
        conn.awaiting_accept = True
        self.try_accept()

    def try_accept(self) -> None:
        """Accept the connection waiting for it once no other connection's appends are in
        flight and the log is forced; a stale one is rejected without waiting."""
        log = self.ctx.log
        for conn in [c for c in self.conns.values() if c.awaiting_accept and c.open]:
            if self.slot == conn.link.cid:
                if any(c.appends for c in self.conns.values() if c is not conn):
                    continue  # the older connection's appends report back first
                if log.durable_end < log.log_end:
                    self.ctx.request_sync()
                    continue
            conn.awaiting_accept = False
            actions = conn.receiver.accept(
                log_end=log.durable_end,
                last_epoch=log.last_epoch,
                last_epoch_start=log.last_epoch_start,
                # What this node knows committed, as passive or in its own terms as the
                # active, and at least the persisted floor: never truncated below.
                committed=min(self.ctx.known_committed, log.durable_end),
                highest_epoch=self.highest_epoch,
            )
            self._learn(conn)  # persist a higher epoch before HelloOk goes out
            self._run(conn, actions)

    # --- results of the log -----------------------------------------------------------------

    def appended(self, token: int, outcome: AppendResult | WalrepError) -> None:
        cid = self.tokens.pop(token)
        conn = self.conns[cid]
        conn.appends -= 1
        if isinstance(outcome, WalrepError):
            if isinstance(outcome, LogFailedError):
                self.ctx.fatal(outcome)
                return
            if conn.open:  # the frames were bad: the peer's fault
                self._run(conn, conn.receiver.append_failed(str(outcome)))
        elif conn.open:
            self.durable_changed()
        if not conn.open and conn.appends == 0:
            self.conns.pop(cid, None)
        log = self.ctx.log
        if log.durable_end < log.log_end:
            self.ctx.request_sync()
        self.try_accept()

    def durable_changed(self) -> None:
        """The log's durable end may have moved: acknowledge on the slot's connection."""
        conn = self.conns.get(self.slot) if self.slot is not None else None
        log = self.ctx.log
        if conn is None or not conn.open or conn.receiver.durable_end >= log.durable_end:
            return
        if conn.receiver.phase is not Phase.STREAMING:
            return
        self._run(
            conn, conn.receiver.durable(log.durable_end, log.last_epoch, log.last_epoch_start)
        )

    def truncated(self, error: WalrepError | None) -> None:
        conn = next((c for c in self.conns.values() if c.truncating), None)
        if conn is None:
            return
        conn.truncating = False
        if isinstance(error, LogFailedError):
            self.ctx.fatal(error)
            return
        if isinstance(error, CommittedTruncationError):
            self.ctx.metrics["replication_divergence_refused"] += 1
            if conn.open:
                self._close(conn, f"operator action needed: {error}", by_peer=False)
            return
        if error is not None:
            self.ctx.fatal(error)
            return
        if conn.open:
            log = self.ctx.log
            self._run(
                conn, conn.receiver.truncated(log.log_end, log.last_epoch, log.last_epoch_start)
            )
