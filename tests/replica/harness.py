"""A deterministic transcript driver for two walrep nodes (used by transcript tests).

Two production ``NodeCore``s — node ``a`` (id a1, meant to be the active) and node
``p`` (id p1, the passive) of group g1 — each with its own ``MemoryLog`` (fsync policy
``never``: durability is a step), one ``MemoryStore`` on the harness's clock, and
in-memory byte wires per connection. ``executor.py`` carries out the cores' effects and
holds those that report back until a step completes them; this module is the steps
and what they print; ``invariants.py`` is checked after every step (raising
``InvariantViolation``, which no rewrite of the expected output can bless).

Steps (one per line; ``#`` starts a comment). ``a|p`` names a node; ``SRC->DST`` is a
direction between ``a``, ``p`` and the raw peer ``x``::

    init [key=value...]        first, once: settings of both nodes (keys below) and
                               epoch=E (the store's history ends at E-1, held by a1:
                               a1 acquires epoch E), check-prefix=false
    set a|p key=value...       settings of a node that is not running; also group=,
                               node=, secret=wrong|right
    preload a|p [copy=K] [n=N epoch=E] [committed=C] [highest-epoch=H]
                               a node's disk before it first starts: the other node's
                               frames below K verbatim, N events of stream "old" under
                               epoch E, a persisted committed floor and highest epoch
    start a|p / stop a|p       the process starts (STARTING -> PASSIVE) / stops
    elect a|p                  answer the held lease calls so that this node wins
                               (asking again once if it did not know the epoch)
    store ok|fail [a|p] [KIND] [N]
                               answer held store calls, oldest first (all, or N);
                               KIND: acquire renew release in-sync publish nodes
    append [a|p] N             a publisher's request of N events (NodeCore.submit)
    durable a|p [to=K] [fail]  the pending sync completes (to the log end, or K), or
                               fails (LogFailedError)
    disk-fault a|p append      the node's next append fails (LogFailedError)
    tick [a|p] MS              the clock moves on by MS; that node (or both) ticks
    connect [refuse]           the oldest held connect completes (or is refused)
    connect x->a|x->p          the raw peer opens a connection
    disconnect [N]             the network drops connection N (default: the newest)
    deliver SRC->DST [N]       deliver what is on the wire (or N writes), oldest first
    crash a|p                  the process dies: what is not durable is lost
    disk-copy a|p NAME         keep a copy of the node's durable disk
    restart a|p [wipe|copy=NAME]
                               a new process on its disk (or an empty or older one)
    retention a|p K            delete whole segments below K (log_start moves)
    force a|p / release a|p MS forced takeover / give the lease up for MS
    inject SRC->DST garbage|flip|duplicate|drop|bad-proof|reflect|big=BYTES|trickle=N
    inject SRC->DST append [epoch=E] [base=B] [count=C] [commit=X] [frames=corrupt]
    log a|p / status           a log's frames / every node's and the store's state

Settings keys: ack=all|local on-loss=degrade|block window_bytes window_batches
read_bytes_max standby_timeout_ms heartbeat_interval_ms (event sync) buffer_bytes_max
buffer_events_max max_message_bytes max_connections handshake_timeout_ms
idle_timeout_ms max_pending max_uncommitted_events max_queued lease_ttl_ms
safety_margin_ms lease_heartbeat_ms poll_interval_ms call_timeout_ms
connect_timeout_ms peer_wait_timeout_ms peer_retry_sleep_ms persist_interval_ms
segment_bytes_max max_batch_bytes max_event_bytes.
"""

from __future__ import annotations

import shlex
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import ClassVar

from tests.replica import fmt
from tests.replica.executor import (
    SLOTS,
    STRANGER,
    Connection,
    HeldCall,
    InvariantViolation,
    Item,
    Slot,
    StepError,
    World,
    run_now,
)
from tests.replica.invariants import Invariants
from tests.replica.settings import build_settings, parse_values
from tests.replica.status import status_lines
from walrep.errors import LogFailedError
from walrep.log.frame import Event, build_frame, encode_batch
from walrep.log.memory import DiskImage
from walrep.log.replica_state import ReplicaState
from walrep.node import effects as fx
from walrep.node.settings import NodeSettings
from walrep.replica import lease as lm
from walrep.replica.messages import Append, Error, Heartbeat, HelloOk, MessageReader, encode

__all__ = ["Harness", "InvariantViolation", "StepError"]

