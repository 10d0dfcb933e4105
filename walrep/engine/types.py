"""Values the engine shares with its stores, sinks and the query API (pure data).

These are the contracts between ``walrep.engine``'s core (which computes), its snapshot
stores (which persist bytes with metadata) and its sinks (which write aggregation rows).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from walrep.engine.timeunits import Duration


class AttrType(enum.Enum):
    """Attribute types of a stream, as Siddhi names them."""

    STRING = "string"
    INT = "int"
    LONG = "long"
    FLOAT = "float"
    DOUBLE = "double"
    BOOL = "bool"


Value = str | int | float | bool | None


@dataclass(frozen=True)
class Column:
    name: str
    type: AttrType


@dataclass(frozen=True)
class AggregationSchema:
    """The stored shape of one aggregation, as its RDBMS tables hold it.

    Tables ``<name>_SECONDS`` ... ``<name>_YEARS`` (one per duration in ``durations``), each
    with ``AGG_TIMESTAMP`` (bucket start, epoch ms), the ``group_by`` columns (the primary
    key with AGG_TIMESTAMP), then ``columns``: the stored aggregates (a count, a sum, an
    avg's sum and count, a min, a max, a distinct count) and the carried attributes.
    """

    name: str
    durations: tuple[Duration, ...]
    group_by: tuple[Column, ...]
    columns: tuple[Column, ...]


@dataclass(frozen=True)
class AggRow:
    """One bucket of one aggregation: absolute values, never deltas (upserts are idempotent).

    ``key`` holds the group-by values in ``AggregationSchema.group_by`` order, ``values`` the
    column values in ``AggregationSchema.columns`` order.
    """

    aggregation: str
    duration: Duration
    agg_timestamp_ms: int
    key: tuple[Value, ...]
    values: tuple[Value, ...]


@dataclass(frozen=True)
class SnapshotMeta:
    """What a snapshot covers: state after applying offsets ``[0, offset)``.

    ``epoch`` is the term that wrote it (the stores fence on it), ``digest`` the hex state
    digest (``Engine.digest()`` at ``offset``), ``app_versions`` the name -> version of
    every app whose state it holds, ``format_version`` the engine's state format.
    ``log_epoch`` is the epoch of the record at ``offset - 1`` in the writer's log (0 at
    offset 0): a node may restore the snapshot only if its own log has that epoch there
    too (the log matching property: then the prefixes ``[0, offset)`` are the same
    history). A snapshot of a history a forced takeover wrote off fails that check.
    """

    offset: int
    epoch: int
    digest: str
    app_versions: tuple[tuple[str, str], ...]
    format_version: int
    created_ms: int
    log_epoch: int = 0  # 0 with offset > 0 matches no log: such a snapshot is never used
