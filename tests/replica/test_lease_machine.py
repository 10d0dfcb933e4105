"""The pure lease machine, input by input (no store, no clock, no event loop)."""

from __future__ import annotations

import pytest

from walrep.errors import ConfigError
from walrep.replica.lease import (
    Fence,
    LeaseMachine,
    LeaseTiming,
    Observed,
    Phase,
    Promoted,
    Release,
    Renew,
    TryAcquire,
)

T = LeaseTiming(
    heartbeat_interval_ms=100, lease_ttl_ms=600, safety_margin_ms=150, poll_interval_ms=50
)


def seen(holder: str | None, epoch: int) -> Observed:
    return Observed(holder, epoch, expires_at_ms=0, db_now_ms=0, maintenance=False)


def leader(now: int = 1000) -> LeaseMachine:
    m = LeaseMachine("a", T)
    assert m.tick(now) == [TryAcquire(0, False)]
    assert m.acquire_done(now, now + 1, True, seen("a", 1)) == [Promoted(1)]
    return m


def test_timings_that_leave_no_room_for_a_renew_are_refused() -> None:
    with pytest.raises(ConfigError):
        LeaseTiming(heartbeat_interval_ms=500, lease_ttl_ms=600, safety_margin_ms=150)


def test_a_follower_polls_and_promotes_only_on_a_won_compare_and_set() -> None:
    m = LeaseMachine("b", T)
    assert m.tick(0) == [TryAcquire(0, False)]
    assert m.tick(10) == [], "one call in flight at a time"
    assert m.acquire_done(0, 5, False, seen("a", 4)) == []
    assert m.phase is Phase.FOLLOWER and m.epoch == 4
    assert m.tick(54) == [] and m.tick(55) == [TryAcquire(4, False)]


def test_the_leader_renews_every_heartbeat_and_trusts_the_send_time() -> None:
    m = leader(1000)
    assert m.valid_until_ms == 1000 + 450
    assert m.tick(1099) == [] and m.tick(1100) == [Renew(1)]
    assert m.renew_done(1100, 1300, True) == []  # answered late: counts from the send
    assert m.valid_until_ms == 1100 + 450


def test_the_leader_fences_at_its_deadline_even_with_a_renew_in_flight() -> None:
    m = leader(1000)
    assert m.tick(1100) == [Renew(1)]
    assert m.tick(1449) == []
    actions = m.tick(1450)
    assert isinstance(actions[0], Fence) and actions[0].epoch == 1
    assert m.phase is Phase.FOLLOWER
    assert m.renew_done(1100, 1500, True) == [], "a late success must not revive the lease"
    assert m.phase is Phase.FOLLOWER


def test_renew_refused_fences_and_errors_retry_until_the_deadline() -> None:
    m = leader(1000)
    m.tick(1100)
    assert m.renew_done(1100, 1102, None) == []  # error: retry at half a heartbeat
    assert m.tick(1151) == [] and m.tick(1152) == [Renew(1)]
    assert [type(a) for a in m.renew_done(1152, 1153, False)] == [Fence]


def test_a_late_acquire_answer_fences_immediately() -> None:
    m = LeaseMachine("a", T)
    m.tick(0)
    actions = m.acquire_done(0, 500, True, seen("a", 1))
    assert [type(a) for a in actions] == [Fence]


def test_follower_errors_back_off_exponentially_up_to_the_maximum() -> None:
    m = LeaseMachine("b", T)
    now, gaps = 0, []
    for _ in range(8):
        assert m.tick(now) == [TryAcquire(0, False)]
        m.acquire_done(now, now, False, None)
        gap = m.next_wakeup_ms() - now
        gaps.append(gap)
        now += gap
    assert gaps == sorted(gaps) and gaps[0] == 100 and gaps[-1] == T.retry_backoff_max_ms


def test_release_fences_then_expires_the_lease_and_stops() -> None:
    m = leader()
    actions = m.release()
    assert [type(a) for a in actions] == [Fence, Release] and actions[1] == Release(1)
    assert m.tick(10_000) == [] and m.phase is Phase.STOPPED
    # Stopped, it asks for no wake-up: its old due time (long past) would have the
    # process's tick loop tick again at once, forever (a 3 s spin after a switchover).
    assert m.next_wakeup_ms() > 10**15
    m.resume()
    assert m.next_wakeup_ms() <= 10_000  # due: it acquires at the next tick
    assert m.tick(10_000) == [TryAcquire(1, False)]


def test_forced_acquire_is_a_one_shot_request_even_without_auto_acquire() -> None:
    m = LeaseMachine("b", T, auto_acquire=False)
    assert m.tick(0) == []
    assert m.next_wakeup_ms() > 10**15  # nothing to do until asked
    m.request_forced_acquire()
    assert m.next_wakeup_ms() <= 1
    assert m.tick(1) == [TryAcquire(0, True)]
    assert m.acquire_done(1, 2, True, seen("b", 1)) == [Promoted(1)]


def test_lost_fences_only_the_current_epoch() -> None:
    m = leader()
    assert m.lost(0, "old") == []
    assert [type(a) for a in m.lost(1, "refused")] == [Fence]
