"""Real walrep nodes for end-to-end tests: ``walrep.node.runtime.Node`` on real WAL files
(fsync on), real loopback TCP and a real coordination store.

* ``Cluster`` (the ``cluster`` fixture) owns one group on one store — a SQLite file in the
  test's directory by default, MariaDB or PostgreSQL where a test is about the store —
  and starts nodes on it: in this process (``cluster.node`` / ``start``: a ``Node`` whose
  core a test can look at) or in a child process (``cluster.process``:
  ``tests/e2e/node_main.py``, which a test may SIGKILL, SIGSTOP, SIGCONT and restart).
  Every node has a store instance of its own (two instances on one SQLite file behave
  like two processes); nodes find each other through the store's node rows and the lease
  decides who is active, exactly as in production.
* ``JournalStore`` wraps the real store of one in-process node: its in-sync records (asked,
  answered) go into a ``Journal`` beside publishers' acks, in the order they happened;
  ``hold(op)`` makes calls of one store operation wait until ``unhold(op)``, and
  ``break_op(op, error)`` makes them raise (a driver bug).
* ``Writers`` are publishers appending without pause; ``NodeProcess.publish`` is the same
  inside a child process (it prints every acknowledgement).

Waits are bounded (``WAIT_S``) and end with an ``AssertionError`` that says what was
awaited; none of them proves an absence by sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import os
import signal
import ssl
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tests.services import sql_store
from walrep.log.config import LogConfig
from walrep.log.frame import Event
from walrep.log.fsutil import FileOps
from walrep.log.types import AppendResult
from walrep.log.wal import Wal
from walrep.node.role import Role
from walrep.node.runtime import Node
from walrep.node.settings import AppendLimits, EdgeLimits, NodeSettings
from walrep.replica.lease import LeaseTiming, Observed
from walrep.replica.shipper import Shipper, ShipperConfig, Standby
from walrep.replica.sql_store import SqlStore
from walrep.replica.store import CoordinationStore, HistoryRow, NodeInfo, NodeRow

T = TypeVar("T")
SECRET = b"s3cret"
ACTIVE = "a"
PASSIVE = "p"
HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
WAIT_S = 20.0  # upper bound of any single wait; tests normally finish far below it
# Generous for a loaded 2-core machine: the leader trusts its lease for 2 s after a renew
# (renewed every 200 ms), so a busy event loop or a slow SQLite fsync does not fence it.
LEASE = LeaseTiming(
    heartbeat_interval_ms=200,
    lease_ttl_ms=3000,
    safety_margin_ms=1000,
    poll_interval_ms=100,
    retry_backoff_max_ms=500,
)
CALL_TIMEOUT_MS = 1000
# For tests that wait for a lease to expire (a killed active): the leader trusts its
# lease for 1 s after a renew, still five renews.
FAST_EXPIRY = {"lease_ttl_ms": 1500, "safety_margin_ms": 500}
STANDBY_TIMEOUT_MS = 2000  # tests about a lost standby set a short one themselves
# Event-sync heartbeats (answered by Acks) every 100 ms: an idle standby is confirmed in
# sync, and a silent one noticed, without waiting long.
SHIPPER_HEARTBEAT_MS = 100
# NodeSettings fields that are dataclasses themselves: a spec gives them as dicts.
NESTED: dict[str, type[Any]] = {
    "lease": LeaseTiming,
    "shipper": ShipperConfig,
    "edges": EdgeLimits,
    "appends": AppendLimits,
    "log": LogConfig,
}


# --- settings: one spec, in this process or in a child ---------------------------------------


def node_settings(group: str, node_id: str, spec: Mapping[str, Any]) -> NodeSettings:
    """The e2e defaults for ``node_id``, changed by ``spec``: NodeSettings fields, nested
    ones as dicts (``{"shipper": {"degrade": False}}``), the secret as a string. The same
    JSON-able spec builds a node in this process and in ``node_main.py``."""
    base = NodeSettings(
        group=group,
        node_id=node_id,
        secret=SECRET,
        lease=LEASE,
        call_timeout_ms=CALL_TIMEOUT_MS,
        shipper=ShipperConfig(
            standby_timeout_ms=STANDBY_TIMEOUT_MS, heartbeat_interval_ms=SHIPPER_HEARTBEAT_MS
        ),
        reconnect_backoff_ms=(20, 200),
        peer_retry_sleep_ms=50,
        persist_interval_ms=100,
    )
    changes: dict[str, Any] = {}
    for key, value in spec.items():
        if key in NESTED:
            changes[key] = dataclasses.replace(getattr(base, key), **value)
        elif key == "secret":
            changes[key] = value.encode()
        elif key == "reconnect_backoff_ms":
            changes[key] = tuple(value)
        else:
            changes[key] = value
    return dataclasses.replace(base, **changes)


# --- waiting -------------------------------------------------------------------------------------


def describe(node: Node) -> str:
    if node.core is None:
        return f"{node.settings.node_id}: not started"
    term = node.core.term
    link = ""
    if term is not None:
        link = f" acked={term.shipper.acked} standby={term.shipper.standby_state.value}"
    return (
        f"{node.settings.node_id}: {node.role.value} epoch={node.epoch} "
        f"committed={node.committed} log_end={node.log.log_end} "
        f"durable={node.log.durable_end}{link} "
        f"failure={node.failure!r} metrics={dict(node.core.metrics)}"
    )


async def until(
    node: Node, predicate: Callable[[Node], bool], what: str, seconds: float = WAIT_S
) -> None:
    """Wait for ``predicate(node)``, re-checked after every input the node processes."""
    try:
        await node.wait_until(predicate, seconds)
    except TimeoutError:
        raise AssertionError(
            f"timed out after {seconds} s waiting for: {what} ({describe(node)})"
        ) from None


async def wait_until(
    predicate: Callable[[], bool], what: str, seconds: float = WAIT_S, poll: float = 0.005
) -> None:
    """Poll a condition that no single node's inputs announce, bounded."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for: {what}")
        await asyncio.sleep(poll)


