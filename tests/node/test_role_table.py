"""The role machine's transition table, walked exhaustively (STYLE.md 5)."""

from __future__ import annotations

import itertools

import pytest

from walrep.node.role import (
    ACCEPTS_APPENDS,
    PROMOTION_STEPS,
    RECEIVES,
    STAY,
    TICKS_LEASE,
    TRANSITIONS,
    Event,
    Role,
    RoleMachine,
)

# Combinations that cannot happen, with the reason: everything else is in the table.
IMPOSSIBLE = {
    (Role.STARTING, Event.PROMOTED): "the lease is not ticked before the start",
    (Role.STARTING, Event.ACTIVATED): "no promotion before the start",
    (Role.STARTING, Event.LEASE_LOST): "no lease before the start",
    (Role.STARTING, Event.DEMOTED): "no term before the start",
    (Role.PASSIVE, Event.STARTED): "started once",
    (Role.PASSIVE, Event.ACTIVATED): "activation follows a promotion",
    (Role.PASSIVE, Event.DEMOTED): "demotion follows a term",
    (Role.PROMOTING, Event.STARTED): "started once",
    (Role.PROMOTING, Event.PROMOTED): "the lease machine promotes only a follower",
    (Role.PROMOTING, Event.DEMOTED): "demotion follows a lost lease",
    (Role.ACTIVE, Event.STARTED): "started once",
    (Role.ACTIVE, Event.PROMOTED): "the lease machine promotes only a follower",
    (Role.ACTIVE, Event.ACTIVATED): "activated once per term",
    (Role.ACTIVE, Event.DEMOTED): "demotion follows a lost lease",
    (Role.DEMOTING, Event.STARTED): "started once",
    (Role.DEMOTING, Event.PROMOTED): "the lease is not ticked while demoting",
    (Role.DEMOTING, Event.ACTIVATED): "the promotion was abandoned",
    (Role.FENCED, Event.STARTED): "started once",
    (Role.FENCED, Event.PROMOTED): "a fenced node released its lease machine",
    (Role.FENCED, Event.ACTIVATED): "a fenced node has no promotion",
    (Role.FENCED, Event.DEMOTED): "a fenced node has no term",
    (Role.STOPPED, Event.PROMOTED): "a stopped node released its lease machine",
    (Role.STOPPED, Event.ACTIVATED): "a stopped node has no promotion",
    (Role.STOPPED, Event.DEMOTED): "a stopped node has no term",
}


def test_every_combination_is_decided_or_impossible() -> None:
    for role, event in itertools.product(Role, Event):
        assert ((role, event) in TRANSITIONS) != ((role, event) in IMPOSSIBLE), (role, event)


@pytest.mark.parametrize(("role", "event"), sorted(IMPOSSIBLE, key=str))
def test_an_impossible_combination_raises(role: Role, event: Event) -> None:
    machine = RoleMachine()
    machine.role = role
    with pytest.raises(AssertionError, match="impossible"):
        machine.fire(event)
    assert machine.role is role


@pytest.mark.parametrize(("role", "event"), sorted(TRANSITIONS, key=str))
def test_fire_applies_the_table(role: Role, event: Event) -> None:
    machine = RoleMachine()
    machine.role = role
    target = TRANSITIONS[role, event]
    change = machine.fire(event)
    if target is STAY:
        assert change is None and machine.role is role
    else:
        assert change == (role, target) and machine.role is target


def test_stop_and_failure_always_win() -> None:
    for role in Role:
        stop = TRANSITIONS.get((role, Event.STOP))
        assert stop in (Role.STOPPED, STAY), role
        if role is not Role.STOPPED:
            assert TRANSITIONS[role, Event.LOCAL_FAILURE] in (Role.FENCED, STAY), role
    assert TRANSITIONS[Role.STOPPED, Event.STARTED] is STAY  # a stop before the start wins


def test_only_the_active_accepts_appends_and_only_a_passive_receives() -> None:
    assert {Role.ACTIVE} == ACCEPTS_APPENDS
    assert {Role.PASSIVE} == RECEIVES
    assert Role.DEMOTING not in TICKS_LEASE  # no re-acquiring before the term has settled


def test_the_promotion_order_is_the_designs() -> None:
    assert PROMOTION_STEPS == (
        "fence_lower_epochs",
        "finish_log",
        "catch_up",
        "open_ingest",
        "ship",
    )


def test_a_full_term_walks_the_table() -> None:
    machine = RoleMachine()
    path = [Event.STARTED, Event.PROMOTED, Event.ACTIVATED, Event.LEASE_LOST, Event.DEMOTED]
    roles = []
    for event in path:
        machine.fire(event)
        roles.append(machine.role)
    assert roles == [Role.PASSIVE, Role.PROMOTING, Role.ACTIVE, Role.DEMOTING, Role.PASSIVE]
