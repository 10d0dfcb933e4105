"""Carrying out ``Apply``: committed records from the log into the engine, in order.

Both executors (the asyncio process and the simulator) apply with this one function, so
the engine sees the same records in the same order whichever of them drives it. At most
``max_records`` are applied per call (bounded work per effect: a long replay does not
hold the loop); the core asks for the rest.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Protocol

from walrep.errors import EngineError, WalrepError
from walrep.log.types import Record

APPLY_RECORDS_MAX = 1_000


class RecordSource(Protocol):
    def read(
        self, from_offset: int | None = None, to_offset: int | None = None
    ) -> Iterator[Record]: ...


class Applier(Protocol):
    """What the node needs of an engine: its position and an in-order apply."""

    @property
    def applied(self) -> int: ...
    def apply(self, records: Sequence[Record]) -> Sequence[object]: ...


def apply_committed(
    engine: Applier,
    log: RecordSource,
    from_offset: int,
    to_offset: int,
    max_records: int = APPLY_RECORDS_MAX,
) -> tuple[int, Sequence[object]] | WalrepError:
    """Apply ``[from_offset, min(to_offset, from_offset + max_records))``; returns the
    engine's new position and its outputs, or the typed error of the read or the apply.

    ``from_offset`` must be the engine's position (the core asks from what it was told).
    """
    assert engine.applied == from_offset, (engine.applied, from_offset)
    end = min(to_offset, from_offset + max_records)
    try:
        records = list(itertools.islice(log.read(from_offset, end), end - from_offset))
        outputs = engine.apply(records)
    except WalrepError as e:
        return e
    if engine.applied == from_offset < to_offset:  # the log lacks what it called committed
        return EngineError(f"no records readable from offset {from_offset} up to {to_offset}")
    return engine.applied, outputs
