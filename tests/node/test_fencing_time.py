"""Fencing under controlled time: two node cores and the in-memory store, step by step.

Time advances one millisecond at a time; nothing sleeps and no event loop runs. This
is a minimal executor of ``NodeCore`` effects: store calls run against a ``MemoryStore``
``LATENCY_MS`` after they are sent (on the store's clock) and are answered as long again
later, unless the scenario freezes or breaks them; connections fail (no network: only
the lease is under test). Node clocks are the store clock plus a skew, to show that skew
changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tests.sim.world import run_now
from walrep.log.config import LogConfig
from walrep.log.memory import MemoryLog
from walrep.log.replica_state import ReplicaState
from walrep.node import effects as fx
from walrep.node.core import NodeCore
from walrep.node.role import Role
from walrep.node.settings import NodeSettings
from walrep.node.stores import run_store_op
from walrep.replica.lease import LeaseTiming
from walrep.replica.store import MemoryStore

TIMING = LeaseTiming(
    heartbeat_interval_ms=250, lease_ttl_ms=1000, safety_margin_ms=250, poll_interval_ms=100
)
LATENCY_MS = 2
HOUR_MS = 3_600_000
GROUP = "g"


@dataclass
class Call:
    executes_at: int
    call: fx.StoreCall
    answer_at: int | None = None
    result: object = None


@dataclass
class Scenario:
    skew_a_ms: int = 0
    skew_b_ms: int = 0
    freeze_a_renew_at_ms: int | None = None  # from then on a's renewals never answer
    outage_ms: tuple[int, int] | None = None  # store unreachable for everyone in [start, end)
    horizon_ms: int = 6000
    events: list[tuple[int, str, str]] = field(default_factory=list)

    def run(self) -> list[tuple[int, str, str]]:
        self.db_ms = 0
        self.store = MemoryStore(lambda: self.db_ms)
        skews = {"a": self.skew_a_ms, "b": self.skew_b_ms}
        logs = {name: MemoryLog.create(LogConfig()) for name in ("a", "b")}
        # b was a standby of a's epoch 1: replication would have made it persist the epoch.
        logs["b"].save_replica_state(ReplicaState(committed_floor=0, highest_epoch=1))
        self.cores = {
            name: NodeCore(
                NodeSettings(group=GROUP, node_id=name, secret=b"s", lease=TIMING),
                logs[name],
                now_ms=skews[name],
                nonce=lambda: bytes(16),
            )
            for name in ("a", "b")
        }
        self.skews = skews
        self.calls: dict[str, list[Call]] = {"a": [], "b": []}
        self._feed("a", self.cores["a"].start(skews["a"]))
        while self.cores["a"].role is not Role.ACTIVE:
            self._step_all()
        # b is recorded in sync under a's epoch, as replication would have done.
        assert run_now(self.store.set_in_sync(GROUP, "a", 1, "b", True, TIMING.lease_ttl_ms))
        self._feed("b", self.cores["b"].start(self.db_ms + skews["b"]))
        self.events = [(0, n, what) for _, n, what in self.events]  # the start is time 0
        self.start_ms = self.db_ms
        while self.db_ms < self.start_ms + self.horizon_ms:
            self._step_all()
            local = {n: self.db_ms + s for n, s in skews.items()}
            holders = [n for n, c in self.cores.items() if c.holds_lease_at(local[n])]
            assert len(holders) <= 1, f"two leaders at {self.db_ms} ms"
        return self.events

    def _now(self) -> int:
        return self.db_ms - getattr(self, "start_ms", self.db_ms)

    def _step_all(self) -> None:
        self.db_ms += 1
        for name, core in self.cores.items():
            local = self.db_ms + self.skews[name]
            for call in list(self.calls[name]):
                if call.executes_at == self.db_ms:
                    self._execute(name, call)
                if call.answer_at == self.db_ms:
                    self.calls[name].remove(call)
                    self._feed(name, core.store_done(call.call.call, call.result, local))
            if local >= core.next_wakeup_ms():
                self._feed(name, core.tick(local))

    def _frozen(self, name: str, call: fx.StoreCall) -> bool:
        t = self.freeze_a_renew_at_ms
        return name == "a" and isinstance(call.op, fx.Renew) and t is not None and self._now() >= t

    def _execute(self, name: str, call: Call) -> None:
        if self._frozen(name, call.call):
            call.executes_at = -1  # never executes, never answers
            return
        o = self.outage_ms
        if o is not None and o[0] <= self._now() < o[1]:
            call.result = None
        else:
            call.result = run_now(run_store_op(self.store, GROUP, name, call.call.op))
            won = isinstance(call.call.op, fx.Acquire) and isinstance(call.result, tuple)
            if won and call.result[0]:
                self.events.append((self._now(), name, "acquired in store"))
        call.answer_at = self.db_ms + LATENCY_MS

    def _feed(self, name: str, effects: list[fx.Effect]) -> None:
        core = self.cores[name]
        local = self.db_ms + self.skews[name]
        for effect in effects:
            if isinstance(effect, fx.StoreCall):
                self.calls[name].append(Call(self.db_ms + LATENCY_MS, effect))
            elif isinstance(effect, fx.Connect):
                self._feed(name, core.connect_done(effect.cid, False, local))
            elif isinstance(effect, fx.RoleChanged):
                if effect.new == Role.PROMOTING.value:
                    self.events.append((self._now(), name, f"promoted {effect.epoch}"))
                elif effect.new == Role.DEMOTING.value:
                    self.events.append((self._now(), name, f"fenced {effect.epoch}"))


def first(events: list[tuple[int, str, str]], node: str, what: str) -> int:
    return next(t for t, n, e in events if n == node and e.startswith(what))


def test_a_frozen_holder_fences_itself_before_the_peer_can_acquire() -> None:
    events = Scenario(freeze_a_renew_at_ms=1000).run()
    fenced = first(events, "a", "fenced 1")
    acquired = first(events, "b", "acquired in store")
    # The last renew that succeeded was sent just before 1000 ms; a stops trusting the
    # lease safety_margin_ms before the store lets anyone else take it.
    assert fenced < acquired
    assert acquired - fenced >= TIMING.safety_margin_ms - 2 * LATENCY_MS
    assert first(events, "b", "promoted 2") >= acquired
    # Detection: from the freeze to b's promotion, within one TTL plus a poll and latency.
    assert (
        first(events, "b", "promoted 2") - 1000
        <= TIMING.lease_ttl_ms + TIMING.poll_interval_ms + 4 * LATENCY_MS
    )


@pytest.mark.parametrize("skew_a_ms", [-HOUR_MS, 0, HOUR_MS])
@pytest.mark.parametrize("skew_b_ms", [-HOUR_MS, 0, HOUR_MS])
def test_node_clock_skew_of_an_hour_changes_nothing(skew_a_ms: int, skew_b_ms: int) -> None:
    baseline = Scenario(freeze_a_renew_at_ms=1000).run()
    skewed = Scenario(skew_a_ms=skew_a_ms, skew_b_ms=skew_b_ms, freeze_a_renew_at_ms=1000).run()
    assert skewed == baseline


def test_store_outage_fences_the_holder_and_promotes_nobody() -> None:
    events = Scenario(outage_ms=(1000, 4000)).run()
    fenced = first(events, "a", "fenced 1")
    assert 1000 < fenced <= 1000 + TIMING.valid_for_ms + LATENCY_MS
    during = [
        e for e in events if 1000 <= e[0] < 4000 and ("promoted" in e[2] or "acquired" in e[2])
    ]
    assert during == [], "nobody may promote without a successful compare-and-set"
    after = [e for e in events if e[0] >= 4000 and e[2].startswith("promoted")]
    assert len(after) == 1, after  # once the store is back, exactly one node takes the lease


def test_a_healthy_holder_keeps_the_lease() -> None:
    events = Scenario().run()
    assert [e for e in events if e[1] == "b"] == []
    assert [e[2] for e in events if e[1] == "a"] == ["acquired in store", "promoted 1"]
