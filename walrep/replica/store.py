"""The coordination store contract, its row types and the in-memory implementation.

The store is the arbiter: every decision below is one atomic step on the store's own
clock (``db_now_ms``), never on a node's clock.

* ``try_acquire`` is a compare-and-set from ``expected_epoch`` to ``expected_epoch + 1``.
  It succeeds only when the lease has expired (store time) or is already held by the
  caller, and — unless ``force`` — only when automatic takeover is allowed: no
  maintenance flag (except for the last holder itself), and the caller is the last
  holder, or the group has never had one, or the caller is recorded in-sync *under the
  current epoch*. Records made under an older epoch do not count, so a new holder (or
  the same holder after a restart) starts with nobody in-sync until it says so.
  Every successful acquire writes a history row; a forced one by a node that was not
  in-sync records the possible loss.
* ``renew`` extends the lease if it is still held by ``node`` under ``epoch`` and has
  not expired; ``release`` expires it at once (the peer need not wait for the TTL).
* ``set_in_sync`` records a standby in- or out-of-sync; it succeeds only while the
  caller holds an unexpired lease under ``epoch`` and extends that lease in the same
  step (so a concurrent acquire can never read the old in-sync state).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from walrep.replica.lease import Observed


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What a node publishes about itself with every heartbeat."""

    node_id: str
    role: str
    event_sync_host: str = ""
    event_sync_port: int = 0
    admin_url: str = ""
    log_end: int = 0
    acked: int = 0


@dataclass(frozen=True, slots=True)
class NodeRow:
    info: NodeInfo
    heartbeat_at_ms: int
    heartbeat_age_ms: int  # store clock: now - heartbeat_at


@dataclass(frozen=True, slots=True)
class HistoryRow:
    epoch: int
    at_ms: int
    from_node: str | None
    to_node: str
    reason: str


class CoordinationStore(Protocol):
    async def setup(self) -> None:
        """Create tables and the group's lease row if missing (idempotent)."""

    async def db_now_ms(self) -> int: ...

    async def read_lease(self, group: str) -> Observed: ...

    async def try_acquire(
        self, group: str, node: str, expected_epoch: int, ttl_ms: int, *, force: bool = False
    ) -> tuple[bool, Observed]: ...

    async def renew(self, group: str, node: str, epoch: int, ttl_ms: int) -> bool: ...

    async def release(self, group: str, node: str, epoch: int) -> bool: ...

    async def set_in_sync(
        self, group: str, holder: str, epoch: int, standby: str, in_sync: bool, ttl_ms: int
    ) -> bool: ...

    async def in_sync_nodes(self, group: str) -> dict[str, int]:
        """``node -> epoch under which it was recorded in-sync``."""

    async def publish_node(self, group: str, info: NodeInfo) -> None: ...

    async def nodes(self, group: str) -> list[NodeRow]: ...

    async def history(self, group: str, limit: int = 100) -> list[HistoryRow]:
        """Newest first."""

    async def set_maintenance(self, group: str, on: bool) -> None: ...

    async def close(self) -> None: ...


def decide_acquire(
    seen: Observed, node: str, expected_epoch: int, in_sync_epoch: int | None, force: bool
) -> tuple[bool, bool]:
    """The compare-and-set rule, shared by every store: ``(allowed, caller in-sync)``."""
    expired = seen.expires_at_ms <= seen.db_now_ms
    ours = seen.holder == node
    in_sync = in_sync_epoch is not None and in_sync_epoch == seen.epoch
    automatic = (seen.epoch == 0 or in_sync) and not seen.maintenance
    allowed = seen.epoch == expected_epoch and (expired or ours) and (force or ours or automatic)
    return allowed, in_sync


def acquire_reason(
    previous: str | None, node: str, released: bool, force: bool, in_sync: bool
) -> str:
    """History text for a successful acquire (shared by every store)."""
    if previous is None:
        return "first holder of the group"
    if previous == node:
        return "re-acquired by the last holder"
    if force and not in_sync:
        return (
            f"FORCED takeover by {node}, not in-sync: events acknowledged by {previous} "
            "that this node lacks may be lost"
        )
    if force:
        return f"forced takeover by {node} (in-sync)"
    return f"failover from {previous} (lease {'released' if released else 'expired'})"


