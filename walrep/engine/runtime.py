"""One app inside the engine: its states, stream pipelines and fused kernels.

``Engine`` (``walrep.engine.core``) owns one ``AppRuntime`` per app and drives it batch
by batch, in offset order: ``stream_batch`` (validation, the stream's steps, times),
``fold`` (into the states' pending deltas), ``outputs``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from itertools import compress
from operator import itemgetter
from typing import Any, Final

from walrep.engine.aggregation import AggregationState
from walrep.engine.app import App, FilterStep, MapStep, OutputSpec, StreamSpec, Truncate
from walrep.engine.buckets import Generation, Input, StreamBatch, where_flags
from walrep.engine.canonical import AggView, AppView, TableView
from walrep.engine.kernels import Member, compile_fold
from walrep.engine.schema import StreamDef, validator_for
from walrep.engine.tables import TableState
from walrep.log.types import Record

_ATTRS: Final = itemgetter(1)


class AppRuntime:
    """One app's state and its compiled stream pipelines."""

    def __init__(self, app: App, gen: Generation, track_changes: bool) -> None:
        self.app = app
        self.name = app.name
        self.version = app.version
        self.aggregations = [
            AggregationState(app, s, gen, track_changes=track_changes) for s in app.aggregations
        ]
        self.tables = [TableState(app, s, gen, track_changes=track_changes) for s in app.tables]
        self.counters: dict[str, dict[str, int]] = {
            s: {"accepted": 0, "errors": 0, "filtered": 0, "rejected": 0} for s in app.streams
        }
        self.consumers: dict[str, list[AggregationState | TableState]] = {
            s: [] for s in app.streams
        }
        self.states: list[AggregationState | TableState] = [*self.aggregations, *self.tables]
        for state in self.states:
            for stream in state.spec.sources:
                self.consumers[stream].append(state)
        self._fused: dict[tuple[str, tuple[int, ...]], Callable[..., None]] = {}
        self.outputs: dict[str, list[tuple[int, OutputSpec]]] = {s: [] for s in app.streams}
        for n, out in enumerate(app.outputs):
            self.outputs[out.source].append((n, out))

    def fused_fold(self, stream: str, members: tuple[int, ...]) -> Callable[..., None]:
        """The fused kernel of ``stream`` for the states ``members`` (compiled once)."""
        found = self._fused.get((stream, members))
        if found is None:
            parts = [
                Member(
                    self.states[n].plan,
                    isinstance(self.states[n], AggregationState),
                    len(self.states[n].spec.sources) > 1,
                )
                for n in members
            ]
            type_of = self.app.streams[stream].shape.type_of
            found = self._fused[(stream, members)] = compile_fold(parts, stream, type_of)
        return found

    def view(self, frozen: bool, finish: list[Callable[[], None]]) -> AppView:
        """The app's state: live references (flushed first), or frozen for a capture
        (``finish`` receives the steps that merge the frozen pending deltas into the
        frozen buckets, run by the capture's encoding)."""
        aggs = []
        for a in self.aggregations:
            if frozen:
                levels, pending = a.freeze()
            else:
                levels, pending = a.levels, []
            view = AggView(
                a.name, a.plan, a.durations, levels, a.watermark_ms, list(a.late_dropped), a.errors
            )
            if pending:
                finish.append(partial(_finish_agg, view, a, pending))
            aggs.append(view)
        tables = []
        for t in self.tables:
            bucket, table_pending = t.freeze() if frozen else (t.bucket, [])
            table_view = TableView(t.name, t.plan, bucket, t.errors)
            if table_pending:
                finish.append(partial(_finish_table, table_view, t, table_pending))
            tables.append(table_view)
        counters = {s: dict(c) for s, c in self.counters.items()} if frozen else self.counters
        return AppView(self.name, self.version, counters, aggs, tables)

    def fold(self, batches: dict[str, StreamBatch]) -> None:
        """Fold an app's stream batches into its states' pending deltas.

        The consumers of a stream that take all of its events (no ``where`` dropped any,
        no value function failed) are folded by one fused kernel: one loop over the
        events reading each attribute once. Each state still gets its events in offset
        order, so fusing changes nothing but the speed.
        """
        work: list[tuple[int, AggregationState | TableState, list[Input]]] = []
        for n, state in enumerate(self.states):
            mine = [batches[s] for s in state.spec.sources if s in batches]
            if mine:
                inputs = state.begin_batch(mine)
                if inputs:
                    work.append((n, state, inputs))
        for stream, batch in batches.items():
            full: list[tuple[int, AggregationState | TableState, Input]] = []
            for n, state, inputs in work:
                for item in inputs:
                    if item.stream != stream:
                        continue
                    if item.attrs is batch.attrs:
                        full.append((n, state, item))
                    else:
                        state.fold(item)
            if len(full) == 1:
                full[0][1].fold(full[0][2])
            elif full:
                fold = self.fused_fold(stream, tuple(n for n, _, _ in full))
                fvals = [v for _, _, item in full for v in item.fvals]
                pendings = [state.pending for _, state, _ in full]
                fold(pendings, batch.offsets, batch.attrs, batch.secs, *fvals)
        for _, state, _ in work:
            state.end_batch()

    def stream_batch(
        self,
        spec: StreamSpec,
        idxs: list[int],
        events: list[Any],
        records: Sequence[Record],
        base: int,
    ) -> StreamBatch | None:
        """One stream's events of a batch (positions ``idxs``, the batch starting at
        offset ``base``): validated, through the stream's steps, with their times."""
        counters = self.counters[spec.definition.name]
        attrs = list(map(_ATTRS, map(events.__getitem__, idxs)))
        flags = validator_for(spec.definition).ok_batch(attrs)
        if flags is not None:
            counters["rejected"] += flags.count(False)
            idxs, attrs = list(compress(idxs, flags)), list(compress(attrs, flags))
        for step in spec.steps:
            if not idxs:
                break
            idxs, attrs = _run_step(step, spec, counters, idxs, attrs)
        if not idxs:
            return None
        counters["accepted"] += len(idxs)
        ts = spec.definition.timestamp
        if ts is not None:
            times = list(map(itemgetter(ts), attrs))
        else:
            times = [records[n].ingest_time_ms for n in idxs]
        secs = [t - t % 1000 for t in times]
        offsets = list(map(base.__add__, idxs))
        return StreamBatch(spec.definition.name, offsets, attrs, times, secs)

    def output_events(
        self, rt_index: int, n: int, spec: OutputSpec, batch: StreamBatch
    ) -> list[tuple[int, tuple[int, int], str, OutputSpec, dict[str, Any]]]:
        """Output events of ``spec`` for a batch: (offset, order, app, spec, attributes)."""
        order = (rt_index, n)  # apps by name, then declaration order
        attrs, offsets = batch.attrs, batch.offsets
        if spec.where is not None:
            keep = where_flags(spec.where, attrs)
            self.counters[batch.stream]["errors"] += keep.count(None)
            offsets, attrs = list(compress(offsets, keep)), list(compress(attrs, keep))
        out = []
        for idx, a in zip(offsets, attrs, strict=True):
            if spec.select is None:
                out.append((idx, order, self.name, spec, dict(a)))
                continue
            try:
                selected: object = spec.select(a)
            except Exception:  # app code: counted, the event just has no output
                self.counters[batch.stream]["errors"] += 1
                continue
            if not isinstance(selected, dict):
                self.counters[batch.stream]["errors"] += 1
                continue
            out.append((idx, order, self.name, spec, selected))
        return out


