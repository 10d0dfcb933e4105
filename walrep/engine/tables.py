"""Keyed tables: one row per key over all time, folded like an aggregation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from walrep.engine.app import App, TableSpec
from walrep.engine.buckets import (
    PENDING_MAX,
    Bucket,
    Generation,
    Input,
    StreamBatch,
    as_rows,
    prepare,
)
from walrep.engine.plan import plan_for
from walrep.engine.types import AggregationSchema, Value


class TableState:
    """A keyed table: one row per key over all time, folded like an aggregation."""

    def __init__(
        self, app: App, spec: TableSpec, gen: Generation, *, track_changes: bool = True
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.plan = plan_for(app, spec.name, spec.sources, spec.key, spec.aggregates, spec.carried)
        self.bucket = Bucket({}, 0)
        self.pending: dict[tuple[Any, ...], list[Any]] = {}
        self.frozen: list[dict[tuple[Any, ...], list[Any]]] = []  # held by captures
        self.errors = 0
        self.track_changes = track_changes
        self._gen = gen
        self._dirty: dict[tuple[Any, ...], None] = {}

    def schema(self) -> AggregationSchema:
        """The table's shape: ``durations`` is empty, ``group_by`` holds the key."""
        return AggregationSchema(self.name, (), self.plan.key_columns, self.plan.stored_columns)

    def apply_batch(self, batches: Sequence[StreamBatch]) -> None:
        for item in self.begin_batch(batches):
            self.fold(item)
        self.end_batch()

    def begin_batch(self, batches: Sequence[StreamBatch]) -> list[Input]:
        """As ``AggregationState.begin_batch``."""
        inputs, errors = prepare(self.plan, self.spec.where, batches)
        self.errors += errors
        return inputs

    def fold(self, item: Input) -> None:
        self.plan.fold[item.stream](self.pending, item.offsets, item.attrs, item.secs, *item.fvals)

    def end_batch(self) -> None:
        if len(self.pending) + sum(map(len, self.frozen)) > PENDING_MAX:
            self.flush()

    def flush(self) -> None:
        """Merge the pending deltas into the rows (the state does not change)."""
        if not self.pending and not self.frozen:
            return
        parts = [*self.frozen, self.pending]
        self.pending, self.frozen = {}, []
        gen = self._gen.value
        if self.bucket.gen != gen:
            self.bucket = Bucket(dict(self.bucket.rows), gen)
        else:
            self.bucket.encoded = None
        for deltas in parts:
            self.plan.merge_into(self.bucket.rows, as_rows(deltas))
            if self.track_changes:
                self._dirty.update(dict.fromkeys(deltas))

    def freeze(self) -> tuple[Bucket, list[dict[Any, Any]]]:
        """As ``AggregationState.freeze``."""
        if self.pending:
            self.frozen.append(self.pending)
            self.pending = {}
        return self.bucket, list(self.frozen)

    def materialize(self, bucket: Bucket, pending: list[dict[Any, Any]]) -> Bucket:
        """As ``AggregationState.materialize``."""
        if not pending:
            return bucket
        out = Bucket(dict(bucket.rows), -1)
        for deltas in pending:
            self.plan.merge_into(out.rows, as_rows(deltas))
        return out

    def row_count(self) -> int:
        self.flush()
        return len(self.bucket.rows)

    def rows(self) -> list[tuple[tuple[Value, ...], tuple[Value, ...]]]:
        """``(key, values)`` of every row, sorted by key."""
        self.flush()
        rows = self.bucket.rows
        return [(k, self.plan.output_values(rows[k])) for k in sorted(rows)]

    def set_tracking(self, on: bool) -> None:
        """Empty the change set, then track changes from now (on) or not at all (off)."""
        self.track_changes = on
        self._dirty.clear()

    def changed_rows(self) -> list[tuple[tuple[Value, ...], tuple[Value, ...]]]:
        self.flush()
        rows = self.bucket.rows
        out = [(k, self.plan.output_values(rows[k])) for k in sorted(self._dirty)]
        self._dirty.clear()
        return out