KINDS: dict[str, type] = {
    "acquire": fx.Acquire,
    "renew": fx.Renew,
    "release": fx.Release,
    "in-sync": fx.SetInSync,
    "publish": fx.PublishNode,
    "nodes": fx.ReadNodes,
}
FORGED_CODEC = {
    "max_event_bytes": 4096,
    "max_batch_bytes": 1 << 16,
    "compress_threshold_bytes": 1 << 30,
}


def _kv(args: list[str]) -> dict[str, str]:
    out = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise StepError(f"expected key=value, got {arg!r}")
        out[key] = value
    return out


def _direction(text: str) -> tuple[str, str]:
    src, sep, dst = text.partition("->")
    names = (*SLOTS, STRANGER)
    if not sep or src not in names or dst not in names or src == dst:
        raise StepError(f"expected a direction like a->p, got {text!r}")
    return src, dst


class Harness:
    def __init__(self) -> None:
        self._values: dict[str, dict[str, str]] = {name: {} for name in SLOTS}
        self._world: World | None = None
        self._invariants: Invariants | None = None
        self._check_prefix = True
        self._requests = 0

    # --- entry point ---------------------------------------------------------------------

    def run(self, line: str) -> list[str]:
        """Execute one step; return the lines it produced; then check the invariants."""
        words = shlex.split(line, comments=True)
        if not words:
            raise StepError("empty step")
        handler = self._STEPS.get(words[0])
        if handler is None:
            raise StepError(f"unknown step {words[0]!r}")
        if words[0] == "init":
            if self._world is not None:
                raise StepError("init comes first, once")
            handler(self, words[1:])
            return []
        world = self.world
        world.out = []
        handler(self, words[1:])
        world.resume_readers()
        assert self._invariants is not None
        self._invariants.check()
        return world.out

    @property
    def world(self) -> World:
        if self._world is None:
            self._world = World({name: self._settings(name) for name in SLOTS})
            self._invariants = Invariants(self._world, check_prefix=self._check_prefix)
        return self._world

    def _settings(self, name: str) -> NodeSettings:
        return build_settings(name, self._values[name])

    def _slot(self, args: list[str], usage: str) -> Slot:
        if not args or args[0] not in SLOTS:
            raise StepError(usage)
        return self.world.slot(args[0])

    # --- steps: setup --------------------------------------------------------------------

    def step_init(self, args: list[str]) -> None:
        """init [key=value...]: settings of both nodes; epoch=E; check-prefix=false."""
        values = _kv(args)
        epoch = int(values.pop("epoch", "1"))
        self._check_prefix = values.pop("check-prefix", "true") == "true"
        parse_values(values)  # refuse unknown keys now
        for name in SLOTS:
            self._values[name].update(values)
        world = self.world
        if epoch > 1:  # a1 held the earlier epochs (a previous life of this node)
            s = world.slot("a").settings
            for e in range(1, epoch):
                won, _ = run_now(world.store.try_acquire(s.group, s.node_id, e - 1, 1))
                assert won, e
                run_now(world.store.release(s.group, s.node_id, e))

    def step_set(self, args: list[str]) -> None:
        """set a|p key=value...: settings of a node that is not running."""
        slot = self._slot(args, "set a|p key=value...")
        if slot.up:
            raise StepError(f"set {slot.name} while it runs: crash or stop it first")
        values = _kv(args[1:])
        self._values[slot.name].update(values)
        slot.settings = self._settings(slot.name)
        slot.say("settings " + " ".join(f"{k}={v}" for k, v in values.items()))

    def step_preload(self, args: list[str]) -> None:
        """preload a|p [copy=K] [n=N epoch=E] [committed=C] [highest-epoch=H]"""
        slot = self._slot(args, "preload a|p [copy=K] [n=N epoch=E] [committed=C]")
        if slot.core is not None:
            raise StepError("preload a node's disk before it first starts")
        values = _kv(args[1:])
        log = slot.log
        if "copy" in values:
            upto = int(values["copy"])
            source = self.world.slot("p" if slot.name == "a" else "a").log
            for frame in source.frames(source.log_start):
                if frame.header.end_offset <= upto:
                    run_now(log.append_frames(frame.data))
            if log.log_end != upto:
                raise StepError(f"copy={upto} is not a frame boundary of the other log")
        if "n" in values:
            base = log.log_end
            events = [Event("old", {"i": base + k}) for k in range(int(values["n"]))]
            log.append_sync(events, epoch=int(values["epoch"]))
        log.sync_to(log.log_end)
        committed = int(values.get("committed", "0"))
        highest = max(int(values.get("highest-epoch", "0")), log.last_epoch)
        log.save_replica_state(ReplicaState(committed, highest))
        slot.say(f"log {fmt.log_frames(log)}; {fmt.state(log.replica_state)}")

    # --- steps: life cycle ---------------------------------------------------------------

    def step_start(self, args: list[str]) -> None:
        """start a|p: the process is ready (log open, port bound): STARTING -> PASSIVE."""
        self._slot(args, "start a|p").start()

    def step_stop(self, args: list[str]) -> None:
        """stop a|p: stop on purpose (before a start, too: the stop wins)."""
        slot = self._slot(args, "stop a|p")
        core = slot.ensure_core()
        slot.input(core.stop)
        slot.serving = False

    def step_crash(self, args: list[str]) -> None:
        """crash a|p: the process dies; its disk keeps what is durable."""
        self._slot(args, "crash a|p").crash()

    def step_disk_copy(self, args: list[str]) -> None:
        """disk-copy a|p NAME: keep a copy of the node's durable disk as NAME."""
        slot = self._slot(args, "disk-copy a|p NAME")
        if len(args) != 2:
            raise StepError("disk-copy a|p NAME")
        self.world.copies[args[1]] = copy = slot.durable_copy()
        end = copy.segments[-1].base_offset if copy.segments else 0
        slot.say(f"disk copied as {args[1]} (segments from {end})")

    def step_restart(self, args: list[str]) -> None:
        """restart a|p [wipe|copy=NAME]: a new process on the disk the crash left (or an
        empty one, or an older copy)."""
        slot = self._slot(args, "restart a|p [wipe|copy=NAME]")
        image: DiskImage | None = None
        if args[1:] == ["wipe"]:
            image = DiskImage((), (), ReplicaState(), slot.log.limits)
        elif args[1:]:
            name = _kv(args[1:]).get("copy")
            if name is None or name not in self.world.copies:
                raise StepError(f"no disk copy {name!r}")
            image = self.world.copies[name]
        slot.restart(image, damaged=image is not None)

    def step_force(self, args: list[str]) -> None:
        """force a|p: the operator's forced takeover (ignores the in-sync record)."""
        slot = self._slot(args, "force a|p")
        slot.input(slot.core_.force_takeover)

    def step_release(self, args: list[str]) -> None:
        """release a|p MS: give the lease up now (switchover); follow again after MS."""
        slot = self._slot(args, "release a|p MS")
        core, after = slot.core_, int(args[1])
        slot.input(lambda now: core.release(now, after))

    # --- steps: the store ----------------------------------------------------------------

    def step_elect(self, args: list[str]) -> None:
        """elect a|p: answer the nodes' reads of their own rows, then the held Acquire
        calls so that this node wins: its own first (asked again once, after
        poll_interval_ms, if it did not know the epoch), then the other node's."""
        slot = self._slot(args, "elect a|p")
        world = self.world
        # A node reads its own row before it asks for the lease (NodeCore._lost_history):
        # those reads are answered first, then the winner asks at its next poll.
        for held in [h for h in world.calls if isinstance(h.call.op, fx.ReadNodes)]:
            if held in world.calls:
                world.answer(held, True)
        mine = self._held(slot.name, fx.Acquire)
        if not mine:
            self._tick([slot], slot.settings.lease.poll_interval_ms)
            mine = self._held(slot.name, fx.Acquire)
        if not mine:
            raise StepError(f"{slot.name} has no Acquire in flight")
        world.answer(mine[0], True)
        core = slot.core_
        if core.lease.phase is not lm.Phase.LEADER and not self._held(slot.name, fx.Acquire):
            self._tick([slot], slot.settings.lease.poll_interval_ms)
            again = self._held(slot.name, fx.Acquire)
            if again:
                world.answer(again[0], True)
        for other in world.slots.values():
            if other is not slot:
                for held in self._held(other.name, fx.Acquire):
                    world.answer(held, True)

    def _held(self, name: str, kind: type) -> list[HeldCall]:
        return [h for h in self.world.calls if h.slot == name and isinstance(h.call.op, kind)]

    def step_store(self, args: list[str]) -> None:
        """store ok|fail [a|p] [KIND] [N]: answer held store calls, oldest first."""
        if not args or args[0] not in ("ok", "fail"):
            raise StepError("store ok|fail [a|p] [KIND] [N]")
        rest = args[1:]
        name = rest.pop(0) if rest and rest[0] in SLOTS else None
        kind = KINDS[rest.pop(0)] if rest and rest[0] in KINDS else None
        count = int(rest.pop(0)) if rest else None
        if rest:
            raise StepError(f"unexpected {rest!r}")
        chosen = [
            h
            for h in self.world.calls
            if (name is None or h.slot == name) and (kind is None or isinstance(h.call.op, kind))
        ][:count]
        if not chosen:
            self.world.emit("store: nothing held")
        for held in chosen:
            if held in self.world.calls:
                self.world.answer(held, args[0] == "ok")

    # --- steps: appends, the log, time ---------------------------------------------------

    def step_append(self, args: list[str]) -> None:
        """append [a|p] N: a publisher's request of N events, through ``submit``."""
        slot = self.world.slot(args.pop(0)) if args and args[0] in SLOTS else self.world.slot("a")
        if len(args) != 1:
            raise StepError("append [a|p] N")
        self._requests += 1
        request, count = self._requests, int(args[0])
        slot.requests[request] = count
        core = slot.core_
        slot.say(f"submit request {request}: {count} events")
        slot.input(lambda now: core.submit(request, count, now))

    def step_durable(self, args: list[str]) -> None:
        """durable a|p [to=K] [fail]: the pending sync completes (or fails)."""
        slot = self._slot(args, "durable a|p [to=K] [fail]")
        if not slot.sync_pending:
            slot.say("no sync pending")
            return
        slot.sync_pending = False
        core, log = slot.core_, slot.log
        error: LogFailedError | None = None
        if "fail" in args[1:]:
            error = LogFailedError("fdatasync failed: [Errno 5] Input/output error (injected)")
            slot.say(f"sync failed: {error}")
        else:
            log.sync_to(int(_kv([a for a in args[1:] if "=" in a]).get("to", log.log_end)))
            slot.say(f"durable {log.durable_end}")
        slot.input(lambda now: core.synced(error, now))

    def step_disk_fault(self, args: list[str]) -> None:
        """disk-fault a|p append: the node's next append (events or frames) fails."""
        slot = self._slot(args, "disk-fault a|p append")
        if args[1:] != ["append"]:
            raise StepError("disk-fault a|p append")
        slot.fail_next_append = True
        slot.say("the next append will fail")

    def step_retention(self, args: list[str]) -> None:
        """retention a|p K: delete whole segments below K; the core hears it moved."""
        slot = self._slot(args, "retention a|p K")
        log = slot.log
        before = log.log_start
        after = log.delete_before(int(args[1]))
        slot.say(f"log starts at {after}")
        if after != before and slot.up:
            slot.input(slot.core_.log_start_moved)

    def step_tick(self, args: list[str]) -> None:
        """tick [a|p] MS: the clock moves on by MS; that node (or both, a first) ticks."""
        world = self.world
        slots = (
            [world.slot(args.pop(0))] if args and args[0] in SLOTS else list(world.slots.values())
        )
        if len(args) != 1:
            raise StepError("tick [a|p] MS")
        self._tick([s for s in slots if s.up], int(args[0]))

    def _tick(self, slots: list[Slot], ms: int) -> None:
        world = self.world
        world.now_ms += ms
        for slot in slots:
            slot.say(f"tick at {world.now_ms} ms")
            slot.input(slot.core_.tick)

    # --- steps: connections --------------------------------------------------------------

    def step_connect(self, args: list[str]) -> None:
        """connect [refuse]: the oldest held Connect completes; connect x->a|x->p: the
        raw peer connects."""
        world = self.world
        if args and "->" in args[0]:
            src, dst = _direction(args[0])
            if src != STRANGER or dst not in SLOTS:
                raise StepError("connect x->a|x->p")
            server = world.slot(dst)
            if not server.up or not server.serving:
                world.emit(f"connection to {dst} refused")
                return
            world.open_connection(STRANGER, server, None)
            return
        if not world.connects:
            raise StepError("no connect in flight")
        world.complete_connect(world.connects[0], refuse=args == ["refuse"])

    def step_disconnect(self, args: list[str]) -> None:
        """disconnect [N]: the network drops connection N (default: the newest live one)."""
        world = self.world
        live = [c for c in world.conns if any(c.open.values())]
        if args:
            live = [c for c in world.conns if c.number == int(args[0])]
        if not live:
            raise StepError("no connection to drop")
        world.disconnect(live[-1])

    def step_deliver(self, args: list[str]) -> None:
        """deliver SRC->DST [N]: deliver what is on the wire (or N writes)."""
        if not args:
            raise StepError("deliver SRC->DST [N]")
        src, dst = _direction(args[0])
        self.world.deliver(src, dst, int(args[1]) if len(args) > 1 else None)

    # --- steps: faults -------------------------------------------------------------------

    def step_inject(self, args: list[str]) -> None:
        """inject SRC->DST WHAT: damage or forge what travels on a connection."""
        if len(args) < 2:
            raise StepError("inject SRC->DST WHAT")
        src, dst = _direction(args[0])
        conns = [c for c in self.world.conns if {src, dst} == {c.client, c.server} and c.open[src]]
        if not conns:
            raise StepError(f"no open connection {src}->{dst}")
        conn, what = conns[-1], args[1]
        wire = conn.wires[src]
        key, _, value = what.partition("=")
        if what == "garbage":
            wire.append(Item(b"\x07garbage, not a message", "garbage (23 bytes)"))
        elif what in ("flip", "duplicate", "drop"):
            first = self._first(wire)
            if what == "flip":
                assert first.data is not None
                data = first.data[:-1] + bytes([first.data[-1] ^ 1])
                wire[0] = Item(data, f"{first.label} (bit flipped)")
            elif what == "duplicate":
                wire.insert(1, first)
            else:
                wire.popleft()
        elif what in ("bad-proof", "reflect"):
            self._tamper_proof(conn, src, what)
        elif key == "big":
            filler = int(value) - len(encode(Error("junk", "")))
            wire.append(Item(encode(Error("junk", "y" * filler)), f"a message of {value} bytes"))
        elif key == "trickle":
            data = encode(Heartbeat(0))
            for k in range(int(value)):
                wire.append(Item(data[k : k + 1], f"byte {k + 1} of a {len(data)}-byte message"))
        elif what == "append":
            wire.append(self._forged_append(_kv(args[2:])))
        else:
            raise StepError(f"unknown injection {what!r}")
        self.world.emit(f"{src}->{dst} injected {what}")

    def _first(self, wire: deque[Item]) -> Item:
        if not wire or wire[0].data is None:
            raise StepError("nothing queued to tamper with")
        return wire[0]

    def _tamper_proof(self, conn: Connection, src: str, what: str) -> None:
        """Rewrite the queued HelloOk's proof: flipped, or the active's own Hello proof."""
        wire = conn.wires[src]
        for i, item in enumerate(wire):
            if item.data is None:
                break
            (message,) = MessageReader(1 << 31).feed(item.data)
            if isinstance(message, HelloOk):
                proof = (
                    bytes([message.proof[0] ^ 1]) + message.proof[1:]
                    if what == "bad-proof"
                    else conn.hello_proof
                )
                wire[i] = Item(encode(replace(message, proof=proof)), item.label)
                return
        raise StepError("no HelloOk queued")

    def _forged_append(self, values: dict[str, str]) -> Item:
        """An Append the active never sent: real frames, chosen header fields."""
        base = int(values.get("base", "0"))
        count = int(values.get("count", "1"))
        epoch = int(values.get("epoch", "1"))
        events = [Event("forged", {"i": base + k}) for k in range(count)]
        frames = build_frame(
            encode_batch(events, **FORGED_CODEC), base_offset=base, epoch=epoch, ingest_time_ms=0
        )
        if values.get("frames") == "corrupt":
            frames = frames[:-1] + bytes([frames[-1] ^ 1])
        message = Append(epoch, base, count, int(values.get("commit", "0")), frames)
        return Item(encode(message), fmt.message(message))

    # --- steps: inspection ---------------------------------------------------------------

    def step_log(self, args: list[str]) -> None:
        """log a|p: the frames of that node's log."""
        slot = self._slot(args, "log a|p")
        slot.say(f"log {fmt.log_frames(slot.log)}")

    def step_status(self, args: list[str]) -> None:
        """status: each node's role, lease, log, commit, persisted state, shipper or
        receiving side; the store's lease and in-sync records."""
        for line in status_lines(self.world):
            self.world.emit(line)

    _STEPS: ClassVar[dict[str, Callable[[Harness, list[str]], None]]] = {
        "init": step_init,
        "set": step_set,
        "preload": step_preload,
        "start": step_start,
        "stop": step_stop,
        "crash": step_crash,
        "disk-copy": step_disk_copy,
        "restart": step_restart,
        "force": step_force,
        "release": step_release,
        "elect": step_elect,
        "store": step_store,
        "append": step_append,
        "durable": step_durable,
        "disk-fault": step_disk_fault,
        "retention": step_retention,
        "tick": step_tick,
        "connect": step_connect,
        "disconnect": step_disconnect,
        "deliver": step_deliver,
        "inject": step_inject,
        "log": step_log,
        "status": step_status,
    }
