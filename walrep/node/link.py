"""One event-sync connection's framing and deadlines (pure).

A ``Link`` decodes the bytes of one connection into messages and knows when the
connection has overstayed:

* before the peer has authenticated, a message may be at most
  ``preauth_message_bytes_max`` (a Hello is a few hundred bytes): an unauthenticated
  peer cannot make this node buffer a full 16 MiB message;
* the peer must authenticate within ``handshake_timeout_ms`` of the connection opening;
* the connection is idle once no *complete message* has arrived for ``idle_timeout_ms``:
  a trickle of bytes that never completes a message does not keep it open.
"""

from __future__ import annotations

from walrep.node.settings import EdgeLimits
from walrep.replica.messages import Message, MessageReader


class Link:
    def __init__(self, cid: int, now_ms: int, limits: EdgeLimits) -> None:
        self.cid = cid
        self.opened_ms = now_ms
        self.last_message_ms = now_ms
        self.authenticated = False
        self._limits = limits
        self._reader = MessageReader(limits.preauth_message_bytes_max)

    def feed(self, data: bytes, now_ms: int) -> list[Message]:
        """Messages completed by ``data``; raises ``PeerProtocolError`` if malformed."""
        messages = self._reader.feed(data)
        if messages:
            self.last_message_ms = now_ms
        return messages

    def authenticate(self, max_message_bytes: int) -> None:
        """The peer proved the secret: full-size messages from now on."""
        self.authenticated = True
        self._reader.max_message_bytes = max_message_bytes

    def overdue(self, now_ms: int) -> str | None:
        """Why the connection must be closed now, or None."""
        limits = self._limits
        if not self.authenticated and now_ms - self.opened_ms > limits.handshake_timeout_ms:
            return f"not authenticated within {limits.handshake_timeout_ms} ms"
        if now_ms - self.last_message_ms > limits.idle_timeout_ms:
            return f"no complete message for {limits.idle_timeout_ms} ms"
        return None

    @property
    def buffered_bytes(self) -> int:
        return self._reader.buffered_bytes
