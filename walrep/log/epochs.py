"""Epoch history of a log: which lease epoch wrote from which offset on.

Persisted as a small checksummed text file (``smallfile``), replaced atomically (temp,
fsync, rename, fsync dir)::

    walrep-epochs 1
    <epoch> <start offset>
    ...
    crc32c <8 hex digits of the CRC32C of every line above, newline included>

Entries are strictly increasing in both epoch and start offset... except that two
epochs may start at the same offset when one wrote nothing; the later one wins, as in
Kafka's leader-epoch cache (KIP-101), which this serves: ``end_offset(epoch)`` answers
a follower's "where does my last epoch end on your side?".

Persistence is pluggable (``EpochStore``): ``FileEpochStore`` for ``Wal``,
``MemoryEpochStore`` for ``MemoryLog`` and the simulator. Every change is handed to the
store before the changing call returns, so ``begin`` is durable on return.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from walrep.errors import CorruptLogError
from walrep.log.fsutil import DEFAULT_FILE_OPS, FileOps
from walrep.log.smallfile import read_lines, write_lines

FILE_NAME: Final = "epochs"
_HEAD: Final = "walrep-epochs 1"
_WHAT: Final = "epoch history"


@dataclass(frozen=True, slots=True)
class EpochEntry:
    epoch: int
    start_offset: int


class EpochStore(Protocol):
    """Where an ``EpochHistory`` keeps its entries; ``save`` is durable on return."""

    def save(self, entries: Sequence[EpochEntry]) -> None: ...


class FileEpochStore:
    """The ``epochs`` file of a log directory."""

    def __init__(self, path: Path, ops: FileOps = DEFAULT_FILE_OPS) -> None:
        self.path = path
        self._ops = ops

    def save(self, entries: Sequence[EpochEntry]) -> None:
        lines = [f"{e.epoch} {e.start_offset}" for e in entries]
        write_lines(self.path, _HEAD, lines, self._ops)

    def load(self) -> list[EpochEntry]:
        """The entries in the file (none without one); ``CorruptLogError`` if damaged."""
        lines = read_lines(self.path, _HEAD, _WHAT)
        entries = []
        for line in lines or ():
            fields = line.split(" ")
            if len(fields) != 2 or not all(f.isdigit() for f in fields):
                raise CorruptLogError(
                    str(self.path), 0, -1, f"{_WHAT} line {line!r} does not parse"
                )
            entries.append(EpochEntry(int(fields[0]), int(fields[1])))
        return entries


class MemoryEpochStore:
    """Entries kept in memory: ``saved`` is what survives a (simulated) crash."""

    def __init__(self, entries: Sequence[EpochEntry] = ()) -> None:
        self.saved: tuple[EpochEntry, ...] = tuple(entries)

    def save(self, entries: Sequence[EpochEntry]) -> None:
        self.saved = tuple(entries)


class EpochHistory:
    """In-memory list of ``EpochEntry``, handed to its ``EpochStore`` on every change."""

    def __init__(self, store: EpochStore | Path, entries: list[EpochEntry]) -> None:
        # A path names the file store (callers that only use the pure lookups pass one).
        self.store: EpochStore = FileEpochStore(store) if isinstance(store, Path) else store
        self._entries = entries

    @classmethod
    def load(cls, directory: Path, ops: FileOps = DEFAULT_FILE_OPS) -> EpochHistory:
        """The history in ``directory/epochs`` (empty without the file)."""
        store = FileEpochStore(directory / FILE_NAME, ops)
        return cls(store, store.load())

    @classmethod
    def in_memory(cls, entries: Sequence[EpochEntry] = ()) -> EpochHistory:
        """A history kept by a ``MemoryEpochStore`` that already holds ``entries``."""
        return cls(MemoryEpochStore(entries), list(entries))

    @property
    def entries(self) -> tuple[EpochEntry, ...]:
        return tuple(self._entries)

    @property
    def last_epoch_start(self) -> int:
        """Offset at which the highest epoch began writing; 0 for an unused log."""
        return self._entries[-1].start_offset if self._entries else 0

    @property
    def last_epoch(self) -> int:
        """Highest epoch written so far; 0 for a log that no writer has used."""
        return self._entries[-1].epoch if self._entries else 0

    def epoch_at(self, offset: int) -> int | None:
        """The epoch that wrote ``offset`` (None below the first entry)."""
        i = bisect.bisect_right([e.start_offset for e in self._entries], offset) - 1
        return self._entries[i].epoch if i >= 0 else None

    def end_offset(self, epoch: int, log_end: int) -> tuple[int, int]:
        """KIP-101 answer for a peer whose last epoch is ``epoch``.

        Returns ``(largest epoch <= epoch known here, end offset of that epoch)``, the end
        being the start of the next higher epoch, or ``log_end`` for the last one.
        ``(0, 0)`` if every epoch here is higher.
        """
        found = (0, 0)
        for i, entry in enumerate(self._entries):
            if entry.epoch > epoch:
                break
            end = self._entries[i + 1].start_offset if i + 1 < len(self._entries) else log_end
            found = (entry.epoch, end)
        return found

    def begin(self, epoch: int, start_offset: int) -> None:
        """Record that ``epoch`` writes from ``start_offset`` on (durable on return)."""
        assert epoch > self.last_epoch, (epoch, self.last_epoch)
        if self._entries:
            assert start_offset >= self._entries[-1].start_offset
        self._replace([*self._entries, EpochEntry(epoch, start_offset)])

    def truncate_from(self, offset: int) -> None:
        """Forget epochs that start at or after ``offset`` (the log was cut there)."""
        kept = [e for e in self._entries if e.start_offset < offset]
        if len(kept) != len(self._entries):
            self._replace(kept)

    def _replace(self, entries: list[EpochEntry]) -> None:
        # Unchanged in memory unless the store took the change: a failed save (a disk
        # error) leaves the history as it was.
        previous, self._entries = self._entries, entries
        try:
            self._save()
        except BaseException:
            self._entries = previous
            raise

    def _save(self) -> None:
        self.store.save(tuple(self._entries))
