"""Lease logic of one node: a pure state machine (no IO, no clock, no asyncio).

The database decides who holds the lease (compare-and-set in the store, on the
database's clock). This machine decides *when* to ask and what an answer means, in the
node's own monotonic time, which it sees only as ``now_ms`` arguments:

* A follower asks to acquire every ``poll_interval_ms``; it becomes leader only after
  a successful compare-and-set (never on its own judgement of expiry).
* A leader renews every ``heartbeat_interval_ms``. Its lease is valid, by its own
  clock, until ``sent + lease_ttl_ms - safety_margin_ms``, where ``sent`` is when the
  last *successful* acquire or renew was sent: the database set the expiry to its own
  ``now + ttl`` at some moment after that send, so the leader stops believing in the
  lease ``safety_margin_ms`` before anyone else can take it. At that deadline it
  **fences itself** (emits ``Fence``) whether or not a renew is still in flight.
* A store error counts as "no answer": the leader keeps retrying until its deadline; a
  follower backs off exponentially up to ``retry_backoff_max_ms``.
* ``release()`` (graceful shutdown, switchover) fences first, then asks the store to
  expire the lease at once, so the peer takes over without waiting for the TTL.

One store call is in flight at a time. Every input returns the actions to carry out,
in order.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from walrep.errors import ConfigError

# "Due at once", whatever values the node's monotonic clock happens to produce.
_AT_ONCE_MS = -(2**62)
_NEVER_MS = 2**62


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    heartbeat_interval_ms: int = 250
    lease_ttl_ms: int = 1000
    safety_margin_ms: int = 250
    poll_interval_ms: int = 100
    retry_backoff_max_ms: int = 2000

    def __post_init__(self) -> None:
        if min(self.heartbeat_interval_ms, self.poll_interval_ms, self.safety_margin_ms) <= 0:
            raise ConfigError("lease timings must be positive")
        # At least one renew must be possible before the leader's own deadline.
        if self.lease_ttl_ms - self.safety_margin_ms <= self.heartbeat_interval_ms:
            raise ConfigError(
                "lease_ttl_ms - safety_margin_ms must exceed heartbeat_interval_ms "
                f"({self.lease_ttl_ms} - {self.safety_margin_ms} <= {self.heartbeat_interval_ms})"
            )

    @property
    def valid_for_ms(self) -> int:
        """How long after sending a successful renew the leader trusts its lease."""
        return self.lease_ttl_ms - self.safety_margin_ms


class Phase(enum.Enum):
    FOLLOWER = "follower"
    LEADER = "leader"
    STOPPED = "stopped"


# --- actions (outputs) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TryAcquire:
    """Compare-and-set the lease from ``expected_epoch`` to ``expected_epoch + 1``."""

    expected_epoch: int
    force: bool


@dataclass(frozen=True, slots=True)
class Renew:
    epoch: int


@dataclass(frozen=True, slots=True)
class Release:
    epoch: int


@dataclass(frozen=True, slots=True)
class Promoted:
    """The lease is ours under ``epoch``: the node may start its activation."""

    epoch: int


@dataclass(frozen=True, slots=True)
class Fence:
    """Stop writing under ``epoch`` now: no ack, no output, no snapshot under it."""

    epoch: int
    reason: str


Action = TryAcquire | Renew | Release | Promoted | Fence


@dataclass(frozen=True, slots=True)
class Observed:
    """The lease row as the store saw it, with the database's clock."""

    holder: str | None
    epoch: int
    expires_at_ms: int
    db_now_ms: int
    maintenance: bool


