"""The passive side of log shipping: a pure state machine, one per connection.

Inputs: ``connected``, ``received(message)``, and the results of the storage actions
it asked for (``appended``, ``durable``, ``truncated``). Outputs, in order: messages
to send and storage actions for the shell. Ordering contracts:

* ``Ack(d)`` is sent only after the shell reported ``durable(d)``: **fsync before ack**.
* An ``Append`` is turned into ``AppendFrames`` only if its epoch is not lower than the
  highest epoch this node has seen and it starts exactly at the expected offset.
* A ``Truncate`` below the committed offset is refused (``Error`` + close): committed
  events are never dropped; that needs an operator.
* Appended-but-not-durable data is bounded by ``buffer_bytes_max`` and
  ``buffer_events_max`` (the seed's ``eventByteBufferQueueCapacity``); past either,
  ``wants_data()`` is False and the shell stops reading the socket, so TCP backpressure
  reaches the active (and through its window, its publishers).
"""

from __future__ import annotations

import enum
from collections import deque
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


@dataclass(frozen=True, slots=True)
class Send:
    message: Message


@dataclass(frozen=True, slots=True)
class AppendFrames:
    """Append these verbatim WAL frames (they start at ``base_offset``), then report."""

    frames: bytes
    base_offset: int
    end_offset: int


@dataclass(frozen=True, slots=True)
class TruncateLog:
    to_offset: int


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection; ``by_peer`` tells "the peer broke it" from "we closed it"."""

    reason: str
    by_peer: bool


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The active proved the secret: take over this node's one connection slot (close any
    older connection and wait for its appends), then call ``accept`` with the log state."""

    peer: str
    epoch: int


@dataclass(frozen=True, slots=True)
class Count:
    """Increment a metric (for example rejected handshakes by reason)."""

    metric: str


ReceiverAction = Send | AppendFrames | TruncateLog | Close | Count | Authenticated


class Phase(enum.Enum):
    AWAIT_HELLO = "await hello"
    AUTHENTICATED = "authenticated"  # waiting for the shell's accept()
    SYNCING = "syncing"  # handshake done; truncation may come before data
    STREAMING = "streaming"
    CLOSED = "closed"


