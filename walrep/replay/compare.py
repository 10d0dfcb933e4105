"""``walrep replay verify --against DIR2``: two nodes' logs and digest chains, compared.

The logs are compared record by record (epoch, ingest time, stream, attributes,
producer identity) over the offsets both hold; the chains at the offsets both recorded.
The first offset where they differ is named. A log that extends beyond the other (a
passive behind, or a dead node's shorter log) is noted, not a difference: replication
ships a prefix. Each side is read as ``LogSource`` reads it, so damage on either side is
a ``DamagedLogError`` naming the side's file.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from walrep.log.types import Record
from walrep.node.engine_host import DIGESTS_FILE, read_digest_chain
from walrep.replay.runner import Progress
from walrep.replay.source import LogSource


@dataclass
class Difference:
    offset: int
    what: str
    left: Any
    right: Any

    def to_json(self) -> dict[str, Any]:
        return {"offset": self.offset, "what": self.what, "left": self.left, "right": self.right}

    def __str__(self) -> str:
        return f"offset {self.offset}: {self.what}: {self.left!r} here, {self.right!r} there"


@dataclass
class Comparison:
    compared_from: int = 0
    compared_to: int = 0
    chain_entries_compared: int = 0
    difference: Difference | None = None
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.compared_from,
            "to": self.compared_to,
            "chain_entries_compared": self.chain_entries_compared,
            "difference": self.difference.to_json() if self.difference is not None else None,
            "interrupted": self.interrupted,
            "notes": self.notes,
        }


def _flat(batches: Iterator[list[Record]]) -> Iterator[Record]:
    for batch in batches:
        yield from batch


def _shape(record: Record) -> tuple[Any, ...]:
    return (record.epoch, record.ingest_time_ms, list(record.event))


def compare_logs(
    left: LogSource,
    right: LogSource,
    *,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
) -> Comparison:
    """Compare two logs and the chains beside them (see the module docstring)."""
    out = Comparison()
    start, end = max(left.log_start, right.log_start), min(left.log_end, right.log_end)
    out.compared_from, out.compared_to = start, max(start, end)
    for name, src in (("this log", left), ("the other log", right)):
        if src.log_end > end:
            out.notes.append(f"{name} goes on to {src.log_end} ({src.directory}): not compared")
        if src.log_start < start:
            out.notes.append(f"{name} starts earlier, at {src.log_start}: not compared there")
    if start < end:
        pairs = zip(_flat(left.batches(start, end)), _flat(right.batches(start, end)), strict=True)
        for n, (a, b) in enumerate(pairs):
            if _shape(a) != _shape(b):
                fields = ("epoch", "ingest_time_ms", "event")
                what = next(
                    f for f, x, y in zip(fields, _shape(a), _shape(b), strict=True) if x != y
                )
                out.difference = Difference(
                    a.offset, what, _shape(a)[fields.index(what)], _shape(b)[fields.index(what)]
                )
                out.compared_to = a.offset
                return out
            if n % 4096 == 4095:
                if progress is not None:
                    progress(a.offset + 1)
                if stop is not None and stop.is_set():
                    out.interrupted, out.compared_to = True, a.offset + 1
                    return out
    theirs = dict(read_digest_chain(right.directory / DIGESTS_FILE))
    for offset, digest in read_digest_chain(left.directory / DIGESTS_FILE):
        other = theirs.get(offset)
        if other is None:
            continue
        out.chain_entries_compared += 1
        if other != digest:
            out.difference = Difference(offset, "digest chain", digest, other)
            return out
    return out