async def store_until(
    check: Callable[[], Awaitable[bool]], what: str, seconds: float = WAIT_S
) -> None:
    """Poll the store (a row, a record) until ``check()`` holds, bounded."""
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for: {what}")
        await asyncio.sleep(0.02)


async def within(awaitable: Awaitable[T], what: str, seconds: float = WAIT_S) -> T:
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        raise AssertionError(f"timed out after {seconds} s: {what}") from None


def is_role(role: Role) -> Callable[[Node], bool]:
    return lambda n: n.role is role


def in_sync(node: Node) -> bool:
    """The node is active and its standby is recorded in sync (confirmed by the store)."""
    term = node.core.term if node.core is not None else None
    return term is not None and term.shipper.standby_state is Standby.IN_SYNC


def waiting_appends(node: Node) -> int:
    """Appends written to the active's log and waiting for their commit."""
    term = node.core.term if node.core is not None else None
    return len(term.waiters) if term is not None else 0


def shipper(node: Node) -> Shipper:
    assert node.core is not None and node.core.term is not None, describe(node)
    return node.core.term.shipper


async def caught_up(active: Node, passive: Node | None = None) -> None:
    """The standby acked everything, is recorded in sync, and all is committed."""
    end = active.log.log_end
    await until(
        active,
        lambda n: in_sync(n) and shipper(n).acked == end and n.committed == end,
        f"the standby caught up to {end}",
    )
    if passive is not None:
        await until(passive, lambda n: n.log.durable_end == end, f"passive durable to {end}")


def send_buffer_bytes(node: Node) -> int | None:
    """Bytes waiting in the kernel-bound send buffer of the active's event-sync link.

    Reads the executor's connection table (private): nothing public exposes a socket.
    """
    term = node.core.term if node.core is not None else None
    if term is None or term.link is None:
        return None
    conn = node._conns.get(term.link.cid)
    if conn is None or conn.writer is None:
        return None
    return int(conn.writer.transport.get_write_buffer_size())


