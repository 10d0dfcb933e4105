"""Which snapshot a node may restore its engine from (pure): the rule, stated once.

A snapshot holds the state after the records ``[0, offset)`` of the history its writer
had, all of them committed there (an active applies, and so snapshots, only committed
offsets). A node may start its engine from it only if

* it holds that prefix durably: ``offset <= durable end``;
* it can replay what follows: ``offset >= log_start``;
* its own log is the same history there: the record at ``offset - 1`` has the epoch the
  writer's had (``SnapshotMeta.log_epoch``). Same offset and same epoch mean the same
  prefix (the log matching property: one writer per epoch), so this node's ``[0,
  offset)`` is the writer's committed prefix: the node knows it committed from then on
  (``raised_floor``), even when its persisted committed floor was lower (a restart
  before the floor was persisted; seed 721336: the only snapshots left were above it).
  A snapshot of a history that a forced takeover wrote off fails the epoch check.

``snapshot_refusal`` says why not (None: usable). The process (``walrep.node``) and the
simulator both choose with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from walrep.engine.types import SnapshotMeta
from walrep.log.epochs import EpochHistory
from walrep.log.replica_state import ReplicaState


class RestoringLog(Protocol):
    """What the rule reads of a node's log (``Wal`` and ``MemoryLog`` both have it)."""

    @property
    def log_start(self) -> int: ...
    @property
    def durable_end(self) -> int: ...
    @property
    def replica_state(self) -> ReplicaState: ...

    epochs: EpochHistory


def refusal_for(meta: SnapshotMeta, log: RestoringLog) -> str | None:
    """``snapshot_refusal`` with what ``log`` holds."""
    return snapshot_refusal(
        meta,
        log_start=log.log_start,
        durable_end=log.durable_end,
        epoch_at=log.epochs.epoch_at,
    )


def raised_floor(meta: SnapshotMeta, state: ReplicaState) -> ReplicaState:
    """The replica state once the node restores ``meta`` (usable by the rule): its
    committed floor at least the snapshot's offset (that prefix is committed)."""
    return state.merged(ReplicaState(committed_floor=meta.offset))


def snapshot_refusal(
    meta: SnapshotMeta,
    *,
    log_start: int,
    durable_end: int,
    epoch_at: Callable[[int], int | None],
) -> str | None:
    """Why this node may not restore ``meta``'s snapshot; None if it may."""
    if meta.offset > durable_end:
        return f"covers offsets up to {meta.offset}, this node holds {durable_end} durably"
    if meta.offset < log_start:
        return f"ends at {meta.offset}, before this log's start {log_start}"
    if meta.offset > 0:
        here = epoch_at(meta.offset - 1)
        if here != meta.log_epoch:
            return (
                f"offset {meta.offset - 1} has epoch {here} here, {meta.log_epoch} in the "
                "writer's log: another history"
            )
    return None


def log_epoch_before(offset: int, epoch_at: Callable[[int], int | None]) -> int:
    """``SnapshotMeta.log_epoch`` for a snapshot at ``offset`` of this log."""
    if offset == 0:
        return 0
    epoch = epoch_at(offset - 1)
    assert epoch is not None, f"no epoch recorded for offset {offset - 1}"
    return epoch
