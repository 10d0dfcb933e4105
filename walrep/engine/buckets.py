"""The containers the engine's states share: buckets, batches, app-function inputs.

``Bucket`` holds one bucket's stored rows (copy-on-write by capture generation, see
``walrep.engine.aggregation``); ``StreamBatch`` the events of one stream in one engine
batch; ``prepare`` runs an aggregation's ``where`` and value functions over them, so that
app code that fails for an event drops that event only (deterministically).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import compress
from typing import Any, Final

from walrep.engine.aggregators import fn_values_or_errors
from walrep.engine.plan import Plan

PENDING_MAX: Final = 32_768  # pending delta keys per aggregation before a flush (bounds memory)


class Generation:
    """The engine's capture generation, shared by its states (copy-on-write)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


@dataclass(slots=True)
class StreamBatch:
    """The events of one stream in one engine batch, after the stream's steps.

    All lists are aligned and in offset order: ``offsets`` of the events, ``times``
    event times (ms), ``secs`` the start of their second.
    """

    stream: str
    offsets: list[int]
    attrs: list[dict[str, Any]]
    times: list[int]
    secs: list[int]


Source = tuple[int, int, dict[Any, Any]]  # (late mask, second, {key: row})


def as_rows(deltas: dict[Any, list[Any]]) -> dict[Any, tuple[Any, ...]]:
    """Deltas (lists the kernels update) as stored rows: tuples in a new dict. A tuple
    of atomic values is not tracked by the cyclic GC, so a large state costs the GC
    nothing; the deltas' lists die with the pending dict."""
    return dict(zip(deltas, map(tuple, deltas.values()), strict=True))


class Bucket:
    """One bucket's rows, the capture generation it was written under, and a cache of
    its canonical encoding (None when stale)."""

    __slots__ = ("encoded", "gen", "rows")

    def __init__(self, rows: dict[tuple[Any, ...], tuple[Any, ...]], gen: int) -> None:
        self.rows = rows
        self.gen = gen
        self.encoded: bytes | None = None


@dataclass(slots=True)
class Input:
    stream: str
    offsets: list[int]
    attrs: list[dict[str, Any]]
    times: list[int]
    secs: list[int]
    fvals: list[list[Any]]

    def select(self, flags: Sequence[bool]) -> Input:
        return Input(
            self.stream,
            list(compress(self.offsets, flags)),
            list(compress(self.attrs, flags)),
            list(compress(self.times, flags)),
            list(compress(self.secs, flags)),
            [list(compress(v, flags)) for v in self.fvals],
        )


def prepare(
    plan: Plan, where: Callable[[Mapping[str, Any]], object] | None, batches: Sequence[StreamBatch]
) -> tuple[list[Input], int]:
    """Apply ``where`` and compute the value functions; events for which app code
    fails are dropped and counted (the second result)."""
    out: list[Input] = []
    errors = 0
    for b in batches:
        item = Input(b.stream, b.offsets, b.attrs, b.times, b.secs, [])
        if where is not None:
            keep = where_flags(where, item.attrs)
            errors += keep.count(None)
            if not all(keep):
                item = item.select([bool(k) for k in keep])
        bad: list[bool] | None = None
        for fs in plan.fn_sources[b.stream]:
            values, flags = fn_values_or_errors(fs, item.attrs)
            if values is None:
                assert flags is not None
                bad = flags if bad is None else [x and y for x, y in zip(bad, flags, strict=True)]
            item.fvals.append(values or [])
        if bad is not None:  # drop the failing events, then compute the values again
            errors += bad.count(False)
            item = item.select(bad)
            item.fvals = []
            for fs in plan.fn_sources[b.stream]:
                values, _ = fn_values_or_errors(fs, item.attrs)
                assert values is not None
                item.fvals.append(values)
        if item.offsets:
            out.append(item)
    return out, errors


def where_flags(where: Callable[[Mapping[str, Any]], object], attrs: list[Any]) -> list[Any]:
    """True/False per event, None where ``where`` raised."""
    try:
        return [bool(x) for x in map(where, attrs)]
    except Exception:  # app code: find the failing events one by one
        pass
    flags: list[Any] = []
    for a in attrs:
        try:
            flags.append(bool(where(a)))
        except Exception:  # deterministic app code fails the same way on every node
            flags.append(None)
    return flags