def link_is_tls(node: Node) -> bool:
    """The active's event-sync connection runs over TLS (private connection table)."""
    term = node.core.term if node.core is not None else None
    assert term is not None and term.link is not None, describe(node)
    conn = node._conns[term.link.cid]
    assert conn.writer is not None
    return conn.writer.get_extra_info("ssl_object") is not None


PROBLEM_WORDS = ("error", "refused", "rejected", "lost", "timeout", "failure", "wrong")


def problems(node: Node) -> dict[str, int]:
    """Metrics of ``node`` that count something going wrong."""
    assert node.core is not None
    metrics = node.core.metrics
    return {k: v for k, v in metrics.items() if v and any(w in k for w in PROBLEM_WORDS)}


# --- logs and events ----------------------------------------------------------------------------


def frames_of(wal: Wal) -> list[bytes]:
    """Every stored frame, byte for byte."""
    return [frame.data for frame in wal.frames()]


def frames_in(directory: Path) -> list[bytes]:
    """Frames of a log directory no process holds (opens and closes it)."""
    with Wal.open(directory) as wal:
        return frames_of(wal)


def events(n: int, tag: str = "e", pad: int = 0) -> list[Event]:
    return [Event("s", {"tag": tag, "i": i, "pad": os.urandom(pad).hex()}) for i in range(n)]


async def write_history(wal: Wal, epoch: int, batches: int, tag: str) -> None:
    for _ in range(batches):
        await wal.append(events(10, tag), epoch=epoch)


# --- the journal of in-sync records and acks -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    kind: str  # "record-start" | "record-done" | "ack"
    standby: str = ""
    in_sync: bool = False
    offset: int = 0  # record-start: the shipper's acked offset then; ack: end offset
    ok: bool = True  # record-done: what the store answered (False: the lease is gone)


