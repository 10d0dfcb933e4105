"""Incremental time aggregations: the state and its transitions.

State of one aggregation: per duration (sec ... year), ``bucket start ms -> Bucket``, a
bucket holding ``group key -> stored row`` (see ``walrep.engine.plan``); its
watermark (the maximum event time it has accepted); per duration the count of late
events dropped; the count of events a ``where`` or value function failed for.

Ordering contract: ``apply_batch`` takes the events of one engine batch, per stream in
offset order, each with its offset. The state after a batch equals the state after
applying the same events one by one in offset order:

- aggregates are exact commutative monoids and carried values follow the highest
  offset, so the grouping of events into deltas and the order of merges do not matter;
- lateness is judged per event against the watermark *before* it (the prefix maximum
  in offset order): an event of bucket ``[start, end)`` at duration ``d`` is dropped
  (and counted in ``late_dropped[d]``) when ``end + retention[d] <= watermark``, the
  same rule that purges the bucket; it still counts at the durations that keep it;
- buckets with ``end + retention <= watermark`` are purged after the batch, which is
  what a one-by-one run has purged by then (an event never lands in such a bucket).

Pending deltas: ``apply_batch`` folds events into ``pending`` (``second -> key ->
delta``), not into the buckets; ``flush`` merges pending into every duration. The
state is ``buckets + pending``, which flushing does not change, so flushing happens
whenever convenient: before every read (``rows``, ``changed_rows``, the state bytes)
and when pending exceeds ``PENDING_MAX`` keys. Between flushes, a key's events of many
batches cost one merge per duration.

Captures (``freeze``, O(buckets)): copies of the bucket maps, and the pending dict,
handed over as it is (``frozen``: folding goes on in a new dict; the frozen deltas are
merged here at the next flush, and into the capture's own bucket copies by
``materialize``, when the capture encodes, possibly in another thread). Copy-on-write:
every bucket (and table) remembers the capture generation it was written under; the
first write after ``begin_capture`` (which bumps the generation) copies the bucket's
dict, so a capture keeps the bucket objects it saw unchanged. Stored rows are tuples,
never modified once stored, so copying a bucket is one shallow dict copy.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from walrep.engine.app import AggregationSpec, App
from walrep.engine.buckets import (
    PENDING_MAX,
    Bucket,
    Generation,
    Input,
    Source,
    StreamBatch,
    as_rows,
    prepare,
)
from walrep.engine.plan import plan_for
from walrep.engine.timeunits import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    SECOND_MS,
    Duration,
    bucket_start_ms,
    next_bucket_start_ms,
)
from walrep.engine.types import AggregationSchema, AggRow

_FIXED_MS = {
    Duration.SECONDS: SECOND_MS,
    Duration.MINUTES: MINUTE_MS,
    Duration.HOURS: HOUR_MS,
    Duration.DAYS: DAY_MS,
}
_MEMO_MAX = 4096  # month/year bucket starts remembered per duration (a pure cache)


@dataclass(slots=True)
class _Target:
    """Where merges go: the live state (with its purge heaps and change sets) or a
    capture's private copy of the bucket maps."""

    levels: list[dict[int, Bucket]]
    gen: int
    watermark_ms: int | None
    heaps: list[list[tuple[int, int]]] | None
    dirty: list[dict[int, dict[tuple[Any, ...], None]]] | None


def _prefix_max(times: list[int], prev: int | None) -> list[int]:
    """The watermark at each event: max(prev, times[0..i])."""
    if prev is None:
        return list(accumulate(times, max))
    return list(accumulate(times, max, initial=prev))[1:]


