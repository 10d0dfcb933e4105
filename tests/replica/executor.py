"""The transcript harness's executor: two ``NodeCore``s, their logs, one store, the wires.

This is the third executor of the node core (beside ``walrep.node.runtime`` and
``tests/sim/node.py``), and like them it decides nothing: it carries out the effects a
core returns, in order, from one FIFO queue per node, and feeds the results back as new
inputs. What differs is *when* results come back. Appends, reads, truncations and
persisted state are carried out at once (the in-memory log never suspends); effects
that report back later are **held** until a step completes them, so a scenario chooses
the order of everything that could race:

* store calls (``StoreCall``) wait for ``store ok|fail`` (or ``elect``); an answer is
  the real ``MemoryStore`` result at the harness's clock, or None for a failure;
* a ``Sync`` waits for ``durable a|p`` (the log's fsync policy is ``never``, so
  appended data is durable only once that step says so);
* a ``Connect`` waits for ``connect``; bytes a node sends wait on an in-memory wire of
  their connection until ``deliver``.

Nothing reads a wall clock or a random source: the clock is the harness's ``now_ms``
(shared by both nodes and the store), nonces are counters, ingest times derive from
the clock. Each node is a *slot* (``a`` or ``p``) that keeps its log across crashes and
restarts; a raw peer ``x`` (no core: the harness speaks for it) can connect to a slot.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tests.replica import fmt
from walrep.errors import LogFailedError, WalrepError
from walrep.log.frame import Event
from walrep.log.memory import DiskImage, MemoryLog, SegmentImage
from walrep.log.types import AppendResult
from walrep.node import effects as fx
from walrep.node.core import NodeCore
from walrep.node.queue import EffectQueue
from walrep.node.reads import read_frames
from walrep.node.settings import NodeSettings
from walrep.node.stores import run_store_op
from walrep.replica.messages import Append, Hello, MessageReader
from walrep.replica.store import MemoryStore

SLOTS = ("a", "p")
STRANGER = "x"  # a raw peer: the harness writes its bytes
INGEST_MS = 1_700_000_000_000  # ingest time of an event: this plus the harness clock
T = TypeVar("T")


class StepError(Exception):
    """A malformed or impossible step in a scenario file."""


class InvariantViolation(AssertionError):
    """The cores did something the design forbids (never part of an expected output)."""


def run_now(call: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine of the in-memory log or store, which never suspends."""
    try:
        call.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    call.close()
    raise AssertionError("an in-memory call suspended")


# --- the wires -----------------------------------------------------------------------


@dataclass
class Item:
    """One write on a wire: whole encoded messages (or raw bytes), or EOF (None)."""

    data: bytes | None
    label: str


@dataclass
class Connection:
    """One TCP connection from ``client`` to ``server`` (slot names, or the raw peer)."""

    number: int
    client: str
    server: str
    cids: dict[str, int]  # slot -> the connection's id in that slot's core
    wires: dict[str, deque[Item]]  # by sender: what it wrote, not delivered yet
    open: dict[str, bool]  # by side: not closed by it, and no EOF delivered to it
    paused: set[str] = field(default_factory=set)  # sides not reading (backpressure)
    hello_proof: bytes = b""  # the last Hello's proof (for the reflection fault)
    appends: list[tuple[int, int]] = field(default_factory=list)  # (end, bytes) sent

    def peer(self, side: str) -> str:
        return self.server if side == self.client else self.client

    @property
    def live(self) -> bool:
        return any(self.open.values()) or any(self.wires.values())


@dataclass(frozen=True)
class HeldCall:
    slot: str
    call: fx.StoreCall


@dataclass(frozen=True)
class HeldConnect:
    slot: str
    connect: fx.Connect


# --- one node ------------------------------------------------------------------------


