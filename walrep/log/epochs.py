"""Epoch history of a log: which lease epoch wrote from which offset on.

Persisted as a small text file, replaced atomically (temp, fsync, rename, fsync dir)::

    walrep-epochs 1
    <epoch> <start offset>
    ...
    crc32c <8 hex digits of the CRC32C of every line above, newline included>

Entries are strictly increasing in both epoch and start offset... except that two
epochs may start at the same offset when one wrote nothing; the later one wins, as in
Kafka's leader-epoch cache (KIP-101), which this serves: ``end_offset(epoch)`` answers
a follower's "where does my last epoch end on your side?".
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path

import google_crc32c

from walrep.errors import CorruptLogError
from walrep.log.fsutil import write_atomic

FILE_NAME = "epochs"
_HEAD = "walrep-epochs 1\n"


@dataclass(frozen=True, slots=True)
class EpochEntry:
    epoch: int
    start_offset: int


class EpochHistory:
    """In-memory list of ``EpochEntry`` mirrored to ``<dir>/epochs`` on every change."""

    def __init__(self, path: Path, entries: list[EpochEntry]) -> None:
        self.path = path
        self._entries = entries

    @classmethod
    def load(cls, directory: Path) -> EpochHistory:
        path = directory / FILE_NAME
        if not path.exists():
            return cls(path, [])
        text = path.read_bytes()
        body, _, trailer = text.rpartition(b"crc32c ")
        try:
            ok = body.startswith(_HEAD.encode()) and int(trailer, 16) == google_crc32c.value(body)
        except ValueError:
            ok = False
        if not ok:
            raise CorruptLogError(str(path), 0, -1, "epoch history fails its checksum")
        entries = []
        for line in body.decode().splitlines()[1:]:
            epoch, start = line.split()
            entries.append(EpochEntry(int(epoch), int(start)))
        return cls(path, entries)

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
        self._entries.append(EpochEntry(epoch, start_offset))
        self._save()

    def truncate_from(self, offset: int) -> None:
        """Forget epochs that start at or after ``offset`` (the log was cut there)."""
        kept = [e for e in self._entries if e.start_offset < offset]
        if len(kept) != len(self._entries):
            self._entries = kept
            self._save()

    def _save(self) -> None:
        lines = [_HEAD] + [f"{e.epoch} {e.start_offset}\n" for e in self._entries]
        body = "".join(lines).encode()
        write_atomic(self.path, body + b"crc32c %08x\n" % google_crc32c.value(body))