def _finish_agg(view: AggView, state: AggregationState, pending: list[Any]) -> None:
    view.levels = state.materialize(view.levels, pending, view.watermark_ms)


def _finish_table(view: TableView, state: TableState, pending: list[Any]) -> None:
    view.bucket = state.materialize(view.bucket, pending)


def _run_step(
    step: Truncate | MapStep | FilterStep,
    spec: StreamSpec,
    counters: dict[str, int],
    idxs: list[int],
    attrs: list[dict[str, Any]],
) -> tuple[list[int], list[dict[str, Any]]]:
    if isinstance(step, Truncate):
        for name, limit in step.limits:
            get = itemgetter(name)
            if max(map(len, map(get, attrs))) > limit:
                attrs = [
                    a if len(a[name]) <= limit else {**a, name: a[name][:limit]} for a in attrs
                ]
        return idxs, attrs
    if isinstance(step, FilterStep):
        keep = where_flags(step.fn, attrs)
        counters["errors"] += keep.count(None)
        counters["filtered"] += keep.count(False)
        return list(compress(idxs, keep)), list(compress(attrs, keep))
    # MapStep: a new dict per event, validated against the stream's shape after the map
    mapped: list[Any] = []
    for a in attrs:
        try:
            mapped.append(step.fn(a))
        except Exception:  # app code
            mapped.append(None)
    errors = mapped.count(None)
    counters["errors"] += errors
    shape = validator_for(_shape_after(spec, step))
    ok = [m is not None and shape.ok(m) for m in mapped]
    counters["rejected"] += ok.count(False) - errors
    return list(compress(idxs, ok)), list(compress(mapped, ok))


def _shape_after(spec: StreamSpec, step: MapStep) -> StreamDef:
    """The stream's definition after ``step`` (its own attributes plus every earlier add)."""
    attrs = list(spec.definition.attributes)
    for s in spec.steps:
        if isinstance(s, MapStep):
            attrs += s.adds
            if s is step:
                break
    return StreamDef(spec.definition.name, tuple(attrs), spec.definition.timestamp)