class Journal:
    """One ordered list of in-sync records and publisher acks of one active."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.acked_now: Callable[[], int] = lambda: -1  # the shipper's acked offset
        self._changed = asyncio.Event()

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)
        self._changed.set()
        self._changed = asyncio.Event()

    def note_ack(self, result: AppendResult) -> None:
        self.add(Entry("ack", offset=result.end_offset))

    def records(self, kind: str = "record-done") -> list[tuple[str, bool]]:
        return [(e.standby, e.in_sync) for e in self.entries if e.kind == kind and e.ok]

    def acks(self) -> list[int]:
        return [e.offset for e in self.entries if e.kind == "ack"]

    async def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        async def loop() -> None:
            while not predicate():
                await self._changed.wait()

        await within(loop(), what)

    async def wait_recorded(self, in_sync: bool, *, after: int = 0, standby: str = PASSIVE) -> int:
        """Index of the first answered record of ``standby`` at or after ``after`` (its
        ``ok`` says whether the store confirmed or refused it)."""

        def find() -> int | None:
            for i in range(after, len(self.entries)):
                e = self.entries[i]
                if e.kind == "record-done" and e.standby == standby and e.in_sync == in_sync:
                    return i
            return None

        await self.wait_for(lambda: find() is not None, f"{standby} recorded in_sync={in_sync}")
        index = find()
        assert index is not None
        return index


class JournalStore:
    """A real ``CoordinationStore``, journaled, with operations that can be held or broken."""

    def __init__(self, store: CoordinationStore, journal: Journal | None = None) -> None:
        self.inner = store
        self.journal = journal or Journal()
        self.calls: Counter[str] = Counter()  # calls entered, per operation
        self.waiting: Counter[str] = Counter()  # calls waiting at a hold now
        self._held: dict[str, asyncio.Event] = {}
        self._broken: dict[str, BaseException] = {}
        self._changed = asyncio.Event()

    def hold(self, op: str) -> None:
        """Calls of ``op`` wait (a database that takes its time) until ``unhold(op)``."""
        self._held.setdefault(op, asyncio.Event())

    def unhold(self, op: str) -> None:
        gate = self._held.pop(op, None)
        if gate is not None:
            gate.set()

    def break_op(self, op: str, error: BaseException) -> None:
        """Calls of ``op`` raise ``error`` from now on."""
        self._broken[op] = error

    async def wait_waiting(self, op: str, count: int = 1) -> None:
        async def loop() -> None:
            while self.waiting[op] < count:
                await self._changed.wait()

        await within(loop(), f"{count} call(s) of {op} waiting at the hold")

    def _poke(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _call(self, op: str, call: Callable[[], Awaitable[T]]) -> T:
        self.calls[op] += 1
        self._poke()
        gate = self._held.get(op)
        if gate is not None:
            self.waiting[op] += 1
            self._poke()
            try:
                await gate.wait()
            finally:
                self.waiting[op] -= 1
        broken = self._broken.get(op)
        if broken is not None:
            raise broken
        return await call()

    # --- the contract ---------------------------------------------------------------------

    async def setup(self) -> None:
        await self._call("setup", self.inner.setup)

    async def db_now_ms(self) -> int:
        return await self._call("db_now_ms", self.inner.db_now_ms)

    async def read_lease(self, group: str) -> Observed:
        return await self._call("read_lease", lambda: self.inner.read_lease(group))

    async def try_acquire(
        self, group: str, node: str, expected_epoch: int, ttl_ms: int, *, force: bool = False
    ) -> tuple[bool, Observed]:
        return await self._call(
            "try_acquire",
            lambda: self.inner.try_acquire(group, node, expected_epoch, ttl_ms, force=force),
        )

    async def renew(self, group: str, node: str, epoch: int, ttl_ms: int) -> bool:
        return await self._call("renew", lambda: self.inner.renew(group, node, epoch, ttl_ms))

    async def release(self, group: str, node: str, epoch: int) -> bool:
        return await self._call("release", lambda: self.inner.release(group, node, epoch))

    async def set_in_sync(
        self, group: str, holder: str, epoch: int, standby: str, in_sync: bool, ttl_ms: int
    ) -> bool:
        journal = self.journal
        journal.add(Entry("record-start", standby, in_sync, journal.acked_now()))
        ok = await self._call(
            "set_in_sync",
            lambda: self.inner.set_in_sync(group, holder, epoch, standby, in_sync, ttl_ms),
        )
        journal.add(Entry("record-done", standby, in_sync, ok=ok))
        return ok

    async def in_sync_nodes(self, group: str) -> dict[str, int]:
        return await self._call("in_sync_nodes", lambda: self.inner.in_sync_nodes(group))

    async def publish_node(self, group: str, info: NodeInfo) -> None:
        await self._call("publish_node", lambda: self.inner.publish_node(group, info))

    async def nodes(self, group: str) -> list[NodeRow]:
        return await self._call("nodes", lambda: self.inner.nodes(group))

    async def history(self, group: str, limit: int = 100) -> list[HistoryRow]:
        return await self._call("history", lambda: self.inner.history(group, limit))

    async def set_maintenance(self, group: str, on: bool) -> None:
        await self._call("set_maintenance", lambda: self.inner.set_maintenance(group, on))

    async def close(self) -> None:
        for gate in self._held.values():
            gate.set()
        await self.inner.close()


# --- fault seams of the log ---------------------------------------------------------------------


class GatedSync(FileOps):
    """The log's file operations, whose ``fdatasync`` waits while the gate is closed (a disk
    that takes its time: nothing appended becomes durable, so nothing is acknowledged).

    The log's writer thread waits holding the log's lock: while the gate is closed nothing
    on the event loop may truncate the log, save its replica state or close it (the
    cluster opens every gate before it stops the nodes).
    """

    def __init__(self) -> None:
        self._open = threading.Event()
        self._open.set()

    def close_gate(self) -> None:
        self._open.clear()

    def open_gate(self) -> None:
        self._open.set()

    def fdatasync(self, fd: int) -> None:
        self._open.wait()
        super().fdatasync(fd)


class FailingSync(FileOps):
    """The log's file operations, whose ``fdatasync`` raises EIO once ``armed``."""

    def __init__(self) -> None:
        self.armed = False
        self.failures = 0

    def fdatasync(self, fd: int) -> None:
        if self.armed:
            self.failures += 1
            raise OSError(errno.EIO, "Input/output error (injected)")
        super().fdatasync(fd)


