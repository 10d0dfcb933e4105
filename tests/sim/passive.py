"""The passive's side of event sync in the simulator: ``PassiveServer`` around ``Receiver``.

A real ``Receiver`` per incoming connection; one authenticated slot per node: a
connection that proved the secret (``Authenticated``) under an epoch that is not stale
closes the older one and takes the slot; then the shell makes everything written
durable and calls ``accept`` with the log as it stands (log end = durable end, last
epoch and where it starts, what it learnt is committed, highest epoch seen), which
rejects a stale active.
Appends go to the simulated log and are acknowledged through ``durable`` only after a
simulated fsync covers them. While the receiver's buffer is full the shell stops
reading (bytes wait in the connection's inbox: backpressure). A silent connection is
closed after ``PASSIVE_IDLE_TIMEOUT_MS``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tests.sim.settings import GROUP, MAX_MESSAGE_BYTES, PASSIVE_IDLE_TIMEOUT_MS, SECRET
from walrep.errors import PeerProtocolError, WalrepError
from walrep.replica.auth import NONCE_BYTES
from walrep.replica.messages import MessageReader, encode
from walrep.replica.receiver import (
    AppendFrames,
    Authenticated,
    Close,
    Count,
    Receiver,
    ReceiverAction,
    Send,
    TruncateLog,
)

if TYPE_CHECKING:
    from tests.sim.node import Node


@dataclass(slots=True)
class PassiveConn:
    cid: int
    receiver: Receiver
    reader: MessageReader
    last_heard_ms: int
    inbox: deque[bytes] = field(default_factory=deque)
    inbox_bytes: int = 0
    closed: bool = False


class PassiveShell:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.conns: dict[int, PassiveConn] = {}
        self.slot: int | None = None  # the one authenticated connection
        self.awaiting_accept: list[int] = []  # authenticated, accept() once durable
        self.highest_epoch = node.log.last_epoch  # as PassiveServer
        self.committed = 0  # highest commit offset learnt from an active

    def open_connection(self, cid: int) -> None:
        node = self.node
        settings = node.sim.settings
        receiver = Receiver(
            GROUP,
            node.name,
            SECRET,
            node.rng.randbytes(NONCE_BYTES),
            buffer_bytes_max=settings.receiver_buffer_bytes,
            buffer_events_max=settings.receiver_buffer_events,
        )
        conn = PassiveConn(cid, receiver, MessageReader(MAX_MESSAGE_BYTES), node.sched.now_ms)
        self.conns[cid] = conn
        self._run(conn, receiver.connected())

    def close_all(self, reason: str) -> None:
        for conn in list(self.conns.values()):
            self.close(conn, reason)

    def tick(self) -> None:
        now = self.node.sched.now_ms
        for conn in list(self.conns.values()):
            if now - conn.last_heard_ms > PASSIVE_IDLE_TIMEOUT_MS:
                self.node.sim.count("passive_idle_timeouts")
                self.close(conn, "idle")

    def on_data(self, conn: PassiveConn, data: bytes) -> None:
        conn.inbox.append(data)
        conn.inbox_bytes += len(data)
        conn.last_heard_ms = self.node.sched.now_ms
        self._pump(conn)

    def synced(self) -> None:
        """An fsync completed: acknowledge what is durable now, read on, maybe accept."""
        log = self.node.log
        conn = self.conns.get(self.slot) if self.slot is not None else None
        if conn is not None and conn.receiver.durable_end < conn.receiver.log_end:
            self._run(
                conn, conn.receiver.durable(log.durable_end, log.last_epoch, log.last_epoch_start)
            )
            self._pump(conn)
        self._maybe_accept()

    def _pump(self, conn: PassiveConn) -> None:
        """Read while the receiver wants data (backpressure: stop reading when full)."""
        while conn.inbox and not conn.closed and conn.receiver.wants_data():
            data = conn.inbox.popleft()
            conn.inbox_bytes -= len(data)
            try:
                messages = conn.reader.feed(data)
            except PeerProtocolError as e:
                self.node.sim.count("malformed_streams")
                self.close(conn, f"malformed: {e}")
                return
            for message in messages:
                self.node.sim.trace_message(self.node.name, "got", message)
                self._run(conn, conn.receiver.received(message))
                if conn.closed:
                    return

    def _run(self, conn: PassiveConn, actions: list[ReceiverAction]) -> None:
        node = self.node
        for action in actions:
            if isinstance(action, Send):
                if not conn.closed:
                    node.sim.trace_message(node.name, "sends", action.message)
                    node.net.send(conn.cid, node.name, encode(action.message))
            elif isinstance(action, AppendFrames):
                self._append(conn, action)
            elif isinstance(action, TruncateLog):
                node.sim.on_truncate(node, action.to_offset)
                node.log.truncate_after(action.to_offset)
                self._run(
                    conn,
                    conn.receiver.truncated(
                        node.log.log_end, node.log.last_epoch, node.log.last_epoch_start
                    ),
                )
            elif isinstance(action, Authenticated):
                self._authenticated(conn, action.epoch)
            elif isinstance(action, Count):
                node.sim.count(action.metric)
            elif isinstance(action, Close):
                self.close(conn, action.reason)
        r = conn.receiver
        self.committed = max(self.committed, r.committed)
        self.highest_epoch = max(self.highest_epoch, r.highest_epoch)
        node.known_committed = max(node.known_committed, r.committed)

    def _append(self, conn: PassiveConn, action: AppendFrames) -> None:
        node = self.node
        if conn.closed or self.slot != conn.cid:
            raise AssertionError(
                f"{node.name}: connection {conn.cid} appends without holding the slot "
                f"(slot: {self.slot}): two actives could write into this log"
            )
        try:
            node.log.append_frames(action.frames, action.base_offset)
        except WalrepError as e:
            node.sim.count("appends_refused_by_log")
            self._run(conn, conn.receiver.append_failed(str(e)))
            return
        if node.log.log_end != action.end_offset:
            node.sim.count("append_count_mismatch")
        node.request_sync()

    def _authenticated(self, conn: PassiveConn, epoch: int) -> None:
        """Take the slot (closing the older connection) unless the active is stale: it
        must not close the current one's connection, ``accept`` will reject it."""
        if epoch >= max(self.highest_epoch, self.node.log.last_epoch):
            old = self.conns.get(self.slot) if self.slot is not None else None
            if old is not None and old is not conn:
                self.close(old, "replaced by a newer connection")
            self.slot = conn.cid
        self.awaiting_accept.append(conn.cid)
        self.node.request_sync()
        self._maybe_accept()

    def _maybe_accept(self) -> None:
        """``accept`` once everything written is durable (PassiveServer syncs first)."""
        log = self.node.log
        if not self.awaiting_accept:
            return
        if log.durable_frames < len(log.frames):
            self.node.request_sync()
            return
        waiting, self.awaiting_accept = self.awaiting_accept, []
        for cid in waiting:
            conn = self.conns.get(cid)
            if conn is None:
                continue
            actions = conn.receiver.accept(
                log_end=log.durable_end,
                last_epoch=log.last_epoch,
                last_epoch_start=log.last_epoch_start,
                committed=min(self.committed, log.durable_end),
                highest_epoch=self.highest_epoch,
            )
            self.highest_epoch = max(self.highest_epoch, conn.receiver.highest_epoch)
            self._run(conn, actions)

    def close(self, conn: PassiveConn, reason: str) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.node.net.close(conn.cid, self.node.name)
        del self.conns[conn.cid]
        if self.slot == conn.cid:
            self.slot = None
