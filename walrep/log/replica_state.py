"""What the node has learnt about replication, kept beside the epoch history.

``ReplicaState`` is persisted in ``<dir>/replica-state`` (a small checksummed file,
``smallfile``)::

    walrep-replica-state 1
    committed_floor <n>
    highest_epoch <n>
    crc32c <8 hex digits>

``committed_floor``: every offset below it is known to be committed (durable on every
in-sync node), so ``truncate_after`` refuses to cut below it (``CommittedTruncationError``).
``highest_epoch``: the highest lease epoch this node has seen, so a restarted node still
refuses a stale writer. Both only grow (``merged``); a missing file means zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from walrep.log.fsutil import DEFAULT_FILE_OPS, FileOps
from walrep.log.smallfile import parse_counters, read_lines, write_lines

FILE_NAME: Final = "replica-state"
_HEAD: Final = "walrep-replica-state 1"
_WHAT: Final = "replica state"
_FIELDS: Final = ("committed_floor", "highest_epoch")


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """Replication facts that must survive a restart (see the module docstring)."""

    committed_floor: int = 0
    highest_epoch: int = 0

    def __post_init__(self) -> None:
        assert self.committed_floor >= 0 and self.highest_epoch >= 0, self

    def merged(self, other: ReplicaState) -> ReplicaState:
        """Each field the larger of the two: what is known never gets forgotten."""
        return ReplicaState(
            max(self.committed_floor, other.committed_floor),
            max(self.highest_epoch, other.highest_epoch),
        )


def load_replica_state(directory: Path) -> ReplicaState | None:
    """The saved state; None without a file; ``CorruptLogError`` naming it if damaged."""
    path = directory / FILE_NAME
    lines = read_lines(path, _HEAD, _WHAT)
    if lines is None:
        return None
    floor, epoch = parse_counters(lines, _FIELDS, str(path), _WHAT)
    return ReplicaState(floor, epoch)


def save_replica_state(
    directory: Path, state: ReplicaState, ops: FileOps = DEFAULT_FILE_OPS
) -> None:
    """Replace the file durably (atomic replace)."""
    lines = [f"committed_floor {state.committed_floor}", f"highest_epoch {state.highest_epoch}"]
    write_lines(directory / FILE_NAME, _HEAD, lines, ops)
