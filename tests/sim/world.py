"""Simulated time, network and coordination store, driven by one ``random.Random``.

* ``Scheduler``: the only clock. A heap of ``(time_ms, sequence, ...)``; the sequence
  number breaks ties, so the order of events never depends on anything but the seed.
* ``Network``: TCP-like connections, each two ordered byte streams with random delay.
  Faults: partitions between any two parties (bytes wait and are delivered when it
  heals, like TCP retransmission; connects fail), cuts (both ends learn it after a
  delay, bytes in flight are lost or -- on purpose -- delivered late to test that the
  shells ignore closed connections by id), and message-level drop, duplicate, reorder
  and corruption, which the cores must detect or survive.
* ``StoreLink``: calls to the real ``MemoryStore`` (on the simulated clock), each with a
  request and an answer delay; a node cut off from the store gets an error after its
  call timeout -- also when the call was executed but its answer was lost.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
STORE = "store"


def run_now(call: Coroutine[Any, Any, T]) -> T:
    """Run a MemoryStore call to completion: it never suspends."""
    try:
        call.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    raise AssertionError("the in-memory store suspended")


class Scheduler:
    def __init__(self) -> None:
        self.now_ms = 0
        self._heap: list[tuple[int, int, str, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0

    def at(self, when_ms: int, kind: str, fn: Callable[..., None], *args: Any) -> None:
        assert when_ms >= self.now_ms, (when_ms, self.now_ms, kind)
        self._seq += 1
        heapq.heappush(self._heap, (when_ms, self._seq, kind, fn, args))

    def after(self, delay_ms: int, kind: str, fn: Callable[..., None], *args: Any) -> None:
        self.at(self.now_ms + max(0, delay_ms), kind, fn, *args)

    def pop(self) -> tuple[str, Callable[..., None], tuple[Any, ...]]:
        when, _, kind, fn, args = heapq.heappop(self._heap)
        self.now_ms = when
        return kind, fn, args

    def next_time(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)


@dataclass(frozen=True, slots=True)
class Faults:
    """Per-message fault probabilities of one run (chosen from the seed)."""

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0
    stale: float = 0.0  # a cut connection's bytes in flight still arrive (late)
    split: float = 0.2  # a chunk reaches the reader in two pieces (partial reads)


class Endpoint(Protocol):
    """What a node offers the network."""

    name: str
    paused_until_ms: int  # a stalled process (GC, VM freeze) reads nothing until then

    def on_accept(self, cid: int) -> bool: ...
    def on_connected(self, cid: int, ok: bool) -> None: ...
    def wants_data(self, cid: int) -> bool: ...
    def on_data(self, cid: int, data: bytes) -> None: ...
    def on_closed(self, cid: int, reason: str) -> None: ...


@dataclass(slots=True)
class Stream:
    """One direction of a connection: bytes in order, each chunk with its arrival time."""

    src: str
    dst: str
    chunks: deque[tuple[int, bytes | None]] = field(default_factory=deque)  # None = FIN
    queued_bytes: int = 0
    last_ms: int = 0
    scheduled: bool = False
    held: bytes | None = None  # reorder: this message goes after the next one
    waiting: bool = False  # the reader does not want data: bytes wait here (TCP window)


@dataclass(slots=True)
class Connection:
    cid: int
    active: str
    passive: str
    open: bool = True
    streams: dict[str, Stream] = field(default_factory=dict)  # by sender


class Network:
    def __init__(self, sched: Scheduler, rng: random.Random, faults: Faults) -> None:
        self.sched = sched
        self.rng = rng
        self.faults = faults
        self.nodes: dict[str, Endpoint] = {}
        self.conns: dict[int, Connection] = {}
        self._next_cid = 0
        self._blocked_until: dict[frozenset[str], int] = {}
        self.stats: dict[str, int] = {}
        self.bytes_bound = 0  # set by the simulation: the largest a stream may queue
        self._waiting: dict[str, set[tuple[int, str]]] = {}  # reader -> streams held back
        self.max_queued_bytes = 0

    def count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def latency_ms(self) -> int:
        r = self.rng.random()
        return 1 + int(r * r * 30)  # mostly short, sometimes up to 30 ms

    # --- partitions ------------------------------------------------------------------------

    def partition(self, a: str, b: str, duration_ms: int) -> None:
        key = frozenset((a, b))
        until = self.sched.now_ms + duration_ms
        self._blocked_until[key] = max(self._blocked_until.get(key, 0), until)

    def blocked(self, a: str, b: str) -> int:
        """0, or when the partition between ``a`` and ``b`` heals."""
        until = self._blocked_until.get(frozenset((a, b)), 0)
        return until if until > self.sched.now_ms else 0

    def heal_all(self) -> None:
        self._blocked_until.clear()

    # --- connections -----------------------------------------------------------------------

    def connect(self, active: str, passive: str) -> int:
        """Open a connection; ``on_connected(cid, ok)`` tells the active how it went."""
        self._next_cid += 1
        cid = self._next_cid
        conn = Connection(cid, active, passive)
        conn.streams = {active: Stream(active, passive), passive: Stream(passive, active)}
        self.conns[cid] = conn
        self.sched.after(self.latency_ms(), "net.syn", self._syn, cid)
        return cid

    def _syn(self, cid: int) -> None:
        conn = self.conns[cid]
        if not conn.open:
            return
        stalled = self.nodes[conn.passive].paused_until_ms
        if stalled > self.sched.now_ms:  # the kernel queues it; the process accepts later
            self.sched.at(stalled, "net.syn", self._syn, cid)
            return
        if self.blocked(conn.active, conn.passive):
            self.count("connect_timeouts")
            conn.open = False
            self.sched.after(1000, "net.connect_failed", self._connect_result, cid, False)
            return
        syn_ack = self.sched.now_ms + self.latency_ms()
        # The passive may write (its Challenge) at once; those bytes must not overtake
        # the SYN-ACK: the active learns of the connection first (same time, earlier seq).
        conn.streams[conn.passive].last_ms = syn_ack
        self.sched.at(syn_ack, "net.syn_ack", self._connect_result, cid, True)
        if not self.nodes[conn.passive].on_accept(cid):
            conn.open = False
            conn.streams[conn.passive].chunks.clear()

    def _connect_result(self, cid: int, ok: bool) -> None:
        conn = self.conns[cid]
        self.nodes[conn.active].on_connected(cid, ok and conn.open)

    def send(self, cid: int, src: str, data: bytes) -> None:
        """One encoded message from ``src``; message-level faults are applied here."""
        conn = self.conns[cid]
        if not conn.open:
            return
        stream = conn.streams[src]
        f, rng = self.faults, self.rng
        if f.drop and rng.random() < f.drop:
            self.count("messages_dropped")
            return
        if f.corrupt and rng.random() < f.corrupt:
            self.count("messages_corrupted")
            flipped = bytearray(data)
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            data = bytes(flipped)
        if f.reorder and stream.held is None and rng.random() < f.reorder:
            self.count("messages_reordered")
            stream.held = data
            self.sched.after(50, "net.release_held", self._release_held, cid, src)
            return
        self._enqueue(conn, stream, data)
        if f.duplicate and rng.random() < f.duplicate:
            self.count("messages_duplicated")
            self._enqueue(conn, stream, data)
        if stream.held is not None:
            held, stream.held = stream.held, None
            self._enqueue(conn, stream, held)

    def _release_held(self, cid: int, src: str) -> None:
        conn = self.conns[cid]
        stream = conn.streams[src]
        if stream.held is not None and conn.open:
            held, stream.held = stream.held, None
            self._enqueue(conn, stream, held)

    def _enqueue(self, conn: Connection, stream: Stream, data: bytes | None) -> None:
        when = max(stream.last_ms, self.sched.now_ms + self.latency_ms())
        stream.last_ms = when
        stream.chunks.append((when, data))
        stream.queued_bytes += len(data) if data else 0
        self.max_queued_bytes = max(self.max_queued_bytes, stream.queued_bytes)
        if not stream.scheduled:
            stream.scheduled = True
            self.sched.at(when, "net.deliver", self._deliver, conn.cid, stream.src)

    def _deliver(self, cid: int, src: str) -> None:
        conn = self.conns[cid]
        stream = conn.streams[src]
        stream.scheduled = False
        if not stream.chunks:
            return
        heal = self.blocked(stream.src, stream.dst) or self.nodes[stream.dst].paused_until_ms
        if heal > self.sched.now_ms:  # retransmitted once it heals / read once it resumes
            stream.scheduled = True
            self.sched.at(heal, "net.deliver", self._deliver, cid, src)
            return
        dst = self.nodes[stream.dst]
        if stream.chunks[0][1] is not None and not dst.wants_data(cid):
            stream.waiting = True  # backpressure: delivered once the reader resumes
            self._waiting.setdefault(stream.dst, set()).add((cid, src))
            return
        _, data = stream.chunks.popleft()
        stream.queued_bytes -= len(data) if data else 0
        if data is None:
            dst.on_closed(cid, f"closed by {stream.src}")
        elif self.faults.split and len(data) > 1 and self.rng.random() < self.faults.split:
            cut = self.rng.randrange(1, len(data))
            dst.on_data(cid, data[:cut])
            dst.on_data(cid, data[cut:])
        else:
            dst.on_data(cid, data)
        if stream.chunks:
            stream.scheduled = True
            self.sched.at(
                max(stream.chunks[0][0], self.sched.now_ms), "net.deliver", self._deliver, cid, src
            )

    def resume(self, name: str) -> None:
        """``name`` may want data again: deliver what waits for it."""
        waiting = self._waiting.pop(name, None)
        for cid, src in sorted(waiting or ()):
            stream = self.conns[cid].streams[src]
            stream.waiting = False
            if not stream.scheduled:
                stream.scheduled = True
                self.sched.at(self.sched.now_ms, "net.deliver", self._deliver, cid, src)

    def close(self, cid: int, by: str) -> None:
        """Orderly close by ``by``: the peer gets what was sent, then the end of stream."""
        conn = self.conns[cid]
        if not conn.open:
            return
        conn.open = False
        stream = conn.streams[by]
        if stream.held is not None:
            held, stream.held = stream.held, None
            self._enqueue(conn, stream, held)
        self._enqueue(conn, stream, None)
        other = conn.streams[conn.passive if by == conn.active else conn.active]
        self._drop_in_flight(conn, other)  # the closer reads no more

    def cut(self, cid: int, notify: tuple[str, ...]) -> None:
        """Abortive end (cable cut, RST, crash): bytes in flight are lost (or arrive late,
        stale, with probability ``faults.stale``); the parties in ``notify`` learn it."""
        conn = self.conns[cid]
        if not conn.open:
            return
        conn.open = False
        for stream in conn.streams.values():
            stream.held = None
            if not (self.faults.stale and self.rng.random() < self.faults.stale):
                self._drop_in_flight(conn, stream)
            elif stream.chunks:
                self.count("stale_streams_kept")
        for name in notify:
            delay = self.latency_ms() + self.rng.randrange(300)
            self.sched.after(delay, "net.reset", self._reset, cid, name)

    def _reset(self, cid: int, name: str) -> None:
        self.nodes[name].on_closed(cid, "connection reset")

    def _drop_in_flight(self, conn: Connection, stream: Stream) -> None:
        stream.chunks = deque(c for c in stream.chunks if c[1] is None)
        stream.queued_bytes = 0

    def open_between(self, a: str, b: str) -> list[int]:
        return [c.cid for c in self.conns.values() if c.open and {c.active, c.passive} == {a, b}]


class StoreLink:
    """A node's calls to the coordination store, through the simulated network."""

    def __init__(self, sched: Scheduler, net: Network, rng: random.Random) -> None:
        self.sched = sched
        self.net = net
        self.rng = rng
        self.slow_until_ms = 0  # a slow database: answers take up to a second
        self.calls = 0
        self.failed = 0

    def _delay(self) -> int:
        if self.sched.now_ms < self.slow_until_ms and self.rng.random() < 0.5:
            return self.rng.randrange(50, 1000)
        return self.net.latency_ms()

    def call(
        self,
        node: str,
        execute: Callable[[], T],
        on_done: Callable[[T | None], None],
        timeout_ms: int,
    ) -> None:
        """Run ``execute`` on the store after a delay; ``on_done(result or None)``."""
        self.calls += 1
        sent = self.sched.now_ms
        deadline = sent + timeout_ms

        def fail() -> None:
            self.failed += 1
            self.sched.at(max(deadline, self.sched.now_ms), "store.timeout", on_done, None)

        def arrive() -> None:
            if self.net.blocked(node, STORE) or self.sched.now_ms > deadline:
                fail()
                return
            result = execute()
            self.sched.after(self._delay(), "store.answer", answer, result)

        def answer(result: T) -> None:
            if self.net.blocked(node, STORE) or self.sched.now_ms > deadline:
                fail()  # executed, but the node never learns it
                return
            on_done(result)

        if self.net.blocked(node, STORE):
            fail()
            return
        self.sched.after(self._delay(), "store.request", arrive)
