"""The engine: applies committed records in offset order to the apps' state (sans-IO).

Ordering contract: ``apply`` takes records strictly in offset order starting at
``applied`` (a gap or an offset below it is an ``EngineError`` and changes nothing).
The state after applying ``[0, N)`` is the same however the records are split into
``apply`` calls, on any node, in any process, with any ``PYTHONHASHSEED``:

- transitions never depend on the iteration order of a set or of a dict built in a
  history-dependent order (the canonical encoding sorts everything it writes);
- aggregates are exact (ints; double sums as exact ints; see ``aggregators``), so
  batching the events of one ``apply`` call per key changes no value;
- time is an event's own timestamp attribute, else the ingest time the WAL recorded,
  never the clock; nothing is random.

Per record, in order: producer dedup (a logged duplicate is skipped and counted); then
for each app (by name) whose streams include the event's: validation (a failing event is
counted in ``rejected`` and skipped: the log may hold events of an older app version),
the stream's steps, then the aggregations, tables and outputs reading the stream. An
event no app knows is counted in ``unknown_streams``. App functions that raise skip the
event where they ran and are counted (``errors``), so one bad event never stops the node.

Outputs: app output events with ids ``(offset, index)`` (index counts the outputs of one
input record across apps by name, then outputs in declaration order), and a
``DigestPoint`` each time ``applied`` reaches a multiple of ``digest_interval`` (a frozen
capture, hashed when asked: the caller chooses the thread); sorted by offset, a digest
point after the outputs of the record before it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import compress, repeat
from operator import attrgetter, eq, itemgetter
from typing import Any, Final

from walrep.engine.aggregation import AggregationState
from walrep.engine.app import App, OutputSpec
from walrep.engine.buckets import Generation, StreamBatch
from walrep.engine.canonical import (
    StateView,
    decode_state,
    digest_of,
    encode_state,
)
from walrep.engine.dedup import ProducerTable
from walrep.engine.runtime import AppRuntime
from walrep.engine.tables import TableState
from walrep.engine.types import AggregationSchema, AggRow, Value
from walrep.errors import EngineError, SnapshotError
from walrep.log.types import Record

DIGEST_INTERVAL_DEFAULT: Final = 1_000_000
UNKNOWN_STREAMS_MAX: Final = 1000  # distinct names counted; the rest under "*"
_OFFSET: Final = attrgetter("offset")
_EVENT: Final = attrgetter("event")
_INGEST: Final = attrgetter("ingest_time_ms")
_STREAM: Final = itemgetter(0)
_ATTRS: Final = itemgetter(1)


@dataclass(frozen=True, slots=True)
class EngineOutput:
    """An output event of an app: id ``(offset, index)``, exactly once per id."""

    offset: int
    index: int
    app: str
    stream: str  # the output's name, as declared with ``App.output``
    attributes: dict[str, Any]

    @property
    def id(self) -> tuple[int, int]:
        return (self.offset, self.index)


class DigestPoint:
    """The state after applying ``[0, offset)``, frozen (a ``Capture``, taken in
    O(number of buckets)); ``digest()`` hashes it, once, in whatever thread calls it
    first (the node: off the event loop, so apply never waits for a hash of the state)."""

    __slots__ = ("_capture", "_digest", "offset")

    def __init__(self, offset: int, capture: Capture) -> None:
        self.offset = offset
        self._capture: Capture | None = capture
        self._digest: str | None = None

    def digest(self) -> str:
        """blake2b-128 (hex) of the canonical state at ``offset``; the capture is let go."""
        if self._digest is None:
            capture = self._capture
            assert capture is not None
            self._digest = digest_of(capture.encode())
            self._capture = None
        return self._digest

    def __repr__(self) -> str:
        return f"DigestPoint({self.offset}, {self._digest or 'not hashed yet'})"


@dataclass(frozen=True, slots=True)
class TableRow:
    table: str
    key: tuple[Value, ...]
    values: tuple[Value, ...]


class Capture:
    """The engine state frozen at ``applied`` (``Engine.begin_capture``).

    ``encode()`` may run in another thread while the engine goes on applying: the
    engine copies a bucket before its first write after the capture began.
    """

    def __init__(self, view: StateView, finish: list[Callable[[], None]]) -> None:
        self._view = view
        self._finish = finish
        self.applied = view.applied
        self.app_versions = tuple(sorted((a.name, a.version) for a in view.apps))

    def encode(self) -> bytes:
        """The canonical state bytes (``walrep.engine.canonical``). The first call also
        merges the pending deltas the capture took into its own copies of the buckets."""
        while self._finish:
            self._finish.pop()()
        return encode_state(self._view)


class Engine:
    """Deterministic processing of committed records (see the module docstring).

    ``track_changes=False`` (a passive that feeds no sink) skips the bookkeeping behind
    ``changed_rows``.
    """

    def __init__(
        self,
        apps: Sequence[App],
        *,
        digest_interval: int = DIGEST_INTERVAL_DEFAULT,
        track_changes: bool = True,
    ) -> None:
        if digest_interval < 1:
            raise EngineError(f"digest_interval must be >= 1, got {digest_interval}")
        names = [a.name for a in apps]
        if len(set(names)) != len(names):
            raise EngineError(f"two apps have the same name: {sorted(names)}")
        self.digest_interval = digest_interval
        self._gen = Generation()
        self._apps = [
            AppRuntime(a, self._gen, track_changes) for a in sorted(apps, key=lambda a: a.name)
        ]
        seen: dict[str, str] = {}
        for rt in self._apps:
            for state in rt.states:
                if state.name in seen:
                    raise EngineError(
                        f"{state.name!r} is declared by apps {seen[state.name]} and {rt.name}: "
                        "aggregation and table names must be unique (they name RDBMS tables)"
                    )
                seen[state.name] = rt.name
        self._by_stream: dict[str, list[AppRuntime]] = {}
        for rt in self._apps:
            for stream in rt.app.streams:
                self._by_stream.setdefault(stream, []).append(rt)
        self._applied = 0
        self.producers = ProducerTable()
        self.duplicates_skipped = 0
        self.unknown_streams: dict[str, int] = {}
        self._failed: str | None = None

    # --- introspection ---------------------------------------------------------------

    @property
    def applied(self) -> int:
        """The next offset to apply: the state holds every record below it."""
        return self._applied

    def app_versions(self) -> tuple[tuple[str, str], ...]:
        return tuple((rt.name, rt.version) for rt in self._apps)

    def schemas(self) -> list[AggregationSchema]:
        """Every aggregation's stored shape, sorted by name."""
        return sorted(
            (a.schema() for rt in self._apps for a in rt.aggregations), key=lambda s: s.name
        )

    def table_schemas(self) -> list[AggregationSchema]:
        """Every table's shape (``durations`` empty, ``group_by`` = key), sorted by name."""
        return sorted((t.schema() for rt in self._apps for t in rt.tables), key=lambda s: s.name)

    def aggregation(self, name: str) -> AggregationState:
        for rt in self._apps:
            for agg in rt.aggregations:
                if agg.name == name:
                    return agg
        raise KeyError(name)

    def table(self, name: str) -> TableState:
        for rt in self._apps:
            for table in rt.tables:
                if table.name == name:
                    return table
        raise KeyError(name)

    def stream_counters(self, app: str) -> dict[str, dict[str, int]]:
        """Per stream of ``app``: accepted, rejected, filtered, errors (copies)."""
        for rt in self._apps:
            if rt.name == app:
                return {s: dict(c) for s, c in rt.counters.items()}
        raise KeyError(app)

    def set_tracking(self, on: bool) -> None:
        """Empty every change set (``changed_rows``) without flushing or building rows,
        then track changes from now on (``on``) or not at all: a passive writes no sink,
        and a promoted node writes every row once before it tracks again. The state is
        the same either way (tracking is bookkeeping beside it)."""
        for rt in self._apps:
            for a in rt.aggregations:
                a.set_tracking(on)
            for t in rt.tables:
                t.set_tracking(on)

    def changed_rows(self) -> list[AggRow]:
        """Aggregation rows written since the previous call (absolute values), sorted
        by aggregation name, duration, bucket start and key."""
        rows = [r for rt in self._apps for a in rt.aggregations for r in a.changed_rows()]
        order = {}
        for rt in self._apps:
            for a in rt.aggregations:
                order[a.name] = a.durations
        rows.sort(
            key=lambda r: (
                r.aggregation,
                order[r.aggregation].index(r.duration),
                r.agg_timestamp_ms,
            )
        )
        return rows

    def all_rows(self) -> list[AggRow]:
        """Every aggregation row held now (absolute values), by aggregation name, duration
        (finest first), bucket start and key: what a sink that lags gets in full."""
        rows: list[AggRow] = []
        for schema in self.schemas():
            agg = self.aggregation(schema.name)
            for duration in schema.durations:
                rows += agg.rows(duration, -(2**62), 2**62)
        return rows

    def all_table_rows(self) -> list[TableRow]:
        """Every table row held now, by table name and key."""
        tables = sorted((t for rt in self._apps for t in rt.tables), key=lambda t: t.name)
        return [TableRow(t.name, k, v) for t in tables for k, v in t.rows()]

    def changed_table_rows(self) -> list[TableRow]:
        """Table rows written since the previous call, sorted by table name and key."""
        out = [
            TableRow(t.name, k, v)
            for rt in self._apps
            for t in sorted(rt.tables, key=lambda t: t.name)
            for k, v in t.changed_rows()
        ]
        out.sort(key=lambda r: r.table)  # stable: keys stay sorted within a table
        return out

    # --- state -----------------------------------------------------------------------

    def flush(self) -> None:
        """Merge every aggregation's pending deltas into its buckets (state unchanged)."""
        for rt in self._apps:
            for state in rt.states:
                state.flush()

    def _view(self, frozen: bool, finish: list[Callable[[], None]]) -> StateView:
        if not frozen:
            self.flush()
        producers = self.producers.entries
        unknown = dict(self.unknown_streams) if frozen else self.unknown_streams
        return StateView(
            self._applied,
            [rt.view(frozen, finish) for rt in self._apps],
            producers,
            self.duplicates_skipped,
            unknown,
        )

    def begin_capture(self) -> Capture:
        """Freeze the current state in O(number of buckets): no bucket or row is
        copied here (see ``Capture``)."""
        self._check_usable()
        finish: list[Callable[[], None]] = []
        view = self._view(True, finish)
        self._gen.value += 1  # every write from now on copies its bucket first
        return Capture(view, finish)

    def state_bytes(self) -> bytes:
        """The canonical state bytes now (what a capture taken now encodes)."""
        return encode_state(self._view(False, []))

    def digest(self) -> str:
        """blake2b-128 (hex) of ``state_bytes()``: equal digests, equal state."""
        return digest_of(self.state_bytes())

    @classmethod
    def restore(
        cls,
        apps: Sequence[App],
        state: bytes,
        *,
        digest_interval: int = DIGEST_INTERVAL_DEFAULT,
        track_changes: bool = True,
    ) -> Engine:
        """An engine holding ``state`` (from ``Capture.encode``/``state_bytes``).

        ``SnapshotError`` for bytes that do not decode, an unknown format version, or
        app versions other than those of ``apps``.
        """
        engine = cls(apps, digest_interval=digest_interval, track_changes=track_changes)
        plans = {rt.name: {s.name: s.plan for s in rt.states} for rt in engine._apps}
        decoded = decode_state(bytes(state), plans, engine.app_versions())
        for rt in engine._apps:
            got = decoded.apps[rt.name]
            if set(got.streams) != set(rt.counters):
                raise SnapshotError(f"engine state is malformed: streams of app {rt.name}")
            rt.counters = got.streams
            names = [a.name for a in rt.aggregations]
            if sorted(got.aggregations) != sorted(names) or sorted(got.tables) != sorted(
                t.name for t in rt.tables
            ):
                raise SnapshotError(f"engine state is malformed: aggregations of app {rt.name}")
            for agg in rt.aggregations:
                d = got.aggregations[agg.name]
                if len(d.levels) != len(agg.durations):
                    raise SnapshotError(f"engine state is malformed: durations of {agg.name}")
                agg.load(d.levels, d.watermark_ms, d.late_dropped, d.errors)
            for table in rt.tables:
                table.bucket, table.errors = got.tables[table.name]
        engine.producers.load(decoded.producers)
        engine.duplicates_skipped = decoded.duplicates_skipped
        engine.unknown_streams = decoded.unknown_streams
        engine._applied = decoded.applied
        return engine

    # --- apply -----------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise EngineError(
                f"the engine failed earlier ({self._failed}); its state is not usable: "
                "restore a snapshot and replay"
            )

    def apply(self, records: Sequence[Record]) -> list[EngineOutput | DigestPoint]:
        """Apply ``records`` (offsets ``applied, applied + 1, ...``); see the module
        docstring for the outputs."""
        self._check_usable()
        if not records:
            return []
        offsets = list(map(_OFFSET, records))
        start = self._applied
        if offsets != list(range(start, start + len(offsets))):
            bad = next(n for n, o in enumerate(offsets) if o != start + n)
            what = "below" if offsets[bad] < start + bad else "after a gap before"
            raise EngineError(
                f"record {bad} of the batch has offset {offsets[bad]}, expected "
                f"{start + bad} ({what} the next offset to apply): records must be "
                "consecutive from applied; nothing was applied"
            )
        out: list[EngineOutput | DigestPoint] = []
        pos = 0
        interval = self.digest_interval
        while pos < len(records):
            room = interval - self._applied % interval
            chunk = records[pos : pos + room] if pos or room < len(records) else records
            try:
                out += self._apply_chunk(chunk)
            except Exception as e:
                self._failed = f"{type(e).__name__}: {e}"
                raise
            pos += len(chunk)
            if self._applied % interval == 0:
                out.append(DigestPoint(self._applied, self.begin_capture()))
        return out

    def _apply_chunk(self, records: Sequence[Record]) -> list[EngineOutput]:
        base = self._applied
        events = list(map(_EVENT, records))
        if 4 in map(len, events):  # events of idempotent producers
            events = self._dedup(events, base)
        streams = list(map(_STREAM, events))
        first = streams[0]
        if streams.count(first) == len(streams):
            by_stream = {first: list(range(len(streams)))}
        else:  # positions per stream, one C-level pass per stream (there are few)
            everywhere = range(len(streams))
            by_stream = {
                s: list(compress(everywhere, map(eq, streams, repeat(s))))
                for s in sorted(set(streams))
            }
        if "" in by_stream:
            del by_stream[""]  # skipped duplicates
        outputs: list[tuple[int, tuple[int, int], str, OutputSpec, dict[str, Any]]] = []
        for stream in sorted(by_stream):
            if stream not in self._by_stream:
                self._count_unknown(stream, len(by_stream[stream]))
        for rt_index, rt in enumerate(self._apps):
            batches: dict[str, StreamBatch] = {}
            for stream in rt.app.streams:
                idxs = by_stream.get(stream)
                if idxs is not None:
                    batch = rt.stream_batch(rt.app.streams[stream], idxs, events, records, base)
                    if batch is not None:
                        batches[stream] = batch
            rt.fold(batches)
            for stream, batch in batches.items():
                for n, spec in rt.outputs[stream]:
                    outputs += rt.output_events(rt_index, n, spec, batch)
        self._applied = base + len(records)
        if not outputs:
            return []
        outputs.sort(key=lambda o: (o[0], o[1]))
        result = []
        index = 0
        prev = -1
        for idx, _, app_name, spec, attrs in outputs:
            index = index + 1 if idx == prev else 0
            prev = idx
            result.append(EngineOutput(idx, index, app_name, spec.name, attrs))
        return result

    def _dedup(self, events: list[Any], base: int) -> list[Any]:
        """Record producer sequence numbers; a logged duplicate becomes a blank event."""
        out = events
        for n, event in enumerate(events):
            if len(event) == 4 and not self.producers.record(
                event[2], event[3], base + n, self._gen.value
            ):
                if out is events:
                    out = list(events)
                out[n] = ("", None)  # the empty stream name no event can have
                self.duplicates_skipped += 1
        return out

    def _count_unknown(self, stream: str, count: int) -> None:
        counts = self.unknown_streams
        key = stream if stream in counts or len(counts) < UNKNOWN_STREAMS_MAX else "*"
        counts[key] = counts.get(key, 0) + count
