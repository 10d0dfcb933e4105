"""The passive's event-sync TCP server: the asyncio shell around ``Receiver``.

One authenticated connection at a time: a newer one (after it proved the secret)
closes the older one and waits for that one's appends before its handshake completes,
so two actives never write into this log at once. Frames are appended with the log's
group commit; an ``Ack`` reports ``wal.durable_end`` — **fsync before ack**.

Backpressure: while the receiver's buffer of not-yet-durable bytes is full the
connection is not read, so the kernel's TCP window fills and the active slows down.
A connection silent for ``idle_timeout_ms`` is closed (the active heartbeats).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections import Counter
from dataclasses import dataclass

from walrep.errors import LogError, PeerProtocolError, WalrepError
from walrep.log.wal import Wal
from walrep.replica.auth import NONCE_BYTES
from walrep.replica.messages import DEFAULT_MAX_MESSAGE_BYTES, MessageReader, encode
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

log = logging.getLogger(__name__)
READ_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class ReplicaSettings:
    """What both ends of event sync need; the secret is never logged."""

    group: str
    node_id: str
    secret: bytes
    buffer_bytes_max: int = 32 * 1024 * 1024
    buffer_events_max: int = 20_000  # seed: eventByteBufferQueueCapacity
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    idle_timeout_ms: int = 3000

    def __repr__(self) -> str:
        return f"ReplicaSettings(group={self.group!r}, node_id={self.node_id!r}, secret=***)"


class _Connection:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, receiver: Receiver
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.receiver = receiver
        self.appends: set[asyncio.Task[None]] = set()  # pending only
        self.progress = asyncio.Event()
        self.closed = False
        self.done = asyncio.Event()

    def is_open(self) -> bool:
        return not self.closed


class PassiveServer:
    def __init__(
        self, wal: Wal, settings: ReplicaSettings, *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.wal = wal
        self.settings = settings
        self.ssl_context = ssl_context
        self.metrics: Counter[str] = Counter()
        self.committed = 0  # highest commit offset learnt from an active
        self.highest_epoch = wal.last_epoch
        self._server: asyncio.Server | None = None
        self._current: _Connection | None = None
        self._slot = asyncio.Lock()
        self._connections: set[_Connection] = set()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._accept, host, port, ssl=self.ssl_context)
        address = self._server.sockets[0].getsockname()
        return str(address[0]), int(address[1])

    async def stop(self) -> None:
        """Stop listening, close every connection, wait for their appends to finish."""
        if self._server is not None:
            self._server.close()
        connections = list(self._connections)
        for conn in connections:
            self._close(conn)
        await asyncio.gather(*(conn.done.wait() for conn in connections))
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        s = self.settings
        receiver = Receiver(
            s.group,
            s.node_id,
            s.secret,
            os.urandom(NONCE_BYTES),
            buffer_bytes_max=s.buffer_bytes_max,
            buffer_events_max=s.buffer_events_max,
        )
        conn = _Connection(reader, writer, receiver)
        self._connections.add(conn)
        try:
            await self._serve(conn)
        except (OSError, asyncio.IncompleteReadError) as e:
            self.metrics["replication_connection_errors"] += 1
            log.info("event sync from %s: connection lost: %s", receiver.peer, e)
        finally:
            self._close(conn)
            await asyncio.gather(*conn.appends, return_exceptions=True)
            if self._current is conn:
                self._current = None
            conn.done.set()
            self._connections.discard(conn)

    async def _serve(self, conn: _Connection) -> None:
        messages = MessageReader(self.settings.max_message_bytes)
        await self._run(conn, conn.receiver.connected())
        while not conn.closed:
            while not conn.receiver.wants_data() and not conn.closed:
                conn.progress.clear()
                await conn.progress.wait()  # backpressure: let TCP's window fill
            try:
                async with asyncio.timeout(self.settings.idle_timeout_ms / 1000):
                    data = await conn.reader.read(READ_BYTES)
            except TimeoutError:
                self.metrics["replication_idle_timeouts"] += 1
                return
            if not data:
                return
            try:
                batch = messages.feed(data)
            except PeerProtocolError as e:
                self.metrics["replication_errors_malformed"] += 1
                log.warning("event sync from %s: %s; closing", conn.receiver.peer, e)
                return
            for message in batch:
                await self._run(conn, conn.receiver.received(message))
                # A Heartbeat also carries the commit offset: keep it beyond this connection.
                self.committed = max(self.committed, conn.receiver.committed)
                if not conn.is_open():  # an action may have closed it
                    return

    async def _run(self, conn: _Connection, actions: list[ReceiverAction]) -> None:
        for action in actions:
            if isinstance(action, Send):
                if not conn.closed:
                    conn.writer.write(encode(action.message))
                    await conn.writer.drain()
            elif isinstance(action, AppendFrames):
                task = asyncio.create_task(self._append(conn, action))
                conn.appends.add(task)
                task.add_done_callback(conn.appends.discard)
            elif isinstance(action, TruncateLog):
                await asyncio.gather(*conn.appends, return_exceptions=True)
                self.wal.truncate_after(action.to_offset)
                await self._run(
                    conn,
                    conn.receiver.truncated(
                        self.wal.log_end, self.wal.last_epoch, self.wal.last_epoch_start
                    ),
                )
            elif isinstance(action, Authenticated):
                # A stale active (accept() below rejects it) must not close the current
                # one's connection first: it could keep the standby from ever staying in sync.
                if action.epoch >= max(self.highest_epoch, self.wal.last_epoch):
                    await self._take_slot(conn)
                if self.wal.log_end != self.wal.durable_end:
                    await self.wal.sync()
                accept = conn.receiver.accept(
                    log_end=self.wal.durable_end,
                    last_epoch=self.wal.last_epoch,
                    last_epoch_start=self.wal.last_epoch_start,
                    committed=min(self.committed, self.wal.durable_end),
                    highest_epoch=self.highest_epoch,
                )
                self.highest_epoch = max(self.highest_epoch, conn.receiver.highest_epoch)
                await self._run(conn, accept)
            elif isinstance(action, Count):
                self.metrics[action.metric] += 1
            elif isinstance(action, Close):
                level = logging.WARNING if action.by_peer else logging.INFO
                log.log(level, "event sync from %s closed: %s", conn.receiver.peer, action.reason)
                self._close(conn)

    async def _take_slot(self, conn: _Connection) -> None:
        """Become the one connection: close the older one and wait until it is done."""
        async with self._slot:
            old = self._current
            if old is not None and old is not conn:
                self._close(old)
                await old.done.wait()
            self._current = conn

    async def _append(self, conn: _Connection, action: AppendFrames) -> None:
        try:
            await self.wal.append_frames(action.frames)
        except WalrepError as e:
            if not isinstance(e, LogError) or conn.closed:
                log.warning("event sync: append refused: %s", e)
            await self._run(conn, conn.receiver.append_failed(str(e)))
            return
        finally:
            conn.progress.set()
        self.committed = max(self.committed, conn.receiver.committed)
        self.highest_epoch = max(self.highest_epoch, conn.receiver.highest_epoch)
        await self._run(
            conn,
            conn.receiver.durable(
                self.wal.durable_end, self.wal.last_epoch, self.wal.last_epoch_start
            ),
        )

    def _close(self, conn: _Connection) -> None:
        if not conn.closed:
            conn.closed = True
            conn.progress.set()
            with contextlib.suppress(Exception):
                conn.writer.close()
