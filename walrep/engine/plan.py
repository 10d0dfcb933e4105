"""The compiled plan of one aggregation or table: slots, stored columns, kernels.

A *slot* is one accumulator; stored columns that need the same accumulator share it
(``count`` and the ``AGG_COUNT`` of avgs, two avgs of one attribute). A *delta* is a
list ``[last offset, the carried values of that event (a tuple; None without carried
attributes), slot 0, slot 1, ...]`` accumulated over some events by the fold kernels. A
*stored row* is the same as a tuple, never modified once stored (a merge makes a new
tuple), so rows may be shared between buckets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from walrep.engine.aggregators import (
    ColKind,
    FnSource,
    Slot,
    StoredColumn,
    dec_value,
    decode_exact,
    enc_value,
    encode_exact,
    exact_to_float,
)
from walrep.engine.app import App
from walrep.engine.kernels import Member, compile_fold, compile_merge
from walrep.engine.schema import FLOAT_TYPES, getter
from walrep.engine.specs import (
    AGG_COUNT,
    AGG_SUM_PREFIX,
    AggKind,
    Aggregate,
    source_for,
    value_type,
)
from walrep.engine.types import AttrType, Column, Value


class Plan:
    """The compiled shape of one aggregation or table (see the module docstring).

    ``fold[stream](pending, offsets, attrs, secs, *fn_values)`` accumulates the events of
    one stream, in the order given (offset order), into ``pending`` (group key ->
    delta), and ``fold_by_sec`` into ``pending`` (second start -> {group key -> delta});
    ``merge_into(rows, inner)`` adds the deltas of ``inner`` (group key -> delta) into
    ``rows`` (stored rows or other deltas, in any order: the merge is commutative).
    """

    def __init__(
        self,
        app: App,
        name: str,
        sources: tuple[str, ...],
        keys: tuple[str, ...],
        aggregates: tuple[Aggregate, ...],
        carried: tuple[str, ...],
    ) -> None:
        self.name = name
        self.sources = sources
        first = app.streams[sources[0]].shape
        self.key_columns = tuple(Column(k, _type_of(first, k)) for k in keys)
        self.carried_columns = tuple(Column(c, _type_of(first, c)) for c in carried)
        self.slots: list[Slot] = []
        columns: list[StoredColumn] = []
        avg_count: StoredColumn | None = None
        for agg in aggregates:
            if agg.kind is AggKind.COUNT:
                columns.append(self._column(agg.name, AttrType.LONG, ColKind.COUNT, None, ()))
                continue
            vtype = value_type(app.name, app.streams, name, sources, agg)
            per_stream = tuple((s, source_for(agg, s)) for s in sources)
            if agg.kind in (AggKind.SUM, AggKind.AVG):
                kind = ColKind.SUM_EXACT if vtype in FLOAT_TYPES else ColKind.SUM
                stype = AttrType.DOUBLE if vtype in FLOAT_TYPES else AttrType.LONG
                label = agg.name if agg.kind is AggKind.SUM else AGG_SUM_PREFIX + agg.name
                columns.append(self._column(label, stype, kind, vtype, per_stream))
                if agg.kind is AggKind.AVG and avg_count is None:
                    avg_count = self._column(AGG_COUNT, AttrType.LONG, ColKind.COUNT, None, ())
            elif agg.kind is AggKind.DISTINCT_COUNT:
                col = self._column(agg.name, AttrType.LONG, ColKind.DISTINCT, vtype, per_stream)
                columns.append(col)
            else:
                kind = ColKind.MIN if agg.kind is AggKind.MIN else ColKind.MAX
                columns.append(self._column(agg.name, vtype, kind, vtype, per_stream))
        if avg_count is not None:
            columns.append(avg_count)
        self.columns = tuple(columns)
        self.fn_sources: dict[str, list[FnSource]] = {s: [] for s in sources}
        for slot in self.slots:
            for stream, src in slot.sources:
                if callable(src):
                    assert slot.value_type is not None
                    fs = FnSource(src, slot.value_type)
                    if fs not in self.fn_sources[stream]:
                        self.fn_sources[stream].append(fs)
        self.carried_of = getter(carried)
        self.key_of = getter(keys)
        self.exact_free = all(c.kind not in (ColKind.SUM_EXACT, ColKind.DISTINCT) for c in columns)
        self._has_sets = any(slot.kind is ColKind.DISTINCT for slot in self.slots)
        self.fold: dict[str, Callable[..., None]] = {}
        self.fold_by_sec: dict[str, Callable[..., None]] = {}
        multi = len(sources) > 1
        for stream in sources:
            type_of = app.streams[stream].shape.type_of
            for by_sec, target in ((False, self.fold), (True, self.fold_by_sec)):
                target[stream] = compile_fold([Member(self, by_sec, multi)], stream, type_of)
        self.merge_into = compile_merge(self)

    def _column(
        self,
        label: str,
        stype: AttrType,
        kind: ColKind,
        vtype: AttrType | None,
        per_stream: tuple[tuple[str, object], ...],
    ) -> StoredColumn:
        slot = Slot(kind, vtype, per_stream)
        if slot not in self.slots:
            self.slots.append(slot)
        return StoredColumn(Column(label, stype), kind, self.slots.index(slot))

    @property
    def stored_columns(self) -> tuple[Column, ...]:
        """Stored aggregate columns then carried attributes (``AggregationSchema.columns``)."""
        return tuple(c.column for c in self.columns) + self.carried_columns

    def output_values(self, row: tuple[Any, ...]) -> tuple[Value, ...]:
        """A stored row as shown to queries and sinks: the stored columns (sizes of
        sets, exact sums as floats), then the carried values."""
        out: list[Value] = []
        for col in self.columns:
            value = row[col.slot + 2]
            if col.kind is ColKind.SUM_EXACT:
                out.append(exact_to_float(value))
            elif col.kind is ColKind.DISTINCT:
                out.append(len(value))
            else:
                out.append(value)
        if self.carried_columns:
            for value, ccol in zip(row[1], self.carried_columns, strict=True):
                out.append(float(value) if ccol.type in FLOAT_TYPES else value)
        return tuple(out)

    # --- canonical encoding of rows (see walrep.engine.canonical) -------------------

    def encode_row(self, key: tuple[Any, ...], row: tuple[Any, ...]) -> list[Any]:
        """``[[key...], [last offset, [carried...] | null, slot values...]]`` with
        JSON-safe values: what orjson writes for ``(key, row)``, except for sets (sorted
        lists), exact sums (``encode_exact``) and ints beyond 64 bits (strings)."""
        carried = None if row[1] is None else [enc_value(v) for v in row[1]]
        values: list[Any] = [row[0], carried]
        for slot, value in zip(self.slots, row[2:], strict=True):
            if slot.kind is ColKind.SUM_EXACT:
                values.append(encode_exact(value))
            elif slot.kind is ColKind.DISTINCT:
                values.append([enc_value(v) for v in sorted(value)])
            else:
                values.append(enc_value(value))
        return [[enc_value(v) for v in key], values]

    def decode_row(self, item: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """The inverse of ``encode_row``; ``ValueError`` for anything out of shape."""
        enc_key, values = item
        if len(enc_key) != len(self.key_columns):
            raise ValueError(f"{self.name}: key of {len(enc_key)} values")
        if len(values) != len(self.slots) + 2:
            raise ValueError(f"{self.name}: row of {len(values)} values")
        key = tuple(dec_value(v, c.type) for v, c in zip(enc_key, self.key_columns, strict=True))
        last, carried = values[0], values[1]
        if type(last) is not int:
            raise ValueError(f"{self.name}: last offset {last!r}")
        if (carried is None) != (not self.carried_columns):
            raise ValueError(f"{self.name}: carried values {carried!r}")
        if carried is not None:
            if len(carried) != len(self.carried_columns):
                raise ValueError(f"{self.name}: {len(carried)} carried values")
            carried = tuple(
                dec_value(v, c.type) for v, c in zip(carried, self.carried_columns, strict=True)
            )
        row: list[Any] = [last, carried]
        for slot, value in zip(self.slots, values[2:], strict=True):
            if slot.kind is ColKind.SUM_EXACT:
                row.append(decode_exact(value))
            elif slot.kind is ColKind.DISTINCT:
                assert slot.value_type is not None
                row.append(frozenset(dec_value(v, slot.value_type) for v in value))
            elif slot.kind in (ColKind.COUNT, ColKind.SUM):
                row.append(dec_value(value, AttrType.LONG))
            else:
                assert slot.value_type is not None
                row.append(dec_value(value, slot.value_type))
        return key, tuple(row)


def plan_for(
    app: App,
    name: str,
    sources: tuple[str, ...],
    keys: tuple[str, ...],
    aggregates: tuple[Aggregate, ...],
    carried: tuple[str, ...],
) -> Plan:
    """The compiled plan of ``app``'s aggregation or table ``name``, made once per app
    (plans hold no state: engines and threads share them)."""
    found = app.compiled.get(name)
    if not isinstance(found, Plan):
        found = app.compiled[name] = Plan(app, name, sources, keys, aggregates, carried)
    return found


def _type_of(shape: Any, attr: str) -> AttrType:
    found: AttrType | None = shape.type_of(attr)
    assert found is not None, attr
    return AttrType.DOUBLE if found in FLOAT_TYPES else found
