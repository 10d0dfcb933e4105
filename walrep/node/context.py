"""What the parts of the node core share: the log they read and the core they report to.

``LogState`` is the read-only view of the node's log that the core needs (``Wal`` and
``MemoryLog`` both provide it); the core never writes the log itself, it asks for
writes with effects. ``Context`` is what the node core offers the drivers it is made of
(the active's term and the passive's receiving side): the current input's time, ids,
the lease gate, store calls, and one outbox of effects, in order.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from walrep.errors import WalrepError
from walrep.log.epochs import EpochHistory
from walrep.log.replica_state import ReplicaState
from walrep.node.effects import Effect, StoreOp
from walrep.node.settings import NodeSettings


class LogState(Protocol):
    @property
    def log_start(self) -> int: ...
    @property
    def log_end(self) -> int: ...
    @property
    def durable_end(self) -> int: ...
    @property
    def last_epoch(self) -> int: ...
    @property
    def last_epoch_start(self) -> int: ...
    @property
    def epochs(self) -> EpochHistory: ...
    @property
    def replica_state(self) -> ReplicaState: ...


class Context(Protocol):
    settings: NodeSettings
    log: LogState
    metrics: Counter[str]
    now_ms: int
    known_committed: int  # the highest offset this node knows committed (>= persisted floor)

    def emit(self, effect: Effect) -> None:
        """Append ``effect`` to the current input's list (carried out in order)."""

    def new_id(self) -> int:
        """A connection id, token or call id never used before by this core."""

    def nonce(self) -> bytes:
        """A fresh handshake nonce (os.urandom in production, seeded in the simulator)."""

    def holds_lease(self) -> bool:
        """Leader, and ``now_ms`` before the lease's own-clock deadline."""

    def store_call(self, op: StoreOp) -> int:
        """Emit a ``StoreCall`` for ``op``; returns its call id."""

    def lease_refused(self, epoch: int, reason: str) -> None:
        """The store refused a write under ``epoch``: the lease is not ours any more."""

    def request_sync(self) -> None:
        """Ask for one ``Sync`` (at most one in flight) if the log has unforced bytes."""

    def note_committed(self, offset: int) -> None:
        """An offset this node now knows to be committed (persisted lazily)."""

    def note_epoch(self, epoch: int) -> None:
        """A higher epoch was seen (persisted at once: stale actives stay refused)."""

    def fatal(self, error: WalrepError) -> None:
        """This node failed locally: fence it and stop serving."""