class AggregationState:
    """One incremental aggregation (see the module docstring for the contracts)."""

    def __init__(
        self, app: App, spec: AggregationSpec, gen: Generation, *, track_changes: bool = True
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.plan = plan_for(
            app, spec.name, spec.sources, spec.group_by, spec.aggregates, spec.carried
        )
        self.durations = spec.durations
        kept = dict(spec.retention_ms)
        self.retention_ms: tuple[int | None, ...] = tuple(kept[d] for d in spec.durations)
        self.levels: list[dict[int, Bucket]] = [{} for _ in spec.durations]
        self.pending: dict[int, dict[tuple[Any, ...], list[Any]]] = {}  # second -> key -> delta
        self.frozen: list[dict[int, dict[tuple[Any, ...], list[Any]]]] = []  # held by captures
        self.watermark_ms: int | None = None
        self._next_watermark_ms: int | None = None  # between begin_batch and end_batch
        self.late_dropped: list[int] = [0] * len(spec.durations)
        self.errors = 0
        self.track_changes = track_changes
        self._gen = gen
        self._heaps: list[list[tuple[int, int]]] = [[] for _ in spec.durations]
        # changed keys per duration and bucket, as dicts (key -> None): a dict of atomic
        # keys is not tracked by the cyclic GC, a set always is
        self._dirty: list[dict[int, dict[tuple[Any, ...], None]]] = [{} for _ in spec.durations]
        self._memo: list[dict[int, int]] = [{} for _ in spec.durations]

    def schema(self) -> AggregationSchema:
        return AggregationSchema(
            self.name, self.durations, self.plan.key_columns, self.plan.stored_columns
        )

    # --- queries -------------------------------------------------------------------

    def rows(self, duration: Duration, start_ms: int, end_ms: int) -> list[AggRow]:
        """Rows of the ``duration`` buckets starting in ``[start_ms, end_ms)``, absolute
        values, sorted by bucket start then group key."""
        self.flush()
        li = self.durations.index(duration)
        level = self.levels[li]
        out = []
        for start in sorted(s for s in level if start_ms <= s < end_ms):
            rows = level[start].rows
            out += [self._row(duration, start, key, rows[key]) for key in sorted(rows)]
        return out

    def row_count(self, duration: Duration) -> int:
        """How many rows the ``duration`` buckets hold (without building them)."""
        self.flush()
        return sum(len(b.rows) for b in self.levels[self.durations.index(duration)].values())

    def changed_rows(self) -> list[AggRow]:
        """Rows written since the previous call (still retained), sorted by duration,
        bucket start and key; empties the change set."""
        self.flush()
        out = []
        for li, dirty in enumerate(self._dirty):
            level = self.levels[li]
            for start in sorted(dirty):
                rows = level[start].rows
                out += [
                    self._row(self.durations[li], start, k, rows[k]) for k in sorted(dirty[start])
                ]
            dirty.clear()
        return out

    def set_tracking(self, on: bool) -> None:
        """Empty the change set, then track changes from now (on) or not at all (off)."""
        self.track_changes = on
        for dirty in self._dirty:
            dirty.clear()

    def _row(self, duration: Duration, start: int, key: tuple[Any, ...], row: Any) -> AggRow:
        return AggRow(self.name, duration, start, key, self.plan.output_values(row))

    # --- transitions ---------------------------------------------------------------

    def apply_batch(self, batches: Sequence[StreamBatch]) -> None:
        """Fold one engine batch (see the module docstring)."""
        for item in self.begin_batch(batches):
            self.fold(item)
        self.end_batch()

    def begin_batch(self, batches: Sequence[StreamBatch]) -> list[Input]:
        """The first step of ``apply_batch``: the inputs to ``fold`` (by this state or by
        a fused kernel), then ``end_batch``. A batch with droppable late events is
        applied here at once (nothing to fold)."""
        inputs, errors = prepare(self.plan, self.spec.where, batches)
        self.errors += errors
        if not inputs:
            return []
        tmax = max(max(i.times) for i in inputs)
        prev = self.watermark_ms
        watermark = tmax if prev is None else max(prev, tmax)
        groups = self._split_late(inputs, prev, watermark)
        if groups is None:  # the common case: folded into pending
            self._next_watermark_ms = watermark
            return inputs
        # Droppable late events: some events count at some durations only, so this
        # batch is merged at once, per duration (pending may stay: merges commute).
        self.watermark_ms = watermark
        folds = self.plan.fold_by_sec
        sources: list[Source] = []
        for mask, group in groups:
            by_sec: dict[int, dict[Any, list[Any]]] = {}
            for i in group:
                folds[i.stream](by_sec, i.offsets, i.attrs, i.secs, *i.fvals)
            sources += [(mask, sec, as_rows(by_sec[sec])) for sec in sorted(by_sec)]
        self._merge_levels(sources)
        self._purge(watermark)
        return []

    def fold(self, item: Input) -> None:
        """Fold one input of ``begin_batch`` into pending."""
        self.plan.fold_by_sec[item.stream](
            self.pending, item.offsets, item.attrs, item.secs, *item.fvals
        )

    def end_batch(self) -> None:
        """The last step of ``apply_batch``: the watermark moves, buckets expire."""
        watermark = self._next_watermark_ms
        if watermark is None:
            return
        self._next_watermark_ms = None
        self.watermark_ms = watermark
        self._purge(watermark)
        if self._pending_size() > PENDING_MAX:
            self.flush()

    def flush(self) -> None:
        """Merge the pending deltas into every duration (the state does not change)."""
        if not self.pending and not self.frozen:
            return
        parts = [*self.frozen, self.pending]
        self.pending, self.frozen = {}, []
        self._merge_levels([(0, sec, as_rows(d[sec])) for d in parts for sec in sorted(d)])

    def _pending_size(self) -> int:
        return sum(len(d) for p in [self.pending, *self.frozen] for d in p.values())

    def _split_late(
        self, inputs: list[Input], prev: int | None, watermark: int
    ) -> list[tuple[int, list[Input]]] | None:
        """None when no event can be dropped as late, else ``(mask, inputs)`` groups
        (mask bit ``li`` set: dropped at duration ``li``)."""
        # An event at t can be late at duration d only if t < end <= watermark - r[d].
        lim = max((watermark - r for r in self.retention_ms if r is not None), default=None)
        if lim is None or min(min(i.times) for i in inputs) >= lim:
            return None
        if len(inputs) == 1:
            wms = [_prefix_max(inputs[0].times, prev)]
        else:  # the prefix maximum in offset order across the streams
            merged = sorted(
                (o, t) for inp in inputs for o, t in zip(inp.offsets, inp.times, strict=True)
            )
            at = dict(
                zip((o for o, _ in merged), _prefix_max([t for _, t in merged], prev), strict=True)
            )
            wms = [[at[o] for o in inp.offsets] for inp in inputs]
        masks = [
            [self._late_mask(t, w) if t < lim else 0 for t, w in zip(inp.times, wm, strict=True)]
            for inp, wm in zip(inputs, wms, strict=True)
        ]
        found = sorted({m for ms in masks for m in ms})
        if found == [0]:
            return None
        everywhere = (1 << len(self.durations)) - 1
        groups: list[tuple[int, list[Input]]] = []
        for mask in found:
            dropped = sum(ms.count(mask) for ms in masks)
            for li in range(len(self.durations)):
                if mask >> li & 1:
                    self.late_dropped[li] += dropped
            if mask == everywhere:
                continue
            group = []
            for inp, ms in zip(inputs, masks, strict=True):
                flags = [m == mask for m in ms]
                if any(flags):
                    group.append(inp if all(flags) else inp.select(flags))
            groups.append((mask, group))
        return groups

    def _late_mask(self, time_ms: int, watermark: int) -> int:
        mask = 0
        for li, r in enumerate(self.retention_ms):
            if r is not None:
                end = self._end(li, self._start(li, time_ms - time_ms % 1000))
                if end + r <= watermark:
                    mask |= 1 << li
        return mask

    def _start(self, li: int, sec: int) -> int:
        fixed = _FIXED_MS.get(self.durations[li])
        if fixed is not None:
            return sec - sec % fixed
        memo = self._memo[li]
        found = memo.get(sec)
        if found is None:
            if len(memo) >= _MEMO_MAX:
                memo.clear()
            found = memo[sec] = bucket_start_ms(self.durations[li], sec)
        return found

    def _end(self, li: int, start: int) -> int:
        fixed = _FIXED_MS.get(self.durations[li])
        if fixed is not None:
            return start + fixed
        return next_bucket_start_ms(self.durations[li], start)

    def _target(self) -> _Target:
        return _Target(
            self.levels,
            self._gen.value,
            self.watermark_ms,
            self._heaps,
            self._dirty if self.track_changes else None,
        )

    def _merge_levels(self, sources: list[Source], target: _Target | None = None) -> None:
        """Merge deltas into every duration of ``target`` (the live state by default);
        sources are ``(mask, second, {key: row})`` (``as_rows``), mask bits skip
        durations. The dicts given may become buckets' rows."""
        target = target or self._target()
        adopted: set[int] = set()  # ids of the dicts that became a bucket's rows
        previous: tuple[tuple[int, ...], ...] | None = None
        combined: list[dict[Any, Any]] = []
        for li in range(len(self.durations)):
            bit = 1 << li
            by_start: dict[int, list[int]] = {}
            for n, (mask, sec, _) in enumerate(sources):
                if not mask & bit:
                    by_start.setdefault(self._start(li, sec), []).append(n)
            shape = tuple(tuple(ns) for ns in by_start.values())
            if shape != previous:  # else: the same grouping as the finer duration
                combined = [self._combine([sources[n][2] for n in ns]) for ns in shape]
                previous = shape
            for start, inner in zip(by_start, combined, strict=True):
                self._merge(li, start, inner, adopted, target)

    def _combine(self, inners: list[dict[Any, Any]]) -> dict[Any, Any]:
        """The rows of several seconds merged per key (a new dict; the rows given are
        not changed: a merge makes a new tuple)."""
        if len(inners) == 1:
            return inners[0]
        out = dict(inners[0])
        for inner in inners[1:]:
            self.plan.merge_into(out, inner)
        return out

    def _merge(
        self,
        li: int,
        start: int,
        inner: dict[Any, Any],
        adopted: set[int],
        target: _Target,
    ) -> None:
        retention = self.retention_ms[li]
        level = target.levels[li]
        bucket = level.get(start)
        gen = target.gen
        if bucket is None:
            if retention is not None:
                end = self._end(li, start)
                wm = target.watermark_ms
                if wm is not None and end + retention <= wm:
                    return  # a one-by-one run has purged this bucket by now
                if target.heaps is not None:
                    heapq.heappush(target.heaps[li], (end, start))
            # A new bucket takes the rows dict itself the first time, else a copy.
            rows = dict(inner) if id(inner) in adopted else inner
            adopted.add(id(inner))
            level[start] = Bucket(rows, gen)
        else:
            if bucket.gen != gen:
                bucket = level[start] = Bucket(dict(bucket.rows), gen)
            else:
                bucket.encoded = None
            self.plan.merge_into(bucket.rows, inner)
        if target.dirty is not None:
            dirty = target.dirty[li].get(start)
            if dirty is None:
                target.dirty[li][start] = dict.fromkeys(inner)
            else:
                dirty.update(dict.fromkeys(inner))

    def _purge(self, watermark: int) -> None:
        for li, r in enumerate(self.retention_ms):
            if r is None:
                continue
            heap, level, dirty = self._heaps[li], self.levels[li], self._dirty[li]
            while heap and heap[0][0] + r <= watermark:
                _, start = heapq.heappop(heap)
                del level[start]
                dirty.pop(start, None)

    # --- snapshots -----------------------------------------------------------------

    def freeze(self) -> tuple[list[dict[int, Bucket]], list[dict[int, dict[Any, Any]]]]:
        """The state as it is now, for a capture, in O(buckets): copies of the bucket
        maps (copy-on-write keeps the buckets) and the pending deltas, which are handed
        over (folding goes on in a new dict) and stay to be merged here later."""
        if self.pending:
            self.frozen.append(self.pending)
            self.pending = {}
        return [dict(level) for level in self.levels], list(self.frozen)

    def materialize(
        self,
        levels: list[dict[int, Bucket]],
        pending: list[dict[int, dict[Any, Any]]],
        watermark_ms: int | None,
    ) -> list[dict[int, Bucket]]:
        """``levels`` with ``pending`` merged in, as new maps and buckets: what the
        state of a capture is. Changes none of its arguments (a capture's encoding runs
        this in its own thread while the engine applies)."""
        if not pending:
            return levels
        target = _Target([dict(level) for level in levels], -1, watermark_ms, None, None)
        sources = [(0, sec, as_rows(d[sec])) for d in pending for sec in sorted(d)]
        self._merge_levels(sources, target)  # gen -1: every bucket written is a copy
        return target.levels

    def load(
        self,
        levels: list[dict[int, Bucket]],
        watermark_ms: int | None,
        late_dropped: list[int],
        errors: int,
    ) -> None:
        """Install restored state (from ``walrep.engine.canonical``)."""
        self.levels = levels
        self.pending = {}
        self.frozen = []
        self.watermark_ms = watermark_ms
        self.late_dropped = late_dropped
        self.errors = errors
        self._heaps = []
        for li, level in enumerate(levels):
            heap = (
                [(self._end(li, s), s) for s in level] if self.retention_ms[li] is not None else []
            )
            heapq.heapify(heap)
            self._heaps.append(heap)
        self._dirty = [{} for _ in self.durations]
