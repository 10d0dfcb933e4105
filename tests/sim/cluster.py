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

from tests.sim.invariants import Checker, InvariantViolation, short
from tests.sim.node import Node
from tests.sim.settings import Settings
from tests.sim.world import STORE, Faults, Network, Scheduler, StoreLink
from walrep.log.frame import Event
from walrep.replica.messages import Append, Message
from walrep.replica.store import MemoryStore

FAULT_PHASE_MS = 20_000
QUIET_TAIL_MS = 6_000
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
}


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
        self.nodes = {
            "a": Node(self, "a", "b", skew[0], drift[0]),
            "b": Node(self, "b", "a", skew[1], drift[1]),
        }
        self.net.nodes = dict(self.nodes)
        self.checker = Checker(self)
        self.stats: dict[str, int] = {}
        self.acked: dict[int, Event] = {}
        self.acked_order: list[int] = []
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

    # --- bookkeeping -----------------------------------------------------------------------

    def count(self, what: str, by: int = 1) -> None:
        self.stats[what] = self.stats.get(what, 0) + by

    def note(self, text: str) -> None:
        line = f"{self.sched.now_ms:>7} | {text}"
        self._digest.update(line.encode())
        if self.verbose:
            self._out(line)

    def trace_message(self, node: str, verb: str, message: Message) -> None:
        """A message sent or received, for the verbose trace only (not in the digest)."""
        if self.verbose:
            self._out(f"{self.sched.now_ms:>7} . {node} {verb} {brief(message)}")

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

    def on_promoted(self, node: Node, epoch: int) -> None:
        self.count("promotions")
        if epoch <= self.last_promoted_epoch:
            raise InvariantViolation(
                f"(3) {node.name} promoted under epoch {epoch}, not above the last promoted "
                f"epoch {self.last_promoted_epoch}"
            )
        if self.last_promoted not in (None, node.name):
            self.count("failovers")
        self.last_promoted_epoch, self.last_promoted = epoch, node.name
        self.note(f"{node.name} promoted under epoch {epoch}, log end {node.log.log_end}")

    def on_write(self, node: Node, epoch: int) -> None:
        writer = self.writers.setdefault(epoch, node.name)
        if writer != node.name:
            raise InvariantViolation(
                f"(4) {node.name} appends under epoch {epoch}, already written by {writer}"
            )

    def on_truncate(self, node: Node, to_offset: int) -> None:
        self.count("truncations")
        self.note(f"{node.name} truncates its log from {node.log.log_end} to {to_offset}")
        self.checker.on_truncate(node.name, to_offset, node.known_committed)

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
        leaders = [node for node in self.nodes.values() if node.leader]
        if leaders:
            self.count("switchovers")
            self.note(f"{leaders[0].name}: switchover (release the lease)")
            leaders[0].switchover(self.rng.randint(50, 1500))

    def _quiet(self) -> None:
        """End of the fault phase: heal everything, restart everyone, stop injecting."""
        self.quiet = True
        self.net.heal_all()
        self.store_link.slow_until_ms = 0
        for node in self.nodes.values():
            node.fsync_slow_until_ms = 0
            node.paused_until_ms = min(node.paused_until_ms, self.sched.now_ms)
            if not node.up:
                node.restart()
        self.note("quiet: faults stop")

    # --- running ---------------------------------------------------------------------------

    def run(self) -> RunResult:
        end_ms = FAULT_PHASE_MS + QUIET_TAIL_MS
        self.sched.after(self.rng.randint(0, self.mean_gap_ms), "fault", self._inject)
        self.sched.at(FAULT_PHASE_MS, "quiet", self._quiet)
        steps = 0
        message = ""
        try:
            while len(self.sched) and self.sched.next_time() is not None:
                if self.sched.next_time() > end_ms:  # type: ignore[operator]
                    break
                kind, fn, args = self.sched.pop()
                steps += 1
                self._digest.update(f"{self.sched.now_ms} {kind}\n".encode())
                if self.verbose:
                    self._out(f"{self.sched.now_ms:>7}   {kind}")
                fn(*args)
                self.checker.check()
            if self.acked_in_quiet == 0:
                raise InvariantViolation(
                    f"(liveness) nothing acknowledged in the {QUIET_TAIL_MS} ms quiet tail "
                    f"after faults stopped (last promoted epoch {self.last_promoted_epoch})"
                )
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
            self.count("torn_tails_dropped", node.log.torn_tails_dropped)
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
