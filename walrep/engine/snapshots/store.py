"""What a snapshot store is, and the two decisions made on top of any store.

A store keeps encoded snapshots (``format``) and guarantees, for every implementation:

* **All or nothing.** A save is visible completely or not at all; a reader never sees a
  partial snapshot, also across a crash in the middle of a save.
* **Fenced by epoch.** The store keeps the highest epoch that ever saved to it and
  refuses a save under a lower one with ``SnapshotFencedError``, atomically with the
  write (the check and the write are one transaction, or one lock + rename). So a
  stale active cannot overwrite the new active's snapshots, even when the snapshot
  database is not the coordination database.
* **Newest first.** ``list`` orders by (epoch, offset) descending, then by save order:
  the newest epoch's latest state first. Under fencing that is also the save order.
* **Typed failures.** Storage that cannot be reached is ``SnapshotError`` with
  ``retriable`` True; damage is ``SnapshotCorruptError``; a stale writer is
  ``SnapshotFencedError``; neither of the last two is retriable.

The decisions every caller must make the same way live here once: ``save_then_trim``
(trim only after a save succeeded: never because of a failure) and
``load_newest_valid`` (the recovery selection).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NewType, Protocol

from walrep.engine.types import SnapshotMeta
from walrep.errors import SnapshotCorruptError, SnapshotNotFoundError, SnapshotTooLargeError

SnapshotId = NewType("SnapshotId", str)


@dataclass(frozen=True)
class SnapshotInfo:
    """One stored snapshot as ``list`` sees it, before its bytes are read.

    ``epoch`` and ``offset`` always come from the store's own index (the row or the
    file name). ``meta`` is the stored metadata, not yet verified (``load`` verifies
    everything), or None when it cannot be read: the snapshot is damaged and ``load``
    says how.
    """

    id: SnapshotId
    epoch: int
    offset: int
    meta: SnapshotMeta | None


def newest_first_key(epoch: int, offset: int, sequence: int) -> tuple[int, int, int]:
    """Sort key (use with ``reverse=True``): epoch, then offset, then save order."""
    return epoch, offset, sequence


class SnapshotReader(Protocol):
    """The read side of a store: what recovery and the replay tool use (never a write)."""

    async def list(self) -> list[SnapshotInfo]:
        """Every stored snapshot, newest first (see the module docstring)."""

    async def load(self, snapshot_id: SnapshotId) -> tuple[SnapshotMeta, bytes]:
        """``(meta, state)``, verified (CRC, chunks, digest, index against the meta)."""


class SnapshotStore(SnapshotReader, Protocol):
    """A fenced, all-or-nothing home for snapshots (DB tables or a directory)."""

    async def setup(self) -> None:
        """Create what the store needs if missing (idempotent; safe when two nodes race)."""

    async def save(self, meta: SnapshotMeta, state: bytes) -> SnapshotId:
        """Store one snapshot, fenced by ``meta.epoch``; all or nothing.

        Ordering: the epoch is compared and the fence raised, the bytes written, and
        the snapshot made visible (header row / rename) in one atomic step; a refused
        save writes nothing.
        """

    async def trim(self, keep: int) -> int:
        """Delete all but the ``keep`` newest snapshots; the number deleted.

        Call only after a successful save (``save_then_trim``): never because of a
        failure, so the revisions recovery needs survive any failed attempt.
        """

    async def close(self) -> None:
        """Release connections; the store is not used afterwards."""


async def save_then_trim(
    store: SnapshotStore, meta: SnapshotMeta, state: bytes, revisions_to_keep: int
) -> SnapshotId:
    """Save, and trim to ``revisions_to_keep`` only once the save has succeeded.

    A failed save raises before anything is trimmed (the seed trimmed its buffers even
    when the snapshot write had failed; this is the one place that decides otherwise).
    A failed trim after a successful save raises too: the snapshot is stored, and the
    next successful save trims again.
    """
    assert revisions_to_keep >= 1, revisions_to_keep
    snapshot_id = await store.save(meta, state)
    await store.trim(revisions_to_keep)
    return snapshot_id


# A snapshot recovery passed over, and why (to be logged and counted by the caller).
Skipped = tuple[SnapshotId, str]

# Failures that mean "this snapshot is unusable", not "the store is unreachable".
_UNUSABLE = (SnapshotCorruptError, SnapshotNotFoundError, SnapshotTooLargeError)


async def load_newest_valid(
    store: SnapshotReader,
    accept: Callable[[SnapshotMeta], bool],
    *,
    on_skip: Callable[[SnapshotId, str], None] | None = None,
) -> tuple[SnapshotMeta, bytes, list[Skipped]] | None:
    """The newest snapshot that ``accept`` takes and that loads and verifies.

    Snapshots are tried newest first. One that is damaged (``SnapshotCorruptError``:
    CRC, chunks, digest), gone since it was listed or over the size limit is skipped:
    reported in the returned list and to ``on_skip`` (which also hears about them when
    the result is None), and the next older revision is tried. One that ``accept``
    declines (for example: written under an epoch whose history this node does not
    share, or by another app version) is passed over silently: the caller's own rule,
    which it can log itself. None when no snapshot qualifies: the caller replays from
    the log start.

    Any other error (the store is unreachable: retriable ``SnapshotError``) propagates:
    an outage is not damage, and falling back to an older revision or to none because
    of it would discard good snapshots for nothing.
    """
    skipped: list[Skipped] = []
    for info in await store.list():
        if info.meta is not None and not accept(info.meta):
            continue
        try:
            meta, state = await store.load(info.id)
        except _UNUSABLE as e:
            reason = f"{type(e).__name__}: {e}"
            skipped.append((info.id, reason))
            if on_skip is not None:
                on_skip(info.id, reason)
            continue
        if info.meta is None and not accept(meta):
            continue
        return meta, state, skipped
    return None
