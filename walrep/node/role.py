"""The node's role as a transition table (pure: no IO, no clock).

Everything that changes a node's role lives in ``TRANSITIONS``, in the spirit of h11's
``_state.py``: ``(role, event) -> new role``. ``STAY`` marks a combination that can happen
and changes nothing (a late lease loss on a passive, a second stop); a combination missing
from the table cannot happen, and ``RoleMachine.fire`` raises ``AssertionError`` for it. A
test walks every combination.

Roles:

* ``STARTING``: the log is open and recovered; nothing is served yet.
* ``PASSIVE``: follows the lease; receives the active's log over event sync.
* ``PROMOTING``: won the lease; runs ``PROMOTION_STEPS`` in order, each one idempotent.
  Nothing is acknowledged until the last one is done: never a half-active node.
* ``ACTIVE``: appends publishers' events, ships them, acknowledges committed ones.
* ``DEMOTING``: lost the lease (or released it): every waiting append has failed; the
  node waits for its own appends still in flight, so that its log is settled before it
  receives as a passive.
* ``FENCED``: failed locally (its log or disk): serves nothing until restarted.
* ``STOPPED``: stopped on purpose.
"""

from __future__ import annotations

import enum
from typing import Final


class Role(enum.Enum):
    STARTING = "STARTING"
    PASSIVE = "PASSIVE"
    PROMOTING = "PROMOTING"
    ACTIVE = "ACTIVE"
    DEMOTING = "DEMOTING"
    FENCED = "FENCED"
    STOPPED = "STOPPED"


class Event(enum.Enum):
    STARTED = "started"  # the executor is ready (log open, ports bound)
    PROMOTED = "promoted"  # the lease is ours under a new epoch
    ACTIVATED = "activated"  # the last promotion step is done
    LEASE_LOST = "lease lost"  # fenced by the lease machine, or released
    DEMOTED = "demoted"  # the term's own appends have all reported back
    LOCAL_FAILURE = "local failure"  # the node's own log or disk failed
    STOP = "stop"  # stop on purpose (SIGTERM, shutdown)


class _Stay:
    def __repr__(self) -> str:
        return "STAY"


STAY: Final = _Stay()

R, E = Role, Event
TRANSITIONS: Final[dict[tuple[Role, Event], Role | _Stay]] = {
    (R.STARTING, E.STARTED): R.PASSIVE,
    (R.STARTING, E.LOCAL_FAILURE): R.FENCED,
    (R.STARTING, E.STOP): R.STOPPED,
    (R.PASSIVE, E.PROMOTED): R.PROMOTING,
    (R.PASSIVE, E.LEASE_LOST): STAY,  # a lease answer that arrives after a stop/restart
    (R.PASSIVE, E.LOCAL_FAILURE): R.FENCED,
    (R.PASSIVE, E.STOP): R.STOPPED,
    (R.PROMOTING, E.ACTIVATED): R.ACTIVE,
    (R.PROMOTING, E.LEASE_LOST): R.DEMOTING,
    (R.PROMOTING, E.LOCAL_FAILURE): R.FENCED,
    (R.PROMOTING, E.STOP): R.STOPPED,
    (R.ACTIVE, E.LEASE_LOST): R.DEMOTING,
    (R.ACTIVE, E.LOCAL_FAILURE): R.FENCED,
    (R.ACTIVE, E.STOP): R.STOPPED,
    (R.DEMOTING, E.DEMOTED): R.PASSIVE,
    (R.DEMOTING, E.LEASE_LOST): STAY,
    (R.DEMOTING, E.LOCAL_FAILURE): R.FENCED,
    (R.DEMOTING, E.STOP): R.STOPPED,
    (R.FENCED, E.LEASE_LOST): STAY,
    (R.FENCED, E.LOCAL_FAILURE): STAY,
    (R.FENCED, E.STOP): R.STOPPED,
    (R.STOPPED, E.STARTED): STAY,  # a stop before the start wins
    (R.STOPPED, E.LEASE_LOST): STAY,
    (R.STOPPED, E.LOCAL_FAILURE): STAY,
    (R.STOPPED, E.STOP): STAY,
}

# Promotion, in order (DESIGN.md "walrep/node"). Winning the lease is what starts it.
#   fence_lower_epochs  stop receiving from any older active (close event-sync
#                       connections) and persist the new epoch as the highest seen
#   finish_log          wait for appends received as a passive, force the log, check that
#                       no frame of the log is from a higher epoch than ours
#   catch_up            the engine has applied every offset the node knows committed
#                       (a warm standby: nothing to do; after a restart: the executor
#                       restored a snapshot and replays the log after it). Sinks resume
#                       from their own applied offsets once the node is active (executor).
#   open_ingest         publishers may append from now on (the executor opens its ports)
#   ship                start shipping to the peer (it connects when it is there)
PROMOTION_STEPS: Final = ("fence_lower_epochs", "finish_log", "catch_up", "open_ingest", "ship")

# Roles in which the lease machine is ticked: it may acquire (PASSIVE) or must renew and
# fence at its deadline (PROMOTING, ACTIVE). Not while DEMOTING: the node does not try to
# win the lease back before its own appends have settled.
TICKS_LEASE: Final = frozenset({R.PASSIVE, R.PROMOTING, R.ACTIVE})
# Roles in which publishers' appends are accepted.
ACCEPTS_APPENDS: Final = frozenset({R.ACTIVE})
# Roles in which inbound event-sync connections are served.
RECEIVES: Final = frozenset({R.PASSIVE})


class RoleMachine:
    """The current role; ``fire`` applies one event through ``TRANSITIONS``."""

    def __init__(self) -> None:
        self.role = Role.STARTING

    def fire(self, event: Event) -> tuple[Role, Role] | None:
        """``(old, new)`` if the role changed, None if the event changes nothing."""
        target = TRANSITIONS.get((self.role, event))
        if target is None:
            raise AssertionError(f"impossible: {event.value!r} in role {self.role.value}")
        if isinstance(target, _Stay):
            return None
        old, self.role = self.role, target
        return old, target