@dataclass(slots=True)
class _Lease:
    holder: str | None = None
    epoch: int = 0
    expires_at_ms: int = 0
    maintenance: bool = False
    released: bool = False


class MemoryStore:
    """The store contract in memory, on an injectable clock (tests and the simulator)."""

    def __init__(self, clock_ms: Callable[[], int]) -> None:
        self._clock_ms = clock_ms
        self._leases: dict[str, _Lease] = {}
        self._in_sync: dict[str, dict[str, int]] = {}
        self._nodes: dict[str, dict[str, tuple[NodeInfo, int]]] = {}
        self._history: dict[str, list[HistoryRow]] = {}

    async def setup(self) -> None:
        return None

    async def db_now_ms(self) -> int:
        return self._clock_ms()

    def _lease(self, group: str) -> _Lease:
        return self._leases.setdefault(group, _Lease())

    def _observe(self, group: str) -> Observed:
        lease = self._lease(group)
        return Observed(
            lease.holder, lease.epoch, lease.expires_at_ms, self._clock_ms(), lease.maintenance
        )

    async def read_lease(self, group: str) -> Observed:
        return self._observe(group)

    async def try_acquire(
        self, group: str, node: str, expected_epoch: int, ttl_ms: int, *, force: bool = False
    ) -> tuple[bool, Observed]:
        lease, seen = self._lease(group), self._observe(group)
        allowed, in_sync = decide_acquire(
            seen, node, expected_epoch, self._in_sync.get(group, {}).get(node), force
        )
        if not allowed:
            return False, seen
        previous, now = lease.holder, seen.db_now_ms
        lease.holder, lease.epoch, lease.expires_at_ms = node, lease.epoch + 1, now + ttl_ms
        reason = acquire_reason(previous, node, lease.released, force, in_sync)
        lease.released = False
        self._history.setdefault(group, []).append(
            HistoryRow(lease.epoch, now, previous, node, reason)
        )
        return True, self._observe(group)

    async def renew(self, group: str, node: str, epoch: int, ttl_ms: int) -> bool:
        lease, now = self._lease(group), self._clock_ms()
        if lease.holder != node or lease.epoch != epoch or lease.expires_at_ms <= now:
            return False
        lease.expires_at_ms = now + ttl_ms
        return True

    async def release(self, group: str, node: str, epoch: int) -> bool:
        lease, now = self._lease(group), self._clock_ms()
        if lease.holder != node or lease.epoch != epoch:
            return False
        lease.expires_at_ms = min(lease.expires_at_ms, now)
        lease.released = True
        return True

    async def set_in_sync(
        self, group: str, holder: str, epoch: int, standby: str, in_sync: bool, ttl_ms: int
    ) -> bool:
        if not await self.renew(group, holder, epoch, ttl_ms):
            return False
        records = self._in_sync.setdefault(group, {})
        if in_sync:
            records[standby] = epoch
        else:
            records.pop(standby, None)
        return True

    async def in_sync_nodes(self, group: str) -> dict[str, int]:
        return dict(self._in_sync.get(group, {}))

    async def publish_node(self, group: str, info: NodeInfo) -> None:
        self._nodes.setdefault(group, {})[info.node_id] = (info, self._clock_ms())

    async def nodes(self, group: str) -> list[NodeRow]:
        now = self._clock_ms()
        rows = self._nodes.get(group, {})
        return [NodeRow(info, at, now - at) for _, (info, at) in sorted(rows.items())]

    async def history(self, group: str, limit: int = 100) -> list[HistoryRow]:
        return list(reversed(self._history.get(group, [])))[:limit]

    async def set_maintenance(self, group: str, on: bool) -> None:
        self._lease(group).maintenance = on

    async def close(self) -> None:
        return None
