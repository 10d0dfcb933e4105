"""One simulated run: two nodes, the store, the network, faults, invariants, a trace.

``Simulation(seed).run()`` is a pure function of the seed: every random choice comes
from one ``random.Random(seed)`` and the scheduler orders events by (time, sequence).
The run has a fault phase (faults drawn by the seed at random moments) and a quiet
tail (every partition healed, every node up, no new faults) in which the cluster must
acknowledge appends again (loose liveness).
"""

from __future__ import annotations

import hashlib
import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.sim.engine import Reference, SimSnapshots
from tests.sim.invariants import Checker, InvariantViolation, short
from tests.sim.node import Node
from tests.sim.settings import GROUP, Settings
from tests.sim.world import STORE, Faults, Network, Scheduler, StoreLink, run_now
from walrep.engine.core import DigestPoint
from walrep.errors import PeerProtocolError, WalrepError
from walrep.log.frame import Event
from walrep.log.types import AppendResult
from walrep.node import effects as fx
from walrep.node.role import Role
from walrep.replica.messages import Append, Message, MessageReader
from walrep.replica.shipper import Standby
from walrep.replica.store import MemoryStore

FAULT_PHASE_MS = 20_000
QUIET_TAIL_MS = 6_000
# A passive rebuilt from nothing late in the fault phase may still be catching up at the
# end of the quiet tail (small windows, a long log): the run goes on, without workload or
# faults, until it is in sync (the positive signal), at most this much longer.
SETTLE_MAX_MS = 30_000
WORKLOAD_STOP_BEFORE_END_MS = 2_000
# Fault kinds and their weights (a fault every ``mean_gap_ms`` on average, per seed).
FAULT_WEIGHTS = {
    "crash": 4,
    "cut": 4,
    "partition_nodes": 3,
    "partition_store": 3,
    "isolate": 2,
    "pause": 2,
    "slow_fsync": 2,
    "slow_store": 1,
    "switchover": 1,
    # Disk faults of a node that is down (and not recorded in sync: losing the in-sync
    # standby's disk while the active also fails is a double failure no pair survives).
    "wipe": 1,
    "older_copy": 1,
    "repair": 1,
    "disk_error": 1,
    "retention": 2,
    "forced_takeover": 1,
}
# A copy of each node's disk is kept this often, for "older_copy" (a restored backup).
COPY_EVERY_MS = 1500


@dataclass
class RunResult:
    seed: int
    ok: bool
    message: str
    steps: int
    end_ms: int
    digest: str
    stats: dict[str, int] = field(default_factory=dict)


