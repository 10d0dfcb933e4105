"""The active's side of event sync in the simulator: ``ActiveLink`` around a real ``Shipper``.

One ``ActiveShell`` lives for one term of a leader (from ``Promoted`` to ``Fence`` or a
crash): a connection loop to the peer with a connect timeout and exponential backoff,
the shipper's actions carried out in order (WAL reads from the simulated log, sends on
the simulated network, in-sync records through the simulated store, retried on store
errors, and ``Committed``, which acknowledges client batches). Every callback checks
that its shell is still the node's current one, so nothing of an old term acts late.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from tests.sim.settings import (
    CALL_TIMEOUT_MS,
    CONNECT_TIMEOUT_MS,
    GROUP,
    LEASE,
    MAX_MESSAGE_BYTES,
    RECONNECT_MS,
    SECRET,
)
from tests.sim.world import run_now
from walrep.errors import PeerProtocolError
from walrep.replica.auth import NONCE_BYTES
from walrep.replica.messages import MessageReader, encode
from walrep.replica.receiver import Close, Count, Send
from walrep.replica.shipper import (
    Committed,
    ReadFrames,
    RecordInSync,
    Shipper,
    ShipperAction,
)

if TYPE_CHECKING:
    from tests.sim.node import Node


class ActiveShell:
    def __init__(self, node: Node, epoch: int) -> None:
        self.node = node
        self.shipper = Shipper(
            GROUP,
            node.name,
            SECRET,
            epoch=epoch,
            epoch_end=node.log.epoch_end,
            log_start=0,
            log_end=node.log.log_end,
            durable_end=node.log.durable_end,
            standby=node.peer,
            standby_in_sync=False,  # nobody is in sync under a new epoch (store contract)
            config=node.sim.settings.shipper,
        )
        self.cid: int | None = None  # the established connection
        self.reader: MessageReader | None = None
        self.connecting: int | None = None
        self.backoff_ms = RECONNECT_MS[0]

    @property
    def current(self) -> bool:
        return self.node.active is self

    def cids(self) -> list[int]:
        return [c for c in (self.cid, self.connecting) if c is not None]

    def stop(self) -> None:
        """The term ended (fenced): close the connection; callbacks find us not current."""
        for cid in self.cids():
            self.node.net.close(cid, self.node.name)
        self.cid = self.connecting = None
        self.reader = None

    def tick(self) -> None:
        self.ship(self.shipper.tick(self.node.local_ms()))

    # --- connecting ---------------------------------------------------------------------

    def connect(self) -> None:
        if not self.current or self.cid is not None or self.connecting is not None:
            return
        node = self.node
        self.connecting = cid = node.net.connect(node.name, node.peer)
        node.after(CONNECT_TIMEOUT_MS, "connect_timeout", self._connect_timeout, cid)

    def _connect_timeout(self, cid: int) -> None:
        """``open_connection`` under ``asyncio.timeout(connect_timeout)``."""
        if self.current and cid == self.connecting:
            self.node.net.cut(cid, ())
            self.on_connected(cid, False)

    def _reconnect_later(self) -> None:
        self.node.after(self.backoff_ms, "reconnect", self.connect)
        self.backoff_ms = min(self.backoff_ms * 2, RECONNECT_MS[1])

    def on_connected(self, cid: int, ok: bool) -> None:
        node = self.node
        if not self.current or cid != self.connecting:
            if ok:
                node.net.close(cid, node.name)
            return
        self.connecting = None
        if not ok:
            node.sim.count("connect_failures")
            self._reconnect_later()
            return
        node.sim.count("connections")
        self.cid = cid
        self.reader = MessageReader(MAX_MESSAGE_BYTES)
        self.backoff_ms = RECONNECT_MS[0]
        self.ship(self.shipper.connected(node.local_ms(), node.rng.randbytes(NONCE_BYTES)))

    # --- the connection -----------------------------------------------------------------

    def on_data(self, data: bytes) -> None:
        assert self.reader is not None and self.cid is not None
        cid = self.cid
        try:
            messages = self.reader.feed(data)
        except PeerProtocolError as e:
            self.node.sim.count("malformed_streams")
            self.lost(f"malformed: {e}")
            return
        for message in messages:
            if cid != self.cid or not self.current:
                return
            self.node.sim.trace_message(self.node.name, "got", message)
            self.ship(self.shipper.received(message, self.node.local_ms()))

    def lost(self, reason: str) -> None:
        """The connection broke under us (peer closed, reset, garbage): tell the shipper."""
        assert self.cid is not None
        self.node.net.close(self.cid, self.node.name)
        self.cid = None
        self.reader = None
        self.ship(self.shipper.disconnected(reason))
        self._reconnect_later()

    # --- actions --------------------------------------------------------------------------

    def ship(self, actions: list[ShipperAction]) -> None:
        """Carry out shipper actions in order (depth first, like ActiveLink._run)."""
        node = self.node
        todo = deque(actions)
        while todo and self.current:  # a Fence on the way ends the term at once
            action = todo.popleft()
            if isinstance(action, Send):
                if self.cid is not None:
                    node.sim.trace_message(node.name, "sends", action.message)
                    node.net.send(self.cid, node.name, encode(action.message))
            elif isinstance(action, ReadFrames):
                read = node.log.read_frames(action.from_offset, action.max_bytes)
                if read is None:
                    todo.appendleft(Close(f"no frames from {action.from_offset}", by_peer=False))
                    continue
                base, end, data = read
                more = self.shipper.frames_read(base, end, data, node.local_ms())
                todo.extendleft(reversed(more))
            elif isinstance(action, Committed):
                node.known_committed = max(node.known_committed, action.offset)
                node.ack_clients()
            elif isinstance(action, RecordInSync):
                self._record_in_sync(action, RECONNECT_MS[0])
            elif isinstance(action, Count):
                node.sim.count(action.metric)
            elif isinstance(action, Close):
                node.sim.count("active_closes")
                if self.cid is not None:
                    node.net.close(self.cid, node.name)
                    self.cid = None
                    self.reader = None
                    self.backoff_ms = RECONNECT_MS[0]
                    self._reconnect_later()

    def _record_in_sync(self, action: RecordInSync, backoff_ms: int) -> None:
        """``Coordinator.set_in_sync``, retried on store errors (``ActiveLink._record``)."""
        node = self.node
        if not self.current:
            return
        if not node.holds_lease():
            self.ship(self.shipper.in_sync_recorded(action.in_sync, False))
            return
        epoch, store = node.machine.epoch, node.sim.store

        def execute() -> bool:
            return run_now(
                store.set_in_sync(
                    GROUP, node.name, epoch, action.standby, action.in_sync, LEASE.lease_ttl_ms
                )
            )

        def done(ok: bool | None) -> None:
            if not self.current:
                return
            if ok is None:
                retry = min(backoff_ms * 2, RECONNECT_MS[1])
                node.after(backoff_ms, "record_retry", self._record_in_sync, action, retry)
                return
            if not ok:
                node.lease(node.machine.lost(epoch, "in-sync record refused"))
            if self.current:
                node.sim.note(f"{node.name} recorded {action.standby} in_sync={action.in_sync}")
                self.ship(self.shipper.in_sync_recorded(action.in_sync, ok and node.holds_lease()))

        node.sim.store_link.call(node.name, execute, node.guard(done), CALL_TIMEOUT_MS)