class Slot:
    """One node: its settings, its log (kept across restarts), its core while it runs."""

    def __init__(self, world: World, name: str, settings: NodeSettings) -> None:
        self.world = world
        self.name = name
        self.settings = settings
        self.log = MemoryLog.create(settings.log, clock_ms=world.ingest_ms)
        self.core: NodeCore | None = None
        self.crashed: DiskImage | None = None  # what a crash left, until the restart
        self.serving = False  # accepts connections (started, not crashed or fatal)
        self.damaged = False  # lost data in a disk fault; cleared when recorded in sync
        self.effects = EffectQueue(self._carry_out, lambda: self.up)
        self.requests: dict[int, int] = {}  # publisher request -> events
        self.sync_pending = False
        self.fail_next_append = False
        self.nonces = 0

    @property
    def node_id(self) -> str:
        return self.settings.node_id

    @property
    def up(self) -> bool:
        return self.core is not None and self.crashed is None

    @property
    def core_(self) -> NodeCore:
        if self.core is None or self.crashed is not None:
            raise StepError(f"{self.name} is not running")
        return self.core

    def nonce(self) -> bytes:
        self.nonces += 1
        return f"{self.name}-nonce-{self.nonces}".encode().ljust(16, b".")[:16]

    def ensure_core(self) -> NodeCore:
        """The core of this incarnation, built on the log as it is now."""
        if self.crashed is not None:
            raise StepError(f"{self.name} crashed: restart it")
        if self.core is None:
            self.core = NodeCore(
                self.settings, self.log, now_ms=self.world.now_ms, nonce=self.nonce
            )
        return self.core

    # --- inputs and the effect queue -----------------------------------------------------

    def input(self, call: Callable[[int], list[fx.Effect]]) -> None:
        """Feed one input; print the metrics it counted; carry out its effects (FIFO)."""
        core = self.core_
        before = Counter(core.metrics)
        effects = call(self.world.now_ms)
        for metric, value in sorted(core.metrics.items()):
            if value > before[metric] and not metric.startswith("role_changes_to_"):
                times = value - before[metric]
                self.say(f"count {metric}" + (f" x{times}" if times > 1 else ""))
        self.effects.feed(effects)

    def say(self, line: str) -> None:
        self.world.emit(f"{self.name}: {line}")

    def _carry_out(self, effect: fx.Effect) -> None:
        core, log, w = self.core_, self.log, self.world
        if isinstance(effect, fx.Send):
            w.send(self, effect)
        elif isinstance(effect, fx.Close):
            w.close(self, effect)
        elif isinstance(effect, fx.Connect):
            w.connects.append(HeldConnect(self.name, effect))
            self.say(f"connect to {effect.host}:{effect.port}")
        elif isinstance(effect, fx.StoreCall):
            w.calls.append(HeldCall(self.name, effect))
            self.say(f"store {fmt.store_op(effect.op)}")
        elif isinstance(effect, fx.AppendEvents):
            self._append_events(effect)
        elif isinstance(effect, fx.AppendFrames):
            self._append_frames(effect)
        elif isinstance(effect, fx.ReadFrames):
            read = read_frames(log, effect.from_offset, effect.max_bytes)
            shown = (
                f"{read[0]}..{read[1]} ({len(read[2])} bytes)"
                if isinstance(read, tuple)
                else (f"{type(read).__name__}: {read}")
            )
            self.say(f"read-frames from={effect.from_offset} max={effect.max_bytes} -> {shown}")
            self.input(lambda now: core.frames_read(effect.token, read, now))
        elif isinstance(effect, fx.Sync):
            if self.sync_pending:
                raise InvariantViolation(f"{self.name}: a second Sync while one is in flight")
            self.sync_pending = True
            self.say("sync requested")
        elif isinstance(effect, fx.Truncate):
            self._truncate(effect)
        elif isinstance(effect, fx.PersistState):
            log.save_replica_state(effect.state)
            self.say(f"persist {fmt.state(effect.state)}")
        elif isinstance(effect, fx.Acked):
            w.check_acked(self, effect)
            self.requests.pop(effect.request)
            r = effect.result
            self.say(f"acked request {effect.request} ({r.base_offset}..{r.end_offset})")
        elif isinstance(effect, fx.Failed):
            self.requests.pop(effect.request, None)
            error = effect.error
            self.say(f"request {effect.request} failed: {type(error).__name__}: {error}")
        elif isinstance(effect, fx.RoleChanged):
            self.say(f"{effect.old} -> {effect.new} (epoch {effect.epoch}): {effect.reason}")
        elif isinstance(effect, fx.StepDone):
            self.say(f"promotion step {effect.step} done ({effect.duration_ms} ms)")
        elif isinstance(effect, fx.Notice):
            self.say(f"{effect.level}: {effect.message}")
        else:
            assert isinstance(effect, fx.Fatal), effect
            self.serving = False  # the executor stops serving at once
            self.say(f"FATAL {type(effect.error).__name__}: {effect.error}")

    def _append_events(self, effect: fx.AppendEvents) -> None:
        core, log = self.core_, self.log
        count = self.requests[effect.request]
        outcome: AppendResult | WalrepError
        if self.fail_next_append:
            self.fail_next_append = False
            outcome = LogFailedError("write failed: [Errno 5] Input/output error (injected)")
        else:
            base = log.log_end
            events = [Event("api", {"i": base + k}) for k in range(count)]
            try:
                outcome = log.append_sync(events, epoch=effect.epoch)
            except WalrepError as e:
                outcome = e
        head = f"append request {effect.request}: {count} events under epoch {effect.epoch}"
        self.say(f"{head} -> {_outcome(outcome)}")
        self.input(lambda now: core.appended_events(effect.request, outcome, now))

    def _append_frames(self, effect: fx.AppendFrames) -> None:
        core = self.core_
        outcome: AppendResult | WalrepError
        if self.fail_next_append:
            self.fail_next_append = False
            outcome = LogFailedError("write failed: [Errno 5] Input/output error (injected)")
        else:
            try:
                outcome = run_now(self.log.append_frames(effect.frames))
            except WalrepError as e:
                outcome = e
        refused = (
            f" refused: {type(outcome).__name__}: {outcome}"
            if isinstance(outcome, WalrepError)
            else ""
        )
        self.say(f"append-frames {effect.base_offset}..{effect.end_offset}{refused}")
        self.input(lambda now: core.appended_frames(effect.token, outcome, now))

    def _truncate(self, effect: fx.Truncate) -> None:
        core, log = self.core_, self.log
        self.world.check_truncate(self, effect.to_offset)
        error: WalrepError | None = None
        try:
            log.truncate_after(effect.to_offset)
        except WalrepError as e:
            error = e
        result = (
            f"refused: {type(error).__name__}: {error}"
            if error
            else (f"log [{log.log_start},{log.log_end})")
        )
        self.say(f"truncate to {effect.to_offset} -> {result}")
        self.input(lambda now: core.truncated(error, now))

    # --- life cycle ----------------------------------------------------------------------

    def crash(self) -> None:
        """The process dies: only what is durable stays on its disk."""
        if not self.up:
            raise StepError(f"{self.name} is not running")
        log = self.log
        image = log.disk_image()
        self.crashed = DiskImage(
            tuple(
                SegmentImage(s.base_offset, s.data[: s.durable_bytes], s.durable_bytes)
                for s in image.segments
            ),
            image.epochs,
            image.replica_state,
            image.limits,
        )
        lost = log.log_end - log.durable_end
        self.say(f"crashed: {lost} events not durable lost; {fmt.state(log.replica_state)}")
        self.serving = False
        self.effects = EffectQueue(self._carry_out, lambda: self.up)  # the process died
        self.requests.clear()
        self.sync_pending = False
        self.world.forget(self)

    def restart(self, image: DiskImage | None, damaged: bool) -> None:
        """A new process on what the crash left (or on ``image``: a wiped or older disk)."""
        if self.crashed is None:
            raise StepError(f"{self.name} has not crashed")
        chosen = self.crashed if image is None else image
        self.crashed = None
        self.damaged = self.damaged or damaged
        self.log = MemoryLog.recover(chosen, self.settings.log, clock_ms=self.world.ingest_ms)
        self.core = None
        self.say(f"restarted: log {fmt.log_frames(self.log)}; {fmt.state(self.log.replica_state)}")
        self.start()

    def start(self) -> None:
        core = self.ensure_core()
        self.serving = True
        self.input(core.start)

    def durable_copy(self) -> DiskImage:
        """The durable part of the disk now (a backup an operator could restore)."""
        image = self.log.disk_image() if self.crashed is None else self.crashed
        segments = tuple(
            SegmentImage(s.base_offset, s.data[: s.durable_bytes], s.durable_bytes)
            for s in image.segments
        )
        return DiskImage(segments, image.epochs, image.replica_state, image.limits)


