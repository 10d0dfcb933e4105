"""Fencing under controlled time: two real lease machines and the in-memory store.

Time is stepped one millisecond at a time; nothing sleeps and no event loop runs. Each
store call is executed ``LATENCY_MS`` after it is sent (on the store's clock) and its
answer delivered as long again later, unless the scenario freezes or breaks it. Node
clocks are the store clock plus a skew, to show that skew changes nothing.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from walrep.replica.lease import (
    Action,
    Fence,
    LeaseMachine,
    LeaseTiming,
    Phase,
    Promoted,
    Renew,
    TryAcquire,
)
from walrep.replica.store import MemoryStore

T = TypeVar("T")
TIMING = LeaseTiming(
    heartbeat_interval_ms=250, lease_ttl_ms=1000, safety_margin_ms=250, poll_interval_ms=100
)
LATENCY_MS = 2
HOUR_MS = 3_600_000
GROUP = "g"


def run_now(call: Coroutine[Any, Any, T]) -> T:
    """Run a MemoryStore call to completion: it never suspends."""
    try:
        call.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    raise AssertionError("the in-memory store suspended")


@dataclass
class Node:
    name: str
    skew_ms: int
    machine: LeaseMachine = field(init=False)
    in_flight: tuple[int, int, Action] | None = None  # (executes at, sent local, action)
    answer: tuple[int, int, Any] | None = None  # (delivered at, sent local, result)

    def __post_init__(self) -> None:
        self.machine = LeaseMachine(self.name, TIMING)

    def believes_leader(self, db_now: int) -> bool:
        m = self.machine
        return m.phase is Phase.LEADER and db_now + self.skew_ms < m.valid_until_ms


@dataclass
class Scenario:
    skew_a_ms: int = 0
    skew_b_ms: int = 0
    freeze_a_renew_at_ms: int | None = None  # from then on a's renewals never answer
    outage_ms: tuple[int, int] | None = None  # store unreachable for everyone in [start, end)
    horizon_ms: int = 6000
    events: list[tuple[int, str, str]] = field(default_factory=list)

    def run(self) -> list[tuple[int, str, str]]:
        db = [0]
        store = MemoryStore(lambda: db[0])
        a, b = Node("a", self.skew_a_ms), Node("b", self.skew_b_ms)
        # a starts as the holder with b recorded in-sync under its epoch.
        assert run_now(store.try_acquire(GROUP, "a", 0, TIMING.lease_ttl_ms))[0]
        assert run_now(store.set_in_sync(GROUP, "a", 1, "b", True, TIMING.lease_ttl_ms))
        self._feed(
            a,
            a.machine.acquire_done(a.skew_ms, a.skew_ms, True, run_now(store.read_lease(GROUP))),
            0,
        )
        b.machine.epoch = 1
        for now in range(1, self.horizon_ms):
            db[0] = now
            for node in (a, b):
                self._step(node, store, now)
            assert not (a.believes_leader(now) and b.believes_leader(now)), (
                f"two leaders at {now} ms"
            )
        return self.events

    def _step(self, node: Node, store: MemoryStore, now: int) -> None:
        local = now + node.skew_ms
        down = self.outage_ms is not None and self.outage_ms[0] <= now < self.outage_ms[1]
        if node.in_flight and node.in_flight[0] == now:
            _, sent, action = node.in_flight
            node.in_flight = None
            frozen = (
                isinstance(action, Renew)
                and node.name == "a"
                and self.freeze_a_renew_at_ms is not None
                and now >= self.freeze_a_renew_at_ms
            )
            if frozen:
                node.in_flight = (-1, sent, action)  # never executes, never answers
            else:
                result = None if down else self._execute(node, store, action)
                if isinstance(action, TryAcquire) and result is not None and result[0]:
                    self.events.append((now, node.name, "acquired in store"))
                node.answer = (now + LATENCY_MS, sent, (action, result))
        if node.answer and node.answer[0] == now:
            _, sent, (action, result) = node.answer
            node.answer = None
            if isinstance(action, TryAcquire):
                won, seen = result if result is not None else (False, None)
                self._feed(node, node.machine.acquire_done(sent, local, won, seen), now)
            else:
                self._feed(node, node.machine.renew_done(sent, local, result), now)
        for action in node.machine.tick(local):
            self._feed(node, [action], now)

    def _feed(self, node: Node, actions: list[Action], now: int) -> None:
        for action in actions:
            if isinstance(action, (TryAcquire, Renew)):
                assert node.in_flight is None
                node.in_flight = (now + LATENCY_MS, now + node.skew_ms, action)
            elif isinstance(action, Promoted):
                self.events.append((now, node.name, f"promoted {action.epoch}"))
            elif isinstance(action, Fence):
                self.events.append((now, node.name, f"fenced {action.epoch}"))

    @staticmethod
    def _execute(node: Node, store: MemoryStore, action: Action) -> Any:
        if isinstance(action, TryAcquire):
            return run_now(
                store.try_acquire(GROUP, node.name, action.expected_epoch, TIMING.lease_ttl_ms)
            )
        assert isinstance(action, Renew)
        return run_now(store.renew(GROUP, node.name, action.epoch, TIMING.lease_ttl_ms))


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
    assert [e[2] for e in events if e[1] == "a"] == ["promoted 1"]