class Simulation:
    def __init__(self, seed: int, *, verbose: bool = False, out: Callable[[str], None] = print):
        self.seed = seed
        self.verbose = verbose
        self._out = out
        self.rng = rng = random.Random(seed)
        self.sched = Scheduler()
        messages_faulty = rng.random() < 0.4
        faults = Faults(
            drop=rng.uniform(0, 0.02) if messages_faulty else 0.0,
            duplicate=rng.uniform(0, 0.02) if messages_faulty else 0.0,
            reorder=rng.uniform(0, 0.02) if messages_faulty else 0.0,
            corrupt=rng.uniform(0, 0.01) if messages_faulty else 0.0,
            stale=0.5 if messages_faulty else 0.1,
        )
        self.mean_gap_ms = rng.choice([400, 1000, 2500])
        self.settings = Settings.draw(rng)
        self.net = Network(self.sched, rng, faults)
        self.store = MemoryStore(lambda: self.sched.now_ms)
        self.store_link = StoreLink(self.sched, self.net, rng)
        skew = [rng.randint(-3_600_000, 3_600_000) for _ in range(2)]
        # Clock rates off by up to 2% (real clocks: ~0.01%): the safety margin covers it.
        drift = [rng.randint(-20_000, 20_000) for _ in range(2)]
        self.stats: dict[str, int] = {}
        self.acked: dict[int, Event] = {}
        self.acked_order: list[int] = []
        self.committed_in_epoch: dict[int, int] = {}  # ghost: the actives' committed offsets
        self.retired_below = 0  # ghost: retention deleted acked events below this
        self._forgiven_epoch = 0
        self.last_promoted_epoch = 0
        self.last_promoted: str | None = None
        self.writers: dict[int, str] = {}
        self.workload_on = True
        self.quiet = False
        self.acked_in_quiet = 0
        self._event_seq = 0
        self._digest = hashlib.blake2b(digest_size=16)
        self.note(
            f"seed {seed}: faults every ~{self.mean_gap_ms} ms, messages {faults}, "
            f"clock skews {skew} ms, drifts {drift} ppm, {self.settings}"
        )
        self._held_seen: dict[str, int] = {}
        self.snapshots = SimSnapshots()
        self.reference = Reference()
        self.checker = Checker(self)
        self.nodes: dict[str, Node] = {}
        self.nodes["a"] = Node(self, "a", "b", skew[0], drift[0])
        self.nodes["b"] = Node(self, "b", "a", skew[1], drift[1])
        self.net.nodes = dict(self.nodes)

    # --- bookkeeping -----------------------------------------------------------------------

    def count(self, what: str, by: int = 1) -> None:
        self.stats[what] = self.stats.get(what, 0) + by

    def note(self, text: str) -> None:
        line = f"{self.sched.now_ms:>7} | {text}"
        self._digest.update(line.encode())
        if self.verbose:
            self._out(line)

    def trace(self, text: str) -> None:
        """A line for the verbose trace only (not in the digest)."""
        if self.verbose:
            self._out(f"{self.sched.now_ms:>7} . {text}")

    def trace_bytes(self, node: str, verb: str, data: bytes) -> None:
        """Bytes sent or received, decoded for the verbose trace only."""
        if not self.verbose:
            return
        try:
            messages: list[Message] = MessageReader().feed(data)
        except PeerProtocolError:
            self.trace(f"{node} {verb} {len(data)} bytes that do not decode")
            return
        for message in messages:
            self.trace(f"{node} {verb} {brief(message)}")

    def new_batch(self, node: str, epoch: int) -> list[Event]:
        """1-6 small events; in one batch out of 20, one of them is 4-12 KB of hex (it
        barely compresses: lz4 is tried, frames outgrow the read size and the windows)."""
        events = []
        for _ in range(self.rng.randint(1, 6)):
            self._event_seq += 1
            events.append(Event("sim", {"n": self._event_seq, "by": node, "epoch": epoch}))
        if self.rng.random() < 0.05:
            self._event_seq += 1
            blob = self.rng.randbytes(self.rng.randint(2_000, 6_000)).hex()
            events.append(Event("sim", {"n": self._event_seq, "by": node, "blob": blob}))
        return events

    # --- hooks from the nodes (invariants 3 and 4 are checked where they happen) -----------

    def on_role(self, node: Node, change: fx.RoleChanged) -> None:
        self.note(
            f"{node.name}: {change.old} -> {change.new} (epoch {change.epoch}): {change.reason}"
        )
        if change.new == Role.PROMOTING.value:
            self._promoted(node, change.epoch)

    def _promoted(self, node: Node, epoch: int) -> None:
        self.count("promotions")
        if epoch <= self.last_promoted_epoch:
            raise InvariantViolation(
                f"(3) {node.name} promoted under epoch {epoch}, not above the last promoted "
                f"epoch {self.last_promoted_epoch}"
            )
        if self.last_promoted not in (None, node.name):
            self.count("failovers")
        self.last_promoted_epoch, self.last_promoted = epoch, node.name

    def forgive_forced(self) -> None:
        """Before the invariants: a forced takeover the store just granted to a standby
        that was not in sync is recorded in the history with its possible loss."""
        rows = run_now(self.store.history(GROUP, limit=1))
        if not rows or rows[0].epoch <= self._forgiven_epoch:
            return
        self._forgiven_epoch = rows[0].epoch
        if rows[0].reason.startswith("FORCED"):
            self._forgive(self.nodes[rows[0].to_node], rows[0].reason)

    def _forgive(self, node: Node, reason: str) -> None:
        """A forced takeover of a standby not in sync, recorded in the history with its
        possible loss: acked events it lacks are lost by the operator's decision. They no
        longer count for (1); the other node's log diverges until it is rebuilt."""
        self.count("forced_takeovers_with_loss")
        durable = node.log.durable_end
        lost = [
            o for o in self.acked_order if o >= durable or node.disk.event_at(o) != self.acked[o]
        ]
        for offset in lost:
            del self.acked[offset]
        self.acked_order = [o for o in self.acked_order if o in self.acked]
        self.count("acked_events_lost_by_forced_takeover", len(lost))
        self.checker.forget()
        self.reference = Reference()  # the digests of the new history, from its start
        node.lost_data = False  # what it holds is the history now
        other = self.nodes[node.peer]
        other.diverged = True
        other.disk.drop_copies()  # backups of a written-off history are never restored
        node.disk.drop_copies()  # nor the winner's from before: they may hold it too (740670)
        self.note(f"{node.name} forced in: {len(lost)} acked events written off ({reason})")

    def on_digest(self, node: Node, point: DigestPoint) -> None:
        """(10) An engine's digest at a digest point equals the straight run's."""
        if node.diverged:
            return  # its history was written off; it is rebuilt before it counts again
        ref = self.reference
        records = None
        start = ref.engine.applied
        if point.offset > start and node.log.log_start <= start:
            records = list(node.log.read(start, point.offset))
        expected = ref.digest_at(point.offset, records)
        if expected is None:
            self.count("engine_digests_unchecked")
            return
        self.count("engine_digests_checked")
        got = point.digest()
        if expected != got:
            raise InvariantViolation(
                f"(10) {node.name}'s engine digest at offset {point.offset} is "
                f"{got}, a straight run of the committed records gives {expected}"
            )

    def no_state_source(self, node: Node) -> None:
        """(10) A node can always rebuild its engine: retention keeps the log after a
        snapshot it may restore."""
        raise InvariantViolation(
            f"(10) {node.name} cannot rebuild its engine: its log starts at "
            f"{node.log.log_start} and no snapshot it may restore is left"
        )

    def on_acked(self, node: Node, result: AppendResult, events: list[Event]) -> None:
        """The core acknowledged a publisher's append: check the lease in the store now."""
        seen = run_now(self.store.read_lease(GROUP))
        if seen.holder != node.name or seen.expires_at_ms <= seen.db_now_ms:
            raise InvariantViolation(
                f"(6) {node.name} acknowledged [{result.base_offset}, {result.end_offset}) "
                f"outside its lease: the store says holder {seen.holder}, epoch {seen.epoch}, "
                f"expires at {seen.expires_at_ms} (now {seen.db_now_ms})"
            )
        for i, event in enumerate(events):
            self.acknowledge(node, result.base_offset + i, event)

    def on_fatal(self, node: Node, error: WalrepError) -> None:
        """A node failed locally: its supervisor (systemd, an operator) restarts it."""
        self.count("local_failures")
        self.note(f"{node.name} failed: {error}")
        if node.up:
            node.crash()
        self.sched.after(self.rng.randint(100, 1000), f"{node.name}.restart", self._restart, node)

    def on_write(self, node: Node, epoch: int) -> None:
        writer = self.writers.setdefault(epoch, node.name)
        if writer != node.name:
            raise InvariantViolation(
                f"(4) {node.name} appends under epoch {epoch}, already written by {writer}"
            )

    def on_truncate(self, node: Node, to_offset: int) -> None:
        self.count("truncations")
        self.note(f"{node.name} truncates its log from {node.log.log_end} to {to_offset}")
        floor = node.log.replica_state.committed_floor
        # After a forced takeover wrote events off, what the node knew committed but had
        # not yet persisted (the floor is a lazy lower bound) may go: only the floor holds.
        known = floor if node.diverged else node.known_committed
        self.checker.on_truncate(node.name, to_offset, known, floor)
        if node.diverged:
            node.known_committed = min(node.known_committed, to_offset)

    def acknowledge(self, node: Node, offset: int, event: Event) -> None:
        previous = self.acked.get(offset)
        if previous is not None:
            if previous != event:
                raise InvariantViolation(
                    f"(1) offset {offset} acknowledged twice: first {short(previous)}, now "
                    f"{short(event)} by {node.name}"
                )
            return
        self.acked[offset] = event
        self.acked_order.append(offset)
        self.count("events_acked")
        if self.quiet:
            self.acked_in_quiet += 1

    # --- faults ----------------------------------------------------------------------------

    def _inject(self) -> None:
        if self.sched.now_ms >= FAULT_PHASE_MS:
            return
        kind = self.rng.choices(list(FAULT_WEIGHTS), list(FAULT_WEIGHTS.values()))[0]
        getattr(self, f"_fault_{kind}")()
        gap = int(self.rng.expovariate(1 / self.mean_gap_ms)) + 1
        self.sched.after(gap, "fault", self._inject)

    def _pick(self) -> Node:
        return self.nodes[self.rng.choice("ab")]

    def _fault_crash(self) -> None:
        node = self._pick()
        if not node.up:
            return
        self.count("crashes")
        node.crash()
        down_ms = self.rng.choice([self.rng.randint(20, 300), self.rng.randint(300, 3000)])
        self.sched.after(down_ms, f"{node.name}.restart", self._restart, node)

    def _restart(self, node: Node) -> None:
        if not node.up:
            node.restart()

    def _operator(self) -> None:
        """A node that refuses to give up events it knew committed, after a forced
        takeover wrote them off, needs an operator: it is rebuilt from the active (its
        data directory is wiped and it restarts empty)."""
        for node in self.nodes.values():
            if node.up and node.diverged and node.core.metrics["replication_divergence_refused"]:
                self.count("rebuilds")
                self.note(f"{node.name}: refuses to drop committed events; rebuilt empty")
                node.crash()
                node.disk.wipe()  # diverged until it restarts from the empty disk
                self.sched.after(
                    self.rng.randint(100, 1000), f"{node.name}.restart", self._restart, node
                )
        self._unstick()
        self.sched.after(500, "operator", self._operator)

    def _unstick(self) -> None:
        """Both nodes up and passive, both holding back from an expired lease since the
        last look (each thinks its directory lost what the other may hold; seed 200368: a
        forced takeover whose winner crashed before it wrote anything): the operator
        forces the node with the longer log in, a forced takeover with its possible loss
        recorded like any other (operations.md)."""
        held = {n.name: n.core.metrics["acquire_held_back"] for n in self.nodes.values()}
        stuck = all(
            n.up and n.role is Role.PASSIVE and held[n.name] > self._held_seen.get(n.name, 0)
            for n in self.nodes.values()
        )
        self._held_seen = held
        seen = run_now(self.store.read_lease(GROUP))
        if stuck and seen.expires_at_ms <= seen.db_now_ms:
            node = max(self.nodes.values(), key=lambda n: (n.log.durable_end, n.name))
            self.count("operator_forced_takeovers")
            self.note(f"{node.name}: both nodes hold back; the operator forces it in")
            node.force_takeover()

    def _fault_cut(self) -> None:
        cids = [c.cid for c in self.net.conns.values() if c.open]
        if not cids:
            return
        self.count("cuts")
        cid = self.rng.choice(cids)
        conn = self.net.conns[cid]
        notify = tuple(x for x in (conn.active, conn.passive) if self.rng.random() < 0.8)
        self.note(f"cut connection {cid} ({conn.active} -> {conn.passive}), told {notify}")
        self.net.cut(cid, notify)

    def _partition(self, a: str, b: str) -> None:
        duration = self.rng.choice([self.rng.randint(50, 500), self.rng.randint(500, 4000)])
        self.count("partitions")
        self.note(f"partition {a} <-> {b} for {duration} ms")
        self.net.partition(a, b, duration)

    def _fault_partition_nodes(self) -> None:
        self._partition("a", "b")

    def _fault_partition_store(self) -> None:
        self._partition(self._pick().name, STORE)

    def _fault_isolate(self) -> None:
        """One node loses the peer and the store at once (a leader then keeps a tail
        nobody else has: divergence to repair later)."""
        node = self._pick()
        duration = self.rng.randint(300, 4000)
        self.count("isolations")
        self.note(f"{node.name} isolated for {duration} ms")
        self.net.partition(node.name, node.peer, duration)
        self.net.partition(node.name, STORE, duration)

    def _fault_pause(self) -> None:
        """The process stalls (GC, VM freeze): its timers and reads run late."""
        node = self._pick()
        if not node.up:
            return
        duration = self.rng.choice([self.rng.randint(10, 300), self.rng.randint(300, 3000)])
        node.paused_until_ms = max(node.paused_until_ms, self.sched.now_ms + duration)
        self.count("pauses")
        self.note(f"{node.name} stalls for {duration} ms")

    def _fault_slow_fsync(self) -> None:
        node = self._pick()
        node.fsync_slow_until_ms = self.sched.now_ms + self.rng.randint(200, 3000)
        self.count("slow_fsync_periods")
        self.note(f"{node.name}: slow fsync until {node.fsync_slow_until_ms}")

    def _fault_slow_store(self) -> None:
        self.store_link.slow_until_ms = self.sched.now_ms + self.rng.randint(200, 3000)
        self.count("slow_store_periods")
        self.note(f"store slow until {self.store_link.slow_until_ms}")

    def _fault_switchover(self) -> None:
        leaders = [node for node in self.nodes.values() if node.up and node.role is Role.ACTIVE]
        if leaders:
            self.count("switchovers")
            self.note(f"{leaders[0].name}: switchover (release the lease)")
            leaders[0].release(self.rng.randint(50, 1500))

    def _down_and_not_in_sync(self) -> Node | None:
        """A passive that is down, not recorded in sync under the current epoch (nor on its
        way to be), and not the lease's last holder.

        The last holder's disk may hold the only copy of events acknowledged while the
        standby was out of sync, and an in-sync standby's is the copy that makes a
        failover lossless: losing one of them on top of the failure that took it down is
        a double failure no pair survives; so is losing the copy that holds more than the
        other node. (The node still holds back from the lease when
        it can tell its data directory lost what it held: ``NodeCore._lost_history``.)
        """
        seen = run_now(self.store.read_lease(GROUP))
        in_sync = run_now(self.store.in_sync_nodes(GROUP))
        marking = {
            n.core.term.shipper.standby
            for n in self.nodes.values()
            if n.up
            and n.core.term is not None
            and n.core.term.shipper.standby_state is not Standby.OUT_OF_SYNC
        }
        down = [
            node
            for node in self.nodes.values()
            if not node.up
            and node.name != seen.holder
            and in_sync.get(node.name) != seen.epoch
            and node.name not in marking
            # Nor the fuller copy: after a forced takeover by an empty node (seed 200368)
            # the last holder may hold less than this one, which is then the only copy.
            and self.nodes[node.peer].log.durable_end >= node.log.durable_end
        ]
        return self.rng.choice(down) if down else None

    def _fault_wipe(self) -> None:
        """The node's data directory is lost (a replaced disk): it comes back empty."""
        node = self._down_and_not_in_sync()
        if node is not None:
            self.count("disks_wiped")
            self.note(f"{node.name}: data directory wiped while down")
            node.disk.wipe()

    def _fault_older_copy(self) -> None:
        """The node's data directory is replaced by an older copy (a restored backup)."""
        node = self._down_and_not_in_sync()
        if node is not None and node.disk.restore_older(self.rng):
            self.count("disks_restored_from_older_copy")
            self.note(f"{node.name}: data directory replaced by an older copy")

    def _fault_repair(self) -> None:
        """A bit flips in the durable log of a down node: it restarts with repair=True."""
        node = self._down_and_not_in_sync()
        if node is not None and node.disk.damage_durable(self.rng):
            self.count("durable_bit_flips")
            self.note(f"{node.name}: a bit flipped in its durable log")

    def _fault_disk_error(self) -> None:
        """The next fsync of a node fails (EIO): the node must stop, never go on."""
        node = self._pick()
        if node.up:
            self.count("disk_errors")
            node.disk.fail_next_sync = True

    def _fault_retention(self) -> None:
        node = next((n for n in self.nodes.values() if n.up and n.role is Role.ACTIVE), None)
        start = node.retention() if node is not None else None
        if node is not None and start is not None:
            self.retired_below = max(self.retired_below, start)
            self.count("retentions")
            self.note(f"{node.name}: retention, the log starts at {start}")

    def _fault_forced_takeover(self) -> None:
        """The operator forces the node that is up to take over from one that is gone."""
        seen = run_now(self.store.read_lease(GROUP))
        if seen.expires_at_ms > seen.db_now_ms:
            return  # someone holds the lease: a forced acquire would be refused anyway
        up = [n for n in self.nodes.values() if n.up and n.role is Role.PASSIVE]
        if up and not all(n.up for n in self.nodes.values()):
            node = self.rng.choice(up)
            self.count("forced_takeovers")
            self.note(f"{node.name}: forced takeover requested")
            node.force_takeover()

    def _keep_copies(self) -> None:
        for node in self.nodes.values():
            if not node.diverged:  # never a backup of a history a forced takeover wrote off
                node.disk.keep_copy()
        if self.sched.now_ms < FAULT_PHASE_MS:
            self.sched.after(COPY_EVERY_MS, "copies", self._keep_copies)

    def _stop_workload(self) -> None:
        self.workload_on = False
        self.note("workload stops")

    def _every_request_answered(self) -> None:
        """(liveness) With the workload stopped for a while and nothing failing, every
        publisher request has been answered: acknowledged, or failed with a typed error.
        Not under ``block``: it may keep a commit waiting forever, by design, for a
        standby that cannot catch up (one wiped behind the log start)."""
        if not self.settings.shipper.degrade:
            return
        for node in self.nodes.values():
            if node.up and node.requests:
                pending = sorted(node.requests)[:5]
                raise InvariantViolation(
                    f"(liveness) {node.name} ({node.role.value}) never answered requests "
                    f"{pending} ({len(node.requests)} pending) although the workload stopped "
                    f"{WORKLOAD_STOP_BEFORE_END_MS} ms before the end"
                )

    def _standby_caught_up(self) -> None:
        problem = self._catch_up_problem()
        if problem is not None:
            raise InvariantViolation(problem)

    def _catch_up_problem(self) -> str | None:
        """(liveness) Faults over and the workload stopped: a passive that can catch up
        (nothing it needs was deleted by retention, nothing it holds was written off)
        has caught up and is recorded in sync. None when it has (or need not)."""
        active = [n for n in self.nodes.values() if n.up and n.role is Role.ACTIVE]
        passive = [n for n in self.nodes.values() if n.up and n.role is Role.PASSIVE]
        if len(active) != 1 or len(passive) != 1 or passive[0].diverged:
            return None
        a, p = active[0], passive[0]
        if p.log.log_end < a.log.log_start or not self.settings.shipper.ack_all:
            return None  # needs a snapshot: retention deleted what it lacks
        term = a.core.term
        assert term is not None
        if p.log.durable_end != a.log.log_end or term.shipper.standby_state is not Standby.IN_SYNC:
            return (
                f"(liveness) the passive {p.name} did not catch up in the quiet tail and "
                f"{SETTLE_MAX_MS} ms more: its log ends at {p.log.log_end} (durable "
                f"{p.log.durable_end}), the active's at {a.log.log_end}; standby "
                f"{term.shipper.standby_state.value}"
            )
        return None

    def _quiet(self) -> None:
        """End of the fault phase: heal everything, restart everyone, stop injecting."""
        self.quiet = True
        self.net.heal_all()
        self.net.faults = Faults(split=self.net.faults.split)  # no more message faults
        self.store_link.slow_until_ms = 0
        for node in self.nodes.values():
            node.fsync_slow_until_ms = 0
            node.paused_until_ms = min(node.paused_until_ms, self.sched.now_ms)
            node.disk.fail_next_sync = False
            if not node.up:
                node.restart()
        self.note("quiet: faults stop")

    # --- running ---------------------------------------------------------------------------

    def _run_until(self, until_ms: int, done: Callable[[], bool]) -> int:
        """Step the world until ``until_ms`` or until ``done()``; the steps taken."""
        steps = 0
        while not done() and len(self.sched) and self.sched.next_time() is not None:
            if self.sched.next_time() > until_ms:  # type: ignore[operator]
                break
            kind, fn, args = self.sched.pop()
            steps += 1
            self._digest.update(f"{self.sched.now_ms} {kind}\n".encode())
            if self.verbose:
                self._out(f"{self.sched.now_ms:>7}   {kind}")
            fn(*args)
            self.checker.check()
        return steps

    def run(self) -> RunResult:
        end_ms = FAULT_PHASE_MS + QUIET_TAIL_MS
        self.sched.after(self.rng.randint(0, self.mean_gap_ms), "fault", self._inject)
        self.sched.at(FAULT_PHASE_MS, "quiet", self._quiet)
        self.sched.at(end_ms - WORKLOAD_STOP_BEFORE_END_MS, "workload stops", self._stop_workload)
        self.sched.after(COPY_EVERY_MS, "copies", self._keep_copies)
        self.sched.after(500, "operator", self._operator)
        steps = 0
        message = ""
        try:
            steps = self._run_until(end_ms, lambda: False)
            steps += self._run_until(
                end_ms + SETTLE_MAX_MS, lambda: self._catch_up_problem() is None
            )
            if self.acked_in_quiet == 0:
                raise InvariantViolation(
                    f"(liveness) nothing acknowledged in the {QUIET_TAIL_MS} ms quiet tail "
                    f"after faults stopped (last promoted epoch {self.last_promoted_epoch})"
                )
            self._every_request_answered()
            self._standby_caught_up()
        except InvariantViolation as e:
            message = str(e)
        except Exception as e:  # a core raised or asserted: also a finding
            where = traceback.extract_tb(e.__traceback__)[-1]
            message = (
                f"exception {type(e).__name__}: {e} at {where.filename.split('/work/main/')[-1]}"
                f":{where.lineno} ({where.name}) at {self.sched.now_ms} ms"
            )
            if self.verbose:
                self._out(traceback.format_exc())
        for node in self.nodes.values():
            self.count("torn_tails_dropped", node.disk.torn_tails_dropped)
            self.count("repairs", node.disk.repairs)
            for key, value in node.core.metrics.items():
                if key.startswith(("replication_", "appends_", "role_changes", "acquire_")):
                    self.count(key, value)
        self.stats.update({f"net_{k}": v for k, v in self.net.stats.items()})
        return RunResult(
            self.seed,
            not message,
            message,
            steps,
            self.sched.now_ms,
            self._digest.hexdigest(),
            dict(sorted(self.stats.items())),
        )


def brief(message: Message) -> str:
    """A message for the trace, without its frames and proofs."""
    if isinstance(message, Append):
        end = message.base_offset + message.count
        return (
            f"Append(epoch={message.epoch}, [{message.base_offset}, {end}), "
            f"commit={message.commit_offset})"
        )
    text = repr(message)
    return text if len(text) < 160 else text[:157] + "..."