def _outcome(outcome: AppendResult | WalrepError) -> str:
    if isinstance(outcome, WalrepError):
        return f"refused: {type(outcome).__name__}: {outcome}"
    return f"{outcome.base_offset}..{outcome.end_offset}"


# --- the world: clock, store, slots, wires -------------------------------------------


class World:
    def __init__(self, settings: dict[str, NodeSettings]) -> None:
        self.now_ms = 0
        self.store = MemoryStore(lambda: self.now_ms)
        self.out: list[str] = []
        self.slots = {name: Slot(self, name, settings[name]) for name in SLOTS}
        self.conns: list[Connection] = []
        self.calls: list[HeldCall] = []
        self.connects: list[HeldConnect] = []
        self.copies: dict[str, DiskImage] = {}

    def ingest_ms(self) -> int:
        return INGEST_MS + self.now_ms

    def emit(self, line: str) -> None:
        self.out.append(line)

    def slot(self, name: str) -> Slot:
        if name not in self.slots:
            raise StepError(f"no node {name!r} (a or p)")
        return self.slots[name]

    def by_host(self, host: str) -> Slot | None:
        return next((s for s in self.slots.values() if s.settings.advertised_host == host), None)

    # --- connections ---------------------------------------------------------------------

    def tag(self, conn: Connection) -> str:
        """``[cN]`` when more than one connection is live (otherwise it is unambiguous)."""
        return f" [c{conn.number}]" if sum(c.live for c in self.conns) > 1 else ""

    def open_connection(self, client: str, server: Slot, client_cid: int | None) -> Connection:
        number = len(self.conns) + 1
        cids = {server.name: server.core_.new_id()}
        if client_cid is not None:
            cids[client] = client_cid
        conn = Connection(
            number,
            client,
            server.name,
            cids,
            {client: deque(), server.name: deque()},
            {client: True, server.name: True},
        )
        self.conns.append(conn)
        self.emit(f"connection {number}: {client} -> {server.name} open")
        server.input(lambda now: server.core_.accepted(cids[server.name], now))
        return conn

    def find(self, slot: Slot, cid: int) -> Connection | None:
        return next((c for c in self.conns if c.cids.get(slot.name) == cid), None)

    def send(self, slot: Slot, effect: fx.Send) -> None:
        conn = self.find(slot, effect.cid)
        if conn is None or not conn.open[slot.name]:
            raise InvariantViolation(f"{slot.name} sent on connection {effect.cid} after it ended")
        messages = MessageReader(1 << 31).feed(effect.data)
        label = " ".join(fmt.message(m) for m in messages)
        for m in messages:
            if isinstance(m, Hello):
                conn.hello_proof = m.proof
            if isinstance(m, Append) and slot.name == conn.client:
                conn.appends.append((m.base_offset + m.count, len(m.frames)))
        slot.say(f"send {label}{self.tag(conn)}")
        conn.wires[slot.name].append(Item(effect.data, label))

    def close(self, slot: Slot, effect: fx.Close) -> None:
        """``slot`` closes its socket: what it wrote still arrives, then EOF; bytes still
        on their way to it are dropped."""
        who = "by peer" if effect.by_peer else "by us"
        held = next(
            (h for h in self.connects if h.slot == slot.name and h.connect.cid == effect.cid), None
        )
        if held is not None:
            self.connects.remove(held)
            slot.say(f"close ({who}): {effect.reason}")
            return
        conn = self.find(slot, effect.cid)
        if conn is None:
            slot.say(f"close ({who}): {effect.reason}")
            return
        slot.say(f"close ({who}): {effect.reason}{self.tag(conn)}")
        if conn.open[slot.name]:
            self._shut(conn, slot.name)

    def _shut(self, conn: Connection, side: str) -> None:
        conn.open[side] = False
        conn.wires[side].append(Item(None, "EOF"))
        conn.wires[conn.peer(side)].clear()

    def forget(self, slot: Slot) -> None:
        """A crashed process: its held calls die with it; the kernel closes its sockets."""
        self.calls = [h for h in self.calls if h.slot != slot.name]
        self.connects = [h for h in self.connects if h.slot != slot.name]
        for conn in self.conns:
            if conn.open.get(slot.name):
                self._shut(conn, slot.name)
            conn.cids.pop(slot.name, None)  # the next process numbers its own connections

    def deliver(self, src: str, dst: str, limit: int | None) -> None:
        """Deliver what ``src`` wrote towards ``dst``, oldest connection first."""
        delivered = 0
        for conn in list(self.conns):
            if {src, dst} != {conn.client, conn.server}:
                continue
            wire = conn.wires[src]
            while wire and (limit is None or delivered < limit):
                target = self.slots.get(dst)
                wanted = target is None or not conn.open[dst] or not target.up
                if not wanted and target is not None:
                    wanted = target.core_.wants_data(conn.cids[dst])
                if not wanted and target is not None:
                    target.say(f"not reading (buffer full){self.tag(conn)}")
                    conn.paused.add(dst)
                    break
                item = wire.popleft()
                delivered += 1
                self._deliver_item(conn, src, dst, item)
        if delivered == 0:
            self.emit(f"{src}->{dst}: nothing to deliver")

    def _deliver_item(self, conn: Connection, src: str, dst: str, item: Item) -> None:
        tag = self.tag(conn)
        target = self.slots.get(dst)
        if not conn.open[dst] or (target is not None and not target.up):
            self.emit(f"{src}->{dst} {item.label} (dropped: closed on arrival){tag}")
            return
        if item.data is None:
            conn.open[dst] = False
            self.emit(f"{dst}: connection {conn.number} closed by {src}")
            if target is not None:
                core, cid = target.core_, conn.cids[dst]
                target.input(lambda now: core.closed(cid, "closed by the peer", now))
            return
        self.emit(f"{src}->{dst} {item.label}{tag}")
        if target is not None:
            core, data, cid = target.core_, item.data, conn.cids[dst]
            target.input(lambda now: core.received(cid, data, now))

    def resume_readers(self) -> None:
        """A side that stopped reading reads again once its core wants data."""
        for conn in self.conns:
            for side in sorted(conn.paused):
                slot = self.slots[side]
                if not slot.up or not conn.open[side]:
                    conn.paused.discard(side)
                elif slot.core_.wants_data(conn.cids[side]):
                    conn.paused.discard(side)
                    slot.say(f"reading again{self.tag(conn)}")

    def disconnect(self, conn: Connection) -> None:
        """The network drops the connection: both ends see it end, nothing more arrives."""
        self.emit(f"connection {conn.number} lost")
        for side in (conn.client, conn.server):
            conn.wires[side].clear()
        for side in (conn.client, conn.server):
            if not conn.open[side]:
                continue
            conn.open[side] = False
            slot = self.slots.get(side)
            if slot is not None and slot.up:
                self._lost(slot, conn.cids[side])

    def _lost(self, slot: Slot, cid: int) -> None:
        core = slot.core_
        slot.input(lambda now: core.closed(cid, "connection lost", now))

    def complete_connect(self, held: HeldConnect, refuse: bool) -> None:
        self.connects.remove(held)
        client = self.slots[held.slot]
        effect = held.connect
        server = self.by_host(effect.host)
        if refuse or server is None or not server.up or not server.serving:
            self.emit(f"connection to {effect.host}:{effect.port} refused")
            client.input(lambda now: client.core_.connect_done(effect.cid, False, now))
            return
        self.open_connection(client.name, server, effect.cid)
        client.input(lambda now: client.core_.connect_done(effect.cid, True, now))

    # --- the store -----------------------------------------------------------------------

    def answer(self, held: HeldCall, ok: bool) -> None:
        """Answer a held store call with the real store's result (or None: failed)."""
        self.calls.remove(held)
        slot = self.slots[held.slot]
        op = held.call.op
        result: object = None
        if ok:
            s = slot.settings
            result = run_now(run_store_op(self.store, s.group, s.node_id, op))
        self.emit(f"store: {slot.node_id} {fmt.store_op(op)} -> {fmt.store_result(op, result)}")
        if isinstance(op, fx.SetInSync) and op.in_sync and result is True:
            for other in self.slots.values():
                if other.node_id == op.standby:
                    other.damaged = False  # recorded anew: the guarantee holds again
        call = held.call.call
        slot.input(lambda now: slot.core_.store_done(call, result, now))

    # --- invariant hooks at effects ------------------------------------------------------

    def check_acked(self, slot: Slot, effect: fx.Acked) -> None:
        """Nothing is acknowledged unless the store says this node holds an unexpired lease."""
        seen = run_now(self.store.read_lease(slot.settings.group))
        if seen.holder != slot.node_id or seen.expires_at_ms <= self.now_ms:
            raise InvariantViolation(
                f"{slot.name} acked request {effect.request} at {self.now_ms} ms, but the "
                f"store says: {fmt.lease(seen)}"
            )

    def check_truncate(self, slot: Slot, to_offset: int) -> None:
        """No truncation below the persisted committed floor or what the node knows."""
        floor = slot.log.replica_state.committed_floor
        known = slot.core_.known_committed
        if to_offset < max(floor, known):
            raise InvariantViolation(
                f"{slot.name} asked to truncate to {to_offset}, below its committed floor "
                f"{floor} / known committed {known}"
            )