class Receiver:
    def __init__(
        self,
        group: str,
        node_id: str,
        secret: bytes,
        nonce: bytes,
        *,
        buffer_bytes_max: int,
        buffer_events_max: int = 2**62,
    ) -> None:
        self.group = group
        self.node_id = node_id
        self._secret = secret
        self._nonce = nonce
        self.log_end = 0  # next offset expected (appended, maybe not durable yet)
        self.durable_end = 0
        self.last_epoch = 0
        self.last_epoch_start = 0
        self.committed = 0  # the active's commit offset as far as this log holds it
        self.told_committed = 0  # the highest commit offset the active told (unclamped)
        self.highest_epoch = 0
        self._hello_nonce = b""
        self.buffer_bytes_max = buffer_bytes_max
        self.buffer_events_max = buffer_events_max  # seed: eventByteBufferQueueCapacity
        self.pending_bytes = 0
        self.pending_events = 0
        self._pending: deque[tuple[int, int, int]] = deque()  # (end, bytes, events), not durable
        self.phase = Phase.AWAIT_HELLO
        self.peer: str | None = None

    def connected(self) -> list[ReceiverAction]:
        return [Send(Challenge(self.node_id, self._nonce))]

    def wants_data(self) -> bool:
        """False while the buffer of not-yet-durable bytes is full: stop reading."""
        return (
            self.pending_bytes < self.buffer_bytes_max
            and self.pending_events < self.buffer_events_max
        )

    def received(self, message: Message) -> list[ReceiverAction]:
        if self.phase is Phase.CLOSED:
            return []
        if self.phase is Phase.AWAIT_HELLO:
            if isinstance(message, Hello):
                return self._hello(message)
            return self._close_by_peer("protocol", f"expected Hello, got {type(message).__name__}")
        if self.phase is Phase.AUTHENTICATED:
            return self._close_by_peer("protocol", f"{type(message).__name__} before HelloOk")
        if isinstance(message, Truncate):
            return self._truncate(message)
        if isinstance(message, Append):
            return self._append(message)
        if isinstance(message, Heartbeat):  # answered with an Ack: the active hears from us
            # Sent only once the active streams to us (the prefix agreed): an idle pair
            # streams from its first heartbeat, not from its first Append.
            self.phase = Phase.STREAMING
            self._told(message.commit_offset)
            return [Send(Ack(self.durable_end, self.last_epoch, self.last_epoch_start))]
        if isinstance(message, Error):
            self.phase = Phase.CLOSED
            return [Close(f"active reported {message.code}: {message.message}", by_peer=True)]
        return self._close_by_peer("protocol", f"unexpected {type(message).__name__}")

    def _hello(self, hello: Hello) -> list[ReceiverAction]:
        expected = auth.proof(
            self._secret, "active", self.group, hello.node, self.node_id, self._nonce, hello.nonce
        )
        if hello.group != self.group:
            return self._reject("wrong_group", f"group {hello.group!r} is not {self.group!r}")
        if hello.node == self.node_id:
            return self._reject("wrong_node", f"node id {hello.node!r} is this node's own id")
        if not auth.verify(expected, hello.proof):
            return self._reject("auth", "authentication failed")
        self.peer = hello.node
        self.highest_epoch = hello.epoch
        self._hello_nonce = hello.nonce
        self.phase = Phase.AUTHENTICATED
        return [Authenticated(hello.node, hello.epoch)]

    def accept(
        self,
        *,
        log_end: int,
        last_epoch: int,
        last_epoch_start: int,
        committed: int,
        highest_epoch: int,
    ) -> list[ReceiverAction]:
        """The shell holds the connection slot; this is the log as it stands now."""
        assert self.phase is Phase.AUTHENTICATED and self.peer is not None
        seen = max(highest_epoch, last_epoch)
        if self.highest_epoch < seen:
            return self._reject("stale_epoch", f"epoch {self.highest_epoch} < highest seen {seen}")
        self.log_end = self.durable_end = log_end
        self.last_epoch = last_epoch
        self.last_epoch_start = last_epoch_start
        self.committed = committed
        self.told_committed = committed
        self.phase = Phase.SYNCING
        mine = auth.proof(
            self._secret,
            "passive",
            self.group,
            self.peer,
            self.node_id,
            self._nonce,
            self._hello_nonce,
        )
        return [Send(HelloOk(self.node_id, log_end, last_epoch, last_epoch_start, committed, mine))]

    def _truncate(self, message: Truncate) -> list[ReceiverAction]:
        if self._pending:
            return self._close_by_peer("protocol", "Truncate while appends are in flight")
        if message.to_offset < self.committed:
            reason = (
                f"divergence below the committed offset: asked to truncate to {message.to_offset}, "
                f"{self.committed} is committed here (operator action needed)"
            )
            self.phase = Phase.CLOSED
            return [
                Count("replication_divergence_refused"),
                Send(Error("divergence", reason)),
                Close(reason, False),
            ]
        if message.to_offset >= self.log_end:
            return [Send(Ack(self.durable_end, self.last_epoch, self.last_epoch_start))]
        return [TruncateLog(message.to_offset)]

    def truncated(
        self, log_end: int, last_epoch: int, last_epoch_start: int
    ) -> list[ReceiverAction]:
        """The shell cut the log; tell the active where we stand now."""
        self.log_end = self.durable_end = log_end
        self.last_epoch = last_epoch
        self.last_epoch_start = last_epoch_start
        return [Send(Ack(log_end, last_epoch, last_epoch_start))]

    def _append(self, message: Append) -> list[ReceiverAction]:
        if message.epoch < self.highest_epoch:
            return self._close_by_peer(
                "stale_epoch", f"Append under epoch {message.epoch} < {self.highest_epoch}"
            )
        if message.base_offset != self.log_end or message.count == 0:
            return self._close_by_peer(
                "gap", f"Append at {message.base_offset}, expected {self.log_end}"
            )
        self.phase = Phase.STREAMING
        self.highest_epoch = message.epoch
        end = message.base_offset + message.count
        self.log_end = end
        self.pending_bytes += len(message.frames)
        self.pending_events += message.count
        self._pending.append((end, len(message.frames), message.count))
        self._told(message.commit_offset)
        return [AppendFrames(message.frames, message.base_offset, end)]

    def _told(self, commit_offset: int) -> None:
        self.told_committed = max(self.told_committed, commit_offset)
        self.committed = max(self.committed, min(commit_offset, self.durable_end))

    def durable(
        self, end_offset: int, last_epoch: int, last_epoch_start: int
    ) -> list[ReceiverAction]:
        """Everything below ``end_offset`` is fsynced: acknowledge it (cumulative)."""
        while self._pending and self._pending[0][0] <= end_offset:
            _, size, count = self._pending.popleft()
            self.pending_bytes -= size
            self.pending_events -= count
        self.durable_end = max(self.durable_end, end_offset)
        if last_epoch > self.last_epoch:
            self.last_epoch, self.last_epoch_start = last_epoch, last_epoch_start
        if self.phase is Phase.CLOSED:
            return []
        return [Send(Ack(self.durable_end, self.last_epoch, self.last_epoch_start))]

    def append_failed(self, reason: str) -> list[ReceiverAction]:
        """The log refused the frames (bad CRC, gap, stale epoch): the peer sent garbage."""
        return self._close_by_peer("bad_frames", reason)

    def _reject(self, code: str, reason: str) -> list[ReceiverAction]:
        self.phase = Phase.CLOSED
        return [
            Count(f"replication_rejected_{code}"),
            Send(Reject(reason)),
            Close(reason, by_peer=True),
        ]

    def _close_by_peer(self, code: str, reason: str) -> list[ReceiverAction]:
        self.phase = Phase.CLOSED
        return [
            Count(f"replication_errors_{code}"),
            Send(Error(code, reason)),
            Close(reason, by_peer=True),
        ]