class LeaseMachine:
    def __init__(self, node_id: str, timing: LeaseTiming, *, auto_acquire: bool = True) -> None:
        self.node_id = node_id
        self.timing = timing
        self.auto_acquire = auto_acquire
        self.phase = Phase.FOLLOWER
        self.epoch = 0  # our epoch while leader; the last observed epoch otherwise
        self.observed: Observed | None = None
        self.valid_until_ms = _AT_ONCE_MS  # leader only: own-clock deadline of the lease
        self._in_flight = False
        self._next_call_ms = _AT_ONCE_MS
        self._failures = 0
        self._force_next = False

    # --- inputs -------------------------------------------------------------------------

    def tick(self, now_ms: int) -> list[Action]:
        """Time passed: fence at the deadline, start the next call when one is due."""
        actions: list[Action] = []
        if self.phase is Phase.LEADER and now_ms >= self.valid_until_ms:
            # Fence, and nothing else in this tick: the node demotes first (its own appends
            # settle) and only then, ticking again as a follower, may try to acquire.
            return [self._fence(f"no successful renew for {self.timing.valid_for_ms} ms")]
        if self._in_flight or now_ms < self._next_call_ms or self.phase is Phase.STOPPED:
            return actions
        if self.phase is Phase.LEADER:
            self._in_flight = True
            actions.append(Renew(self.epoch))
        elif self.auto_acquire or self._force_next:
            self._in_flight = True
            actions.append(TryAcquire(self.epoch, self._force_next))
        return actions

    def acquire_done(
        self, sent_at_ms: int, now_ms: int, won: bool, seen: Observed | None
    ) -> list[Action]:
        """Result of ``TryAcquire`` sent at ``sent_at_ms``; ``seen`` is None on a store error."""
        self._in_flight = False
        if seen is None:
            return self._failed(now_ms)
        self._failures = 0
        self.observed = seen
        if self.phase is not Phase.FOLLOWER:
            return []  # stopped meanwhile; a won lease simply expires or is released
        if not won:
            self.epoch = seen.epoch
            self._next_call_ms = now_ms + self.timing.poll_interval_ms
            return []
        assert seen.holder == self.node_id, seen
        self._force_next = False
        self.phase = Phase.LEADER
        self.epoch = seen.epoch
        self.valid_until_ms = sent_at_ms + self.timing.valid_for_ms
        self._next_call_ms = sent_at_ms + self.timing.heartbeat_interval_ms
        if now_ms >= self.valid_until_ms:  # the answer came too late to use
            return [self._fence("acquire answered after the lease's own-clock deadline")]
        return [Promoted(self.epoch)]

    def renew_done(self, sent_at_ms: int, now_ms: int, ok: bool | None) -> list[Action]:
        """Result of ``Renew``: True renewed, False lost (epoch or holder changed), None error."""
        self._in_flight = False
        if self.phase is not Phase.LEADER:
            return []  # fenced while the renew was in flight: a late success changes nothing
        if ok is None:
            return self._failed(now_ms)
        if not ok:
            return [self._fence("the lease is no longer ours")]
        self._failures = 0
        self.valid_until_ms = max(self.valid_until_ms, sent_at_ms + self.timing.valid_for_ms)
        self._next_call_ms = sent_at_ms + self.timing.heartbeat_interval_ms
        return []

    def lost(self, epoch: int, reason: str) -> list[Action]:
        """The store refused a write under ``epoch``: the lease is not ours any more."""
        if self.phase is Phase.LEADER and self.epoch == epoch:
            return [self._fence(reason)]
        return []

    def release(self) -> list[Action]:
        """Graceful stop or switchover: fence, then expire the lease in the store."""
        actions: list[Action] = []
        if self.phase is Phase.LEADER:
            epoch = self.epoch
            actions += [self._fence("released"), Release(epoch)]
        self.phase = Phase.STOPPED
        return actions

    def request_forced_acquire(self) -> None:
        """Operator asked for a takeover that ignores in-sync and maintenance checks."""
        self._force_next = True
        self._next_call_ms = _AT_ONCE_MS

    def resume(self) -> None:
        """Follow again after ``release()`` (switchover leaves the node running)."""
        if self.phase is Phase.STOPPED:
            self.phase = Phase.FOLLOWER

    # --- helpers ----------------------------------------------------------------------

    def _fence(self, reason: str) -> Fence:
        fence = Fence(self.epoch, reason)
        self.phase = Phase.FOLLOWER
        self.valid_until_ms = _AT_ONCE_MS
        return fence

    def _failed(self, now_ms: int) -> list[Action]:
        self._failures += 1
        if self.phase is Phase.LEADER:  # keep trying until the deadline fences us
            self._next_call_ms = now_ms + max(1, self.timing.heartbeat_interval_ms // 2)
        else:
            backoff = self.timing.poll_interval_ms * 2 ** min(self._failures, 10)
            self._next_call_ms = now_ms + min(backoff, self.timing.retry_backoff_max_ms)
        return []

    def next_wakeup_ms(self) -> int:
        """When ``tick`` has something to do next (the shell sleeps until then): never a
        time at which ``tick`` would do nothing (a shell that ticks again at once when
        the wake-up is not in the future would spin): not while a call is in flight,
        stopped, or a follower that does not acquire by itself."""
        idle = (
            self._in_flight
            or self.phase is Phase.STOPPED
            or (self.phase is Phase.FOLLOWER and not (self.auto_acquire or self._force_next))
        )
        due = _NEVER_MS if idle else self._next_call_ms
        if self.phase is Phase.LEADER:
            due = min(due, self.valid_until_ms)
        return due
