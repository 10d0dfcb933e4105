"""The asyncio executor of the node core: a walrep node in this process.

``Node`` opens the node's log, binds its event-sync port, creates the ``NodeCore`` and
then only carries out the core's effects and feeds their results back: sockets, store
calls with timeouts, log appends, reads, syncs and truncations, the publisher futures.
Every decision is the core's (``walrep.node.core``); this module decides nothing.

Mechanics, stated once:

* Effects run from one FIFO queue (``_feed``): an input's effects are appended, and an
  effect whose result is known at once (a read, a truncation) feeds its input back into
  the same queue. Nothing recurses, however large the window.
* Background work (store calls, appends of replicated frames, syncs, connects, socket
  readers, the tick loop) runs in supervised tasks: one that dies with an unexpected
  exception fails the node loudly (``InternalError``: fenced, lease released, logged),
  and every task is awaited on stop.
* A connection is read only while the core wants its data (backpressure: TCP's window
  fills and the active's sends stop).
* Appends: ``append()`` asks the core (admission); once admitted it appends under the
  epoch the core gave, reports the outcome, and waits for the core's ``Acked`` or
  ``Failed``. A publisher cancelled mid-append still has its append settled and reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import ssl
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from walrep.config import WalrepConfig
from walrep.errors import ClosedError, InternalError, NotActiveError, WalrepError
from walrep.log.frame import EncodedBatch, Event
from walrep.log.fsutil import FileOps
from walrep.log.types import AppendResult
from walrep.log.wal import Wal
from walrep.node import effects as fx
from walrep.node.apply import apply_committed
from walrep.node.core import NodeCore
from walrep.node.engine_host import EngineHost
from walrep.node.queue import EffectQueue
from walrep.node.reads import read_frames
from walrep.node.role import Role
from walrep.node.settings import NodeSettings, node_settings
from walrep.node.stores import run_store_op, sql_store
from walrep.replica.auth import NONCE_BYTES
from walrep.replica.shipper import Standby
from walrep.replica.store import CoordinationStore

log = logging.getLogger("walrep.node")
READ_BYTES = 256 * 1024
CLOSE_GRACE_S = 0.2  # a connection we close is aborted if the peer does not take its bytes


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class _Request:
    """One publisher append in flight."""

    __slots__ = ("admitted", "done", "epoch", "events")

    def __init__(
        self, events: Sequence[Event] | EncodedBatch, done: asyncio.Future[AppendResult]
    ) -> None:
        self.events = events
        self.epoch: int | None = None
        self.admitted: asyncio.Future[int] | None = None
        self.done = done


class _Conn:
    __slots__ = ("reader", "task", "writer")

    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None  # the connect, then the reader


class Node:
    """A walrep node: ``await start()``, ``append()``, ``await stop()``.

    Build it from a configuration (``Node.from_config``) or from settings, a data
    directory and a store (tests, benchmarks). ``listen`` is the event-sync address to
    bind (port 0: any free port, which is then the advertised one). ``file_ops`` replaces
    the log's file writes and forces (``Wal.open(..., file_ops=...)``): the fault seam of
    tests that make the node's own disk fail; None (production) calls ``os``.
    """

    def __init__(
        self,
        settings: NodeSettings,
        data_dir: str | Path,
        store: CoordinationStore,
        *,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        clock_ms: Callable[[], int] = monotonic_ms,
        own_store: bool = False,
        file_ops: FileOps | None = None,
        engine: EngineHost | None = None,
    ) -> None:
        self.settings = settings
        # The engine applies committed records (``Apply``) from its own position (a
        # restored snapshot's offset, or 0); the host does its IO (walrep.node.engine_host).
        self.engine_host = engine
        if engine is not None:
            engine.on_failure = self._engine_failed
        self.data_dir = Path(data_dir)
        self.store = store
        self._listen = listen
        self._server_ssl = server_ssl
        self._client_ssl = client_ssl
        self._clock_ms = clock_ms
        self._own_store = own_store
        self._file_ops = file_ops  # None: the real os calls (see walrep.log.fsutil)
        self.wal: Wal | None = None
        self.core: NodeCore | None = None
        self.address: tuple[str, int] | None = None  # the bound event-sync address
        self.failure: WalrepError | None = None
        self._server: asyncio.Server | None = None
        self._effects = EffectQueue(self._carry_out)
        self._conns: dict[int, _Conn] = {}
        self._requests: dict[int, _Request] = {}
        self._next_request = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._changed: asyncio.Future[None] | None = None  # resolved after every input
        self._wake = asyncio.Event()
        self._sleeping_until_ms = 0  # the tick loop's deadline while it sleeps
        self._stopping = False
        self._stopped = asyncio.Event()
        self._start_done = asyncio.Event()  # clear while start() runs
        self._start_done.set()
        self.steps: list[fx.StepDone] = []  # promotion steps, most recent last (bounded)

    @classmethod
    def from_config(
        cls,
        config: WalrepConfig,
        *,
        engine: EngineHost | None = None,
        file_ops: FileOps | None = None,
    ) -> Node:
        """A node as ``walrep node start`` runs it: settings, store and TLS from config
        (``walrep.node.process`` adds the engine, built from the same config, and its
        timed file seam)."""
        from walrep.replica.tls import client_context, server_context

        settings = node_settings(config)
        server = config.deployment.event_sync_server
        tls = config.deployment.replication.tls
        return cls(
            settings,
            config.node.data_dir,
            sql_store(config, settings.call_timeout_ms),
            listen=(server.host, server.port + config.port_offset),
            server_ssl=server_context(tls) if tls else None,
            client_ssl=client_context(tls) if tls else None,
            own_store=True,
            engine=engine,
            file_ops=file_ops,
        )

    # --- state -----------------------------------------------------------------------------

    @property
    def role(self) -> Role:
        return self.core.role if self.core is not None else Role.STARTING

    @property
    def epoch(self) -> int:
        return self.core.epoch if self.core is not None else 0

    @property
    def committed(self) -> int:
        return self.core.committed if self.core is not None else 0

    @property
    def standby_in_sync(self) -> bool:
        """On the active: its standby is recorded in sync (it holds everything committed
        and may take over without loss)."""
        term = self.core.term if self.core is not None else None
        return term is not None and term.shipper.standby_state is Standby.IN_SYNC

    @property
    def log(self) -> Wal:
        assert self.wal is not None, "the node is not started"
        return self.wal

    async def wait_until(self, predicate: Callable[[Node], bool], timeout_s: float) -> None:
        """Return once ``predicate(self)`` holds (checked after every input)."""
        async with asyncio.timeout(timeout_s):
            while not predicate(self):
                await self._next_change()

    def _next_change(self) -> asyncio.Future[None]:
        """A future resolved after the next input (no wake-up is lost: take it, then test)."""
        if self._changed is None or self._changed.done():
            self._changed = asyncio.get_running_loop().create_future()
        return self._changed

    # --- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Open and recover the log, bind the event-sync port, follow the lease.

        A ``stop()`` before or during the start wins: the start gives up after the step it
        is in (no node core, no lease asked for, nothing served) and ``stop()`` closes what
        it had opened once it has given up.
        """
        if self._stopping:
            return  # a stop before the start wins
        self._start_done.clear()
        try:
            await self._start()
        finally:
            self._start_done.set()

    async def _start(self) -> None:
        self.wal = Wal.open(self.data_dir, self.settings.log, file_ops=self._file_ops)
        if self.engine_host is not None:
            await self.engine_host.open(self.wal, self.data_dir)
        await self.store.setup()
        if self._stop_requested():  # stop() came while the store was set up
            return
        self._server = await asyncio.start_server(
            self._accept, *self._listen, ssl=self._server_ssl, limit=READ_BYTES
        )
        if self._stop_requested():  # stop() came while binding
            return
        host, port = self._server.sockets[0].getsockname()[:2]
        self.address = (str(host), int(port))
        settings = self.settings
        if not settings.advertised_port:
            settings = dataclasses.replace(settings, advertised_port=int(port))
        self.core = NodeCore(
            settings,
            self.wal,
            now_ms=self._clock_ms(),
            nonce=lambda: os.urandom(NONCE_BYTES),
            applied=self.engine_host.engine_.applied if self.engine_host is not None else None,
        )
        self.wal.add_durable_listener(lambda _end: self._input(self.core_.durable))
        self._spawn(self._ticks(), "tick loop")
        self._input(self.core.start)

    def _stop_requested(self) -> bool:
        return self._stopping  # a call: mypy would keep the narrowing across awaits

    async def stop(self) -> None:
        """Release the lease, fail waiting appends, close every connection and the log."""
        self._stopping = True
        if self.core is None:
            # A start in progress gives up at its next step (before it creates the core):
            # wait for that, so that what it opened meanwhile is closed here too.
            await self._start_done.wait()
            await self._close_resources()
            return
        if self._stopped.is_set():
            return
        self._input(self.core.stop)
        # Let the release (and other store calls in flight) finish, bounded by their timeouts,
        # and the engine's term see that the node stopped (its sink or snapshot call ends).
        calls = [t for t in self._tasks if t.get_name().startswith(("store ", "engine term"))]
        if calls:
            await asyncio.wait(calls, timeout=self.settings.call_timeout_ms / 1000 + 0.5)
        await self._close_resources()

    async def _close_resources(self) -> None:
        if self._server is not None:
            self._server.close()
        for cid in list(self._conns):
            self._drop(cid)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        for request in self._requests.values():
            _settle(request.done, ClosedError("the node stopped"))
        if self.wal is not None:
            with contextlib.suppress(WalrepError):
                await self.wal.aclose()
        if self._own_store:
            await self.store.close()
        if self.engine_host is not None:
            await self.engine_host.close()
        self._stopped.set()
        if self._changed is not None:
            _settle(self._changed, None)

    def release(self, resume_after_ms: int) -> None:
        """Give the lease up now; follow again after ``resume_after_ms``."""
        self._input(lambda now: self.core_.release(now, resume_after_ms))

    def force_takeover(self) -> None:
        self._input(self.core_.force_takeover)

    def log_start_moved(self) -> None:
        """Retention deleted segments (``EngineHost``): tell the core."""
        self._input(self.core_.log_start_moved)

    def now_ms(self) -> int:
        """The node's clock (what the core's deadlines are measured on)."""
        return self._clock_ms()

    # --- appending ---------------------------------------------------------------------------

    async def append(self, events: Sequence[Event] | EncodedBatch) -> AppendResult:
        """Append ``events`` as one batch; returns once committed under a held lease.

        ``events`` may be a batch encoded beforehand (``log.encode``). Raises
        ``NotActiveError`` (retriable: not the active, or the lease was lost before the
        commit), ``OverloadedError`` (retriable), or the typed error of bad input.
        """
        core = self.core
        if core is None:  # not started yet, or stopped before it started: not the active
            raise NotActiveError(f"node {self.settings.node_id} is not started")
        loop = asyncio.get_running_loop()
        self._next_request += 1
        number = self._next_request
        request = _Request(events, loop.create_future())
        self._requests[number] = request
        count = events.count if isinstance(events, EncodedBatch) else len(events)
        try:
            self._feed(core.submit(number, count, self._clock_ms()))
            if request.epoch is None and not request.done.done():
                request.admitted = loop.create_future()
                await request.admitted
            if request.epoch is not None:
                await self._append_admitted(number, request)
            return await request.done
        finally:
            self._requests.pop(number, None)

    async def _append_admitted(self, number: int, request: _Request) -> None:
        wal, epoch = self.log, request.epoch
        assert epoch is not None
        outcome: AppendResult | WalrepError
        events = request.events
        try:
            if isinstance(events, EncodedBatch):
                outcome = await wal.append_encoded(events, epoch=epoch)
            else:
                outcome = await wal.append(events, epoch=epoch)
        except asyncio.CancelledError:
            # Settle it in the background: once the writer has taken everything queued
            # before a sync, this append is written or refused; then report it.
            self._spawn(self._settle_cancelled(number), "settle a cancelled append")
            raise
        except WalrepError as e:
            outcome = e
        self._feed(self.core_.appended_events(number, outcome, self._clock_ms()))

    async def _settle_cancelled(self, number: int) -> None:
        with contextlib.suppress(WalrepError):
            await self.log.sync()
        error = NotActiveError("the publisher cancelled the append before its commit")
        self._input(lambda now: self.core_.appended_events(number, error, now))

    # --- the effect queue ----------------------------------------------------------------------

    @property
    def core_(self) -> NodeCore:
        assert self.core is not None, "the node is not started"
        return self.core

    def _input(self, call: Callable[[int], list[fx.Effect]]) -> None:
        self._feed(call(self._clock_ms()))

    def _feed(self, effects: list[fx.Effect]) -> None:
        """Carry out effects in order, and those of inputs they feed back, FIFO."""
        if not self._effects.feed(effects):
            return  # inside a drain: the outer call finishes the queue
        if self._changed is not None:
            _settle(self._changed, None)
        if self.core is not None and self.core.next_wakeup_ms() < self._sleeping_until_ms:
            self._wake.set()  # the core wants a tick sooner than the tick loop sleeps

    def _carry_out(self, effect: fx.Effect) -> None:
        core, wal = self.core_, self.log
        if isinstance(effect, fx.Send):
            conn = self._conns.get(effect.cid)
            if conn is not None and conn.writer is not None:
                conn.writer.write(effect.data)
        elif isinstance(effect, fx.ReadFrames):
            read = read_frames(wal, effect.from_offset, effect.max_bytes)
            self._effects.push(core.frames_read(effect.token, read, self._clock_ms()))
        elif isinstance(effect, fx.AppendFrames):
            self._spawn(self._append_frames(effect), "append frames")
        elif isinstance(effect, fx.AppendEvents):
            request = self._requests.get(effect.request)
            if request is None:  # the publisher is gone; its slot must still settle
                gone = NotActiveError("the publisher went away before its append")
                self._effects.push(core.appended_events(effect.request, gone, self._clock_ms()))
                return
            request.epoch = effect.epoch
            if request.admitted is not None:
                _settle(request.admitted, effect.epoch)
        elif isinstance(effect, fx.Acked):
            request = self._requests.get(effect.request)
            if request is not None:
                _settle(request.done, effect.result)
        elif isinstance(effect, fx.Failed):
            request = self._requests.get(effect.request)
            if request is not None:
                waiting = request.admitted is not None and not request.admitted.done()
                _settle(request.admitted if waiting else request.done, effect.error)
        elif isinstance(effect, fx.StoreCall):
            self._spawn(self._store_call(effect), f"store {type(effect.op).__name__}")
        elif isinstance(effect, fx.Sync):
            self._spawn(self._sync(), "sync")
        elif isinstance(effect, fx.Apply):
            host = self.engine_host
            assert host is not None, "Apply without an engine"
            done = apply_committed(host.engine_, wal, effect.from_offset, effect.to_offset)
            error = done if isinstance(done, WalrepError) else None
            if not isinstance(done, WalrepError):
                try:
                    host.on_outputs(done[1], active=core.role is Role.ACTIVE)
                except WalrepError as e:  # the digest chain disagrees: nondeterminism
                    error = e
            applied = effect.from_offset if isinstance(done, WalrepError) else done[0]
            # Reported on the next turn of the loop, not in this drain: a node applying a
            # long backlog chunk after chunk would otherwise never let the loop run its
            # lease renewals, sockets and publishers (the core waits for this report
            # before it asks for the next chunk).
            asyncio.get_running_loop().call_soon(self._report_applied, core, applied, error)
        elif isinstance(effect, fx.RestoreEngine):
            self._spawn(self._restore_engine(core, effect.epoch), "engine restore")
        elif isinstance(effect, fx.AdoptEngine):
            host = self.engine_host
            assert host is not None, "AdoptEngine without an engine"
            host.adopt(effect.epoch)
        elif isinstance(effect, fx.Truncate):
            refused: WalrepError | None = None
            try:
                wal.truncate_after(effect.to_offset)
            except WalrepError as e:
                refused = e
            self._effects.push(core.truncated(refused, self._clock_ms()))
        elif isinstance(effect, fx.PersistState):
            try:
                wal.save_replica_state(effect.state)
            except WalrepError as e:
                self._effects.push(core.failed(e, self._clock_ms()))
        elif isinstance(effect, fx.Connect):
            conn = self._conns[effect.cid] = _Conn()
            conn.task = self._spawn(self._connect(effect), "connect")
        elif isinstance(effect, fx.Close):
            level = logging.WARNING if effect.by_peer else logging.INFO
            log.log(level, "event sync connection %d closed: %s", effect.cid, effect.reason)
            self._drop(effect.cid)
        else:
            self._observe(effect)

    def _observe(self, effect: fx.Effect) -> None:
        """Effects that only tell the outside something."""
        node = self.settings.node_id
        if isinstance(effect, fx.RoleChanged):
            if effect.new == Role.ACTIVE.value and self.engine_host is not None:
                self._spawn(self.engine_host.serve_term(self, effect.epoch), "engine term")
            log.info(
                "node %s: %s -> %s (epoch %d): %s",
                node,
                effect.old,
                effect.new,
                effect.epoch,
                effect.reason,
            )
        elif isinstance(effect, fx.StepDone):
            self.steps = [*self.steps[-15:], effect]
            log.info(
                "node %s: promotion step %s done in %d ms (epoch %d)",
                node,
                effect.step,
                effect.duration_ms,
                effect.epoch,
            )
        elif isinstance(effect, fx.Notice):
            log.log(logging.getLevelName(effect.level.upper()), "node %s: %s", node, effect.message)
        elif isinstance(effect, fx.Fatal):
            self.failure = effect.error
            log.error("node %s failed and is fenced: %s", node, effect.error)
            if self._server is not None:
                self._server.close()

    # --- effects that take time --------------------------------------------------------------

    async def _append_frames(self, effect: fx.AppendFrames) -> None:
        outcome: AppendResult | WalrepError
        try:
            outcome = await self.log.append_frames(effect.frames)
        except WalrepError as e:
            outcome = e
        self._input(lambda now: self.core_.appended_frames(effect.token, outcome, now))

    async def _restore_engine(self, core: NodeCore, epoch: int) -> None:
        host = self.engine_host
        assert host is not None, "RestoreEngine without an engine"
        applied: int | None = None
        error: WalrepError | None = None
        try:
            applied = await host.load_newer(self.log, epoch)
        except WalrepError as e:
            error = e
        if self.core is core:
            self._input(lambda now: core.engine_restored(epoch, applied, error, now))

    async def _sync(self) -> None:
        error: WalrepError | None = None
        try:
            await self.log.sync()
        except WalrepError as e:
            error = e
        self._input(lambda now: self.core_.synced(error, now))

    async def _store_call(self, effect: fx.StoreCall) -> None:
        s = self.settings
        result: object = None
        try:
            async with asyncio.timeout(effect.timeout_ms / 1000):
                result = await run_store_op(self.store, s.group, s.node_id, effect.op)
        except (WalrepError, TimeoutError) as e:
            log.warning("node %s: %s failed: %r", s.node_id, type(effect.op).__name__, e)
        self._input(lambda now: self.core_.store_done(effect.call, result, now))

    async def _ticks(self) -> None:
        while True:
            due_ms = self.core_.next_wakeup_ms()
            delay_ms = due_ms - self._clock_ms()
            if delay_ms > 0:
                self._sleeping_until_ms = due_ms
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay_ms / 1000):
                        await self._wake.wait()
                if self.core_.next_wakeup_ms() > self._clock_ms():
                    continue  # woken early by an input: recompute the deadline
            self._input(self.core_.tick)
            # One turn of the loop per tick, whatever the core asks next: a wake-up that
            # is never in the future (a bug) slows the node, and never freezes its loop.
            await asyncio.sleep(0)

    # --- connections ---------------------------------------------------------------------------

    async def _connect(self, effect: fx.Connect) -> None:
        try:
            reader, writer = await asyncio.open_connection(
                effect.host, effect.port, ssl=self._client_ssl, limit=READ_BYTES
            )
        except (OSError, ssl.SSLError) as e:
            if effect.cid in self._conns:
                del self._conns[effect.cid]
                log.info("event sync to %s:%d: %s", effect.host, effect.port, e)
                self._input(lambda now: self.core_.connect_done(effect.cid, False, now))
            return
        conn = self._conns.get(effect.cid)
        if conn is None:  # closed while connecting
            writer.close()
            return
        conn.reader, conn.writer = reader, writer
        self._input(lambda now: self.core_.connect_done(effect.cid, True, now))
        await self._read_loop(effect.cid, reader)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A new inbound connection: hand it to the core, read it in a supervised task."""
        if self.core is None or self._stopping:
            writer.close()
            return
        cid = self.core.new_id()
        conn = self._conns[cid] = _Conn()
        conn.reader, conn.writer = reader, writer
        conn.task = self._spawn(self._read_loop(cid, reader), "event sync reader")
        self._input(lambda now: self.core_.accepted(cid, now))

    async def _read_loop(self, cid: int, reader: asyncio.StreamReader) -> None:
        """Feed the connection's bytes to the core while it wants them, until it ends."""
        reason = "closed by the peer"
        try:
            while cid in self._conns:
                while cid in self._conns and not self.core_.wants_data(cid):
                    await self._next_change()  # backpressure: TCP's window fills
                if cid not in self._conns:
                    return
                data = await reader.read(READ_BYTES)
                if cid not in self._conns:
                    return
                if not data:
                    break
                self._feed(self.core_.received(cid, data, self._clock_ms()))
        except (OSError, ssl.SSLError) as e:
            reason = f"connection lost: {e}"
        if cid in self._conns:
            self._drop(cid)
            self._input(lambda now: self.core_.closed(cid, reason, now))

    def _drop(self, cid: int) -> None:
        """Forget ``cid`` and close its socket without waiting for the peer."""
        conn = self._conns.pop(cid, None)
        if conn is None:
            return
        if conn.writer is not None:
            conn.writer.close()
            transport = conn.writer.transport
            asyncio.get_running_loop().call_later(CLOSE_GRACE_S, transport.abort)
        if conn.task is not None and conn.task is not asyncio.current_task():
            conn.task.cancel()

    # --- supervision ------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _report_applied(self, core: NodeCore, applied: int, error: WalrepError | None) -> None:
        if self.core is core and not self._stopped.is_set():
            self._feed(core.applied_to(applied, error, self._clock_ms()))

    def _engine_failed(self, error: WalrepError) -> None:
        """The engine host found a failure off the effect path (the digest chain
        disagrees, recording it failed): it fences the node like a local log failure."""
        log.error("node %s: engine failure: %s", self.settings.node_id, error)
        if self.core is not None:
            self._input(lambda now: self.core_.failed(error, now))

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is None or self.core is None:
            return
        log.error("node %s: %s died", self.settings.node_id, task.get_name(), exc_info=error)
        failure = InternalError(f"{task.get_name()} died: {error!r}")
        failure.__cause__ = error
        self._input(lambda now: self.core_.failed(failure, now))


def _settle(future: asyncio.Future[Any] | None, value: object) -> None:
    if future is None or future.done():
        return
    if isinstance(value, BaseException):
        future.set_exception(value)
        future.add_done_callback(_retrieved)  # raised to whoever awaits; silent otherwise
    else:
        future.set_result(value)


def _retrieved(future: asyncio.Future[Any]) -> None:
    future.exception()
