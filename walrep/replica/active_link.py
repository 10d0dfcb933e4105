"""The active's side of event sync: the asyncio shell around ``Shipper``.

``ActiveLink`` keeps one connection to the passive (reconnecting with exponential
backoff), feeds the shipper with messages, ticks and the growth of the local log, and
carries out its actions: WAL reads, sends, in-sync records through the coordinator
(retried until they succeed or the lease is gone), and the committed offset.

``ReplicatedLog`` is what the ingest path uses: ``append`` returns only once the events
are committed — durable here and, while the standby is in sync, on the standby too.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

from walrep.errors import ClosedError, PeerProtocolError, WalrepError
from walrep.log.frame import Event
from walrep.log.types import AppendResult
from walrep.log.wal import Wal
from walrep.replica.auth import NONCE_BYTES
from walrep.replica.messages import MessageReader, encode
from walrep.replica.passive_server import READ_BYTES, ReplicaSettings
from walrep.replica.receiver import Close, Count, Send
from walrep.replica.shipper import Committed, ReadFrames, RecordInSync, Shipper, ShipperAction

log = logging.getLogger(__name__)
TICK_S = 0.02
CLOSE_GRACE_S = 0.2  # a connection we give up on is aborted if not closed by then


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class ActiveLink:
    def __init__(
        self,
        wal: Wal,
        shipper: Shipper,
        settings: ReplicaSettings,
        *,
        peer_address: Callable[[], Awaitable[tuple[str, int] | None]],
        record_in_sync: Callable[[str, bool], Awaitable[bool]],
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout_ms: int = 1000,
        backoff_max_ms: int = 2000,
    ) -> None:
        self.wal = wal
        self.shipper = shipper
        self.settings = settings
        self.metrics: Counter[str] = Counter()
        self._peer_address = peer_address
        self._record_in_sync = record_in_sync
        self._ssl = ssl_context
        self._connect_timeout_s = connect_timeout_ms / 1000
        self._backoff_max_s = backoff_max_ms / 1000
        self._writer: asyncio.StreamWriter | None = None
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []  # (offset, seq, future)
        self._seq = 0
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def committed(self) -> int:
        return self.shipper.committed

    # --- the ingest side --------------------------------------------------------------------

    def notify_appended(self) -> None:
        """The local log grew (and was forced): ship it, and maybe commit it."""
        self._run(self.shipper.log_grew(self.wal.log_end))
        self._run(self.shipper.local_durable_to(self.wal.durable_end))

    async def wait_committed(self, offset: int) -> None:
        """Return once every offset below ``offset`` is committed."""
        if self.shipper.committed >= offset:
            return
        if self._stopping:
            raise ClosedError("event sync is stopped: the offset will not be committed here")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        bisect.insort(self._waiters, (offset, self._seq, future))
        await future

    def _commit(self, offset: int) -> None:
        while self._waiters and self._waiters[0][0] <= offset:
            future = self._waiters.pop(0)[2]
            if not future.done():
                future.set_result(None)

    # --- the connection ---------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, reconnect with backoff, until ``stop``."""
        backoff_s = 0.05
        # Ticks also while disconnected: a standby that never connects is lost on time too.
        ticker = asyncio.create_task(self._tick())
        try:
            while not self._stopping:
                address = await self._peer_address()
                if address is not None:
                    try:
                        await self._session(address)
                        backoff_s = 0.05
                    except (OSError, TimeoutError, PeerProtocolError) as e:
                        self.metrics["replication_connect_failures"] += 1
                        log.info("event sync to %s:%s: %s", address[0], address[1], e)
                if not self._stopping:
                    await asyncio.sleep(backoff_s)
                    backoff_s = min(backoff_s * 2, self._backoff_max_s)
        finally:
            ticker.cancel()

    async def stop(self) -> None:
        self._stopping = True
        if self._writer is not None:
            _drop(self._writer)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        waiters, self._waiters = self._waiters, []
        for _, _, future in waiters:  # nothing commits any more: do not leave them hanging
            if not future.done():
                future.set_exception(ClosedError("event sync stopped before the commit"))

    async def _session(self, address: tuple[str, int]) -> None:
        async with asyncio.timeout(self._connect_timeout_s):
            reader, writer = await asyncio.open_connection(*address, ssl=self._ssl)
        if self._stopping:  # stop() came while looking up the peer or connecting
            _drop(writer)
            return
        self._writer = writer
        self._run(self.shipper.connected(monotonic_ms(), os.urandom(NONCE_BYTES)))
        messages = MessageReader(self.settings.max_message_bytes)
        reason = "connection closed by the passive"
        try:
            while self._writer is writer:
                data = await reader.read(READ_BYTES)
                if not data:
                    break
                for message in messages.feed(data):
                    self._run(self.shipper.received(message, monotonic_ms()))
        except PeerProtocolError as e:
            self.metrics["replication_errors_malformed"] += 1
            reason = str(e)
        finally:
            if self._writer is writer:
                self._writer = None
                self._run(self.shipper.disconnected(reason))
            writer.close()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self._run(self.shipper.tick(monotonic_ms()))

    # --- actions -----------------------------------------------------------------------------

    def _run(self, actions: list[ShipperAction]) -> None:
        for action in actions:
            if isinstance(action, Send):
                if self._writer is not None:
                    self._writer.write(encode(action.message))
            elif isinstance(action, ReadFrames):
                self._read(action)
            elif isinstance(action, Committed):
                self._commit(action.offset)
            elif isinstance(action, RecordInSync):
                # Stopping is not losing the standby: recording it out of sync now would
                # only keep it from taking over. Commits stay frozen instead.
                if not self._stopping:
                    self._spawn(self._record(action))
            elif isinstance(action, Count):
                self.metrics[action.metric] += 1
            elif isinstance(action, Close):
                level = logging.WARNING if action.by_peer else logging.INFO
                log.log(level, "event sync to %s closed: %s", self.shipper.standby, action.reason)
                if self._writer is not None:
                    _drop(self._writer)
                    self._writer = None

    def _read(self, action: ReadFrames) -> None:
        """Whole frames from the local log, at least one, within the byte budget."""
        parts: list[bytes] = []
        size, base, end = 0, action.from_offset, action.from_offset
        try:
            for frame in self.wal.frames(action.from_offset):
                if parts and size + len(frame.data) > action.max_bytes:
                    break
                if not parts:
                    base = frame.header.base_offset
                parts.append(frame.data)
                size += len(frame.data)
                end = frame.header.end_offset
        except WalrepError as e:  # deleted by retention, or damaged: this session cannot go on
            log.error("event sync: reading the log from %d failed: %s", action.from_offset, e)
            parts = []
        if not parts:
            # Not the shipper's own decision: tell it the connection is gone (the standby
            # may be lost), then drop it; the session then ends without a second report.
            reason = f"no frames readable from {action.from_offset}"
            self._run([*self.shipper.disconnected(reason), Close(reason, by_peer=False)])
            return
        self._run(self.shipper.frames_read(base, end, b"".join(parts), monotonic_ms()))

    async def _record(self, action: RecordInSync) -> None:
        delay_s = 0.05
        while True:
            try:
                ok = await self._record_in_sync(action.standby, action.in_sync)
                break
            except WalrepError as e:  # the database: try again; commits stay frozen meanwhile
                log.warning("recording %s in_sync=%s failed: %s", action.standby, action.in_sync, e)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, self._backoff_max_s)
        self._run(self.shipper.in_sync_recorded(action.in_sync, ok))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _drop(writer: asyncio.StreamWriter) -> None:
    """Close a connection we give up on without waiting for the peer: a graceful close
    (a last Error may still reach it), aborted if the peer does not take the buffered
    bytes promptly. The session waits for the close, and a hung or partitioned peer would
    otherwise hold it (no reconnect, no stop) until TCP gives up, minutes later."""
    writer.close()
    asyncio.get_running_loop().call_later(CLOSE_GRACE_S, writer.transport.abort)


class ReplicatedLog:
    """The active's log: an append returns once its events are committed."""

    def __init__(self, wal: Wal, link: ActiveLink) -> None:
        self.wal = wal
        self.link = link

    async def append(self, events: Sequence[Event], *, epoch: int) -> AppendResult:
        result = await self.wal.append(events, epoch=epoch)
        self.link.notify_appended()
        await self.link.wait_committed(result.end_offset)
        return result

    async def close(self) -> None:
        await self.link.stop()
        with contextlib.suppress(WalrepError):
            await self.wal.aclose()