# --- publishers ---------------------------------------------------------------------------------


class Writers:
    """Publisher tasks appending without pause (single events, every ``batch_every``-th
    append a batch of 1000) until ``stop``; counts and journals what was acknowledged."""

    def __init__(
        self, node: Node, journal: Journal | None = None, *, tasks: int = 4, batch_every: int = 20
    ) -> None:
        self.node = node
        self.journal = journal
        self.tasks = tasks
        self.batch_every = batch_every
        self.acks = 0
        self.pending = 0
        self._stopping = False
        self._changed = asyncio.Event()
        self._tasks = [asyncio.create_task(self._run(t)) for t in range(tasks)]

    async def _run(self, t: int) -> None:
        i = 0
        while not self._stopping:
            i += 1
            batch = events(1000, f"w{t}") if i % self.batch_every == 0 else events(1, f"w{t}")
            self.pending += 1
            result = await self.node.append(batch)
            self.pending -= 1
            self.acks += 1
            if self.journal is not None:
                self.journal.note_ack(result)
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait_acks(self, more: int, what: str) -> None:
        target = self.acks + more

        async def loop() -> None:
            while self.acks < target:
                for task in self._tasks:  # a publisher that failed: say so at once
                    if task.done():
                        task.result()
                await asyncio.wait_for(self._changed.wait(), WAIT_S)

        await within(loop(), f"{more} more acks: {what} ({describe(self.node)})")

    async def stop(self) -> None:
        self._stopping = True
        await within(asyncio.gather(*self._tasks), "publishers finish their last append")


# --- nodes in child processes -------------------------------------------------------------------


