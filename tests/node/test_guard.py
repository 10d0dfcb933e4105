"""``guard.hold_back``: when a node must not ask for the lease on its own, as a table."""

from __future__ import annotations

import pytest

from walrep.node.guard import Knowledge, hold_back
from walrep.replica.lease import Observed


def lease(holder: str | None, epoch: int) -> Observed:
    return Observed(holder, epoch, expires_at_ms=0, db_now_ms=1, maintenance=False)


def me(
    durable: int = 100, highest: int = 3, persisted: int = 3, published: int | None = 100
) -> Knowledge:
    return Knowledge("b", durable, highest, persisted, published)


CASES = [
    # (what, knowledge, observed lease, expected epoch, force, held back?)
    ("first probe of a group never held", me(published=None), None, 0, False, False),
    ("its row not read yet", me(published=None), lease("a", 3), 3, False, True),
    ("an in-sync standby of the current epoch", me(), lease("a", 3), 3, False, False),
    (
        "wiped: log shorter than it published",
        me(durable=0, highest=0, persisted=0),
        lease("a", 3),
        3,
        False,
        True,
    ),
    ("repaired: log cut below what it published", me(durable=40), lease("a", 3), 3, False, True),
    ("wiped last holder", me(durable=0, highest=0, persisted=0), lease("b", 3), 3, False, True),
    (
        "last holder that knew it, log shorter (forced takeover wrote off)",
        me(durable=40),
        lease("b", 3),
        3,
        False,
        False,
    ),
    (
        "won an epoch whose answer was lost",
        me(highest=2, persisted=2),
        lease("b", 3),
        3,
        False,
        False,
    ),
    (
        "standby that never saw the epoch (older copy)",
        me(highest=2, persisted=2),
        lease("a", 3),
        3,
        False,
        True,
    ),
    (
        "forced by the operator, wiped",
        me(durable=0, highest=0, persisted=0),
        lease("a", 3),
        3,
        True,
        False,
    ),
]


@pytest.mark.parametrize(
    ("what", "knowledge", "seen", "expected", "force", "held"), CASES, ids=[c[0] for c in CASES]
)
def test_hold_back(
    what: str, knowledge: Knowledge, seen: Observed | None, expected: int, force: bool, held: bool
) -> None:
    reason = hold_back(knowledge, seen, expected, force)
    assert bool(reason) is held, reason