class NodeProcess:
    """A ``Node`` in a child process (``node_main.py``), for SIGKILL, SIGSTOP and restarts.

    It prints what a test may wait for: ``READY host port``, ``ROLE role epoch`` on every
    change, ``ACKED id base end`` / ``FAILED id error`` for appends asked on its stdin.
    """

    def __init__(self, cluster: Cluster, name: str, spec: Mapping[str, Any], rcvbuf: int) -> None:
        self.name = name
        self.directory = cluster.root / name
        self.spec = {
            "group": cluster.group,
            "node_id": name,
            "settings": dict(spec),
            "data_dir": str(self.directory),
            "backend": cluster.backend,
            "store_dir": str(cluster.root),
            "port": 0,
            "rcvbuf": rcvbuf,
        }
        self.address: tuple[str, int] | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[list[str]] = []
        self.acked: list[tuple[str, int, int]] = []  # (id, base, end) of every printed ack
        self.tags: dict[str, str] = {}  # request id -> tag of its events
        self.role = ""
        self.epoch = 0
        self.stopped = False
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._requests = 0

    async def start(self) -> tuple[str, int]:
        """Start (or restart, on the same port) and wait for READY."""
        if self.address is not None:
            self.spec["port"] = self.address[1]
        self.lines = []
        self.role, self.stopped = "", False
        self.proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "tests.e2e.node_main", json.dumps(self.spec)),
            cwd=REPO,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read(self.proc))
        line = await self.wait_line(lambda w: w[0] == "READY", f"{self.name} ready")
        self.address = (line[1], int(line[2]))
        return self.address

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            if not line.endswith(b"\n"):
                break  # cut short by SIGKILL: whatever it was, the test never saw it
            words = line.decode().split()
            if not words:
                continue
            self.lines.append(words)
            if words[0] == "ROLE":
                self.role, self.epoch = words[1], int(words[2])
            elif words[0] == "ACKED":
                self.acked.append((words[1], int(words[2]), int(words[3])))
            self._poke()
        self._poke()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_line(self, predicate: Callable[[list[str]], bool], what: str) -> list[str]:
        async def loop() -> list[str]:
            seen = 0
            while True:
                for words in self.lines[seen:]:
                    if predicate(words):
                        return words
                seen = len(self.lines)
                if self._reader is None or self._reader.done():
                    raise AssertionError(f"{self.name}'s output ended: {what}")
                await self._changed.wait()

        return await within(loop(), f"{self.name}: {what}")

    async def wait_role(self, role: str) -> None:
        await self.wait_line(lambda w: w[0] == "ROLE" and w[1] == role, f"role {role}")

    async def wait_acked(self, count: int, what: str) -> None:
        await self.wait_line(lambda _: len(self.acked) >= count, f"{count} acks: {what}")

    def _send(self, command: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")

    async def append(self, count: int, tag: str = "e") -> tuple[int, int]:
        """One append in the child; its (base, end) once acknowledged there."""
        self._requests += 1
        rid = f"r{self._requests}"
        self.tags[rid] = tag
        self._send(f"append {rid} {count} {tag}")
        line = await self.wait_line(lambda w: w[:2] in (["ACKED", rid], ["FAILED", rid]), rid)
        assert line[0] == "ACKED", line
        return int(line[2]), int(line[3])

    @property
    def acked_end(self) -> int:
        """The highest end offset this process acknowledged (in any of its runs)."""
        return max((end for _, _, end in self.acked), default=0)

    def check_acknowledged(self, wal: Wal) -> None:
        """Every event this process ever acknowledged is in ``wal``, at its offset."""
        for rid, base, end in self.acked:
            tag = self.tags.get(rid) or rid.split("-")[0]  # publishers: w<task>-<n>
            found = [r.event[1]["tag"] for r in wal.read(base, end)]
            assert found == [tag] * (end - base), (rid, base, end, found[:3])

    def publish(self, tasks: int) -> None:
        """Start ``tasks`` publishers in the child (single events without pause)."""
        self._send(f"publish {tasks}")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None and self.proc.returncode is None
        os.kill(self.proc.pid, sig)
        if sig in (signal.SIGSTOP, signal.SIGCONT):
            self.stopped = sig is signal.SIGSTOP

    async def kill(self) -> None:
        """SIGKILL: no chance to flush, release or close anything."""
        assert self.proc is not None
        self.signal(signal.SIGKILL)
        await within(self.proc.wait(), f"{self.name} exits after SIGKILL")
        await self._finish_reader()

    async def terminate(self) -> None:
        """SIGTERM: the child stops its node (releases the lease, closes the log), exits 0."""
        assert self.proc is not None
        if self.proc.returncode is None:
            if self.stopped:
                self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            code = await within(self.proc.wait(), f"{self.name} exits after SIGTERM")
            assert code == 0, code
        await self._finish_reader()

    async def _finish_reader(self) -> None:
        if self._reader is not None:
            await within(self._reader, f"{self.name}'s output ends")
            self._reader = None

    async def cleanup(self) -> None:
        """Fixture teardown: whatever state the test left the child in, end it."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None


# --- the cluster ------------------------------------------------------------------------------


class Cluster:
    """One group on one store; creates nodes under ``root`` and ends them all at teardown."""

    def __init__(self, root: Path, backend: str = "sqlite", group: str | None = None) -> None:
        self.root = root
        self.backend = backend
        # Server databases are shared by every test: each cluster has a group of its own.
        self.group = group or f"e2e-{uuid.uuid4().hex[:10]}"
        self.nodes: list[Node] = []
        self.processes: list[NodeProcess] = []
        self.gates: list[GatedSync] = []
        self.others: list[Cluster] = []
        self._admin: SqlStore | None = None

    def elsewhere(self, name: str, *, group: str | None = None) -> Cluster:
        """Another coordination universe: its own SQLite file, the same group name unless
        told otherwise. A node there holds a lease of its own, whatever happens here (a
        stale or hostile active that still believes it leads)."""
        (self.root / name).mkdir(parents=True, exist_ok=True)
        other = Cluster(self.root / name, "sqlite", group or self.group)
        self.others.append(other)
        return other

    def new_store(self) -> SqlStore:
        """A store instance of its own (its own connections), as another process has."""
        return sql_store(self.backend, self.root, call_timeout_ms=CALL_TIMEOUT_MS)

    async def admin(self) -> SqlStore:
        """The test's own handle on the store, for direct calls and checks."""
        if self._admin is None:
            self._admin = self.new_store()
            await self._admin.setup()
        return self._admin

    async def in_sync_nodes(self) -> dict[str, int]:
        return await (await self.admin()).in_sync_nodes(self.group)

    async def in_sync_are(self, expected: dict[str, int]) -> bool:
        return await self.in_sync_nodes() == expected

    async def lease_expired(self) -> bool:
        """The group's lease has expired on the store's clock (nobody holds it now)."""
        seen = await (await self.admin()).read_lease(self.group)
        return seen.expires_at_ms <= seen.db_now_ms

    async def publish_fake(self, node_id: str, port: int) -> None:
        """A node row pointing at ``port``: the active will connect there (until the real
        ``node_id``, if it runs, publishes its own row over it)."""
        info = NodeInfo(node_id, "PASSIVE", HOST, port)
        await (await self.admin()).publish_node(self.group, info)

    def node(
        self,
        name: str,
        *,
        store: CoordinationStore | None = None,
        file_ops: FileOps | None = None,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        group: str | None = None,
        **spec: Any,
    ) -> Node:
        """A node in this process (not started), on ``root/name``."""
        settings = node_settings(group or self.group, name, spec)
        node = Node(
            settings,
            self.root / name,
            store if store is not None else self.new_store(),
            listen=(HOST, 0),
            server_ssl=server_ssl,
            client_ssl=client_ssl,
            own_store=True,
            file_ops=file_ops,
        )
        self.nodes.append(node)
        return node

    async def start(self, name: str, *, role: Role | None = None, **kwargs: Any) -> Node:
        node = self.node(name, **kwargs)
        await within(node.start(), f"{name} starts")
        if role is not None:
            await until(node, is_role(role), f"{name} is {role.value}")
        return node

    async def active(self, name: str = ACTIVE, **kwargs: Any) -> Node:
        """Start ``name`` and wait until it holds the lease (start it before its peer)."""
        return await self.start(name, role=Role.ACTIVE, **kwargs)

    async def passive(self, name: str = PASSIVE, **kwargs: Any) -> Node:
        """Start ``name`` while another node holds the lease."""
        node = await self.start(name, **kwargs)
        assert node.role is Role.PASSIVE, describe(node)
        return node

    def journaled(self, journal: Journal | None = None) -> JournalStore:
        """A new store instance, journaled (pass it as ``store=`` to ``node``)."""
        return JournalStore(self.new_store(), journal)

    async def process(self, name: str = PASSIVE, *, rcvbuf: int = 0, **spec: Any) -> NodeProcess:
        """A node in a child process, started (``rcvbuf``: a small kernel receive buffer on
        its event-sync port, so that a stopped node makes its peer's buffers fill soon)."""
        proc = NodeProcess(self, name, spec, rcvbuf)
        self.processes.append(proc)
        await proc.start()
        return proc

    def gated(self) -> GatedSync:
        gate = GatedSync()
        self.gates.append(gate)
        return gate

    async def close(self) -> None:
        errors: list[BaseException] = []
        for gate in self.gates:
            gate.open_gate()
        nodes, self.nodes = self.nodes, []
        processes, self.processes = self.processes, []
        others, self.others = self.others, []
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            *((f"stop {n.settings.node_id}", n.stop) for n in nodes),
            *((f"end process {p.name}", p.cleanup) for p in processes),
            *((f"close {o.root}", o.close) for o in others),
        ]
        if self._admin is not None:
            steps.append(("close the admin store", self._admin.close))
            self._admin = None
        for what, step in steps:
            try:
                await within(step(), what)
            except (Exception, asyncio.CancelledError) as e:  # keep closing the others
                errors.append(e)
        if errors:
            raise errors[0]
