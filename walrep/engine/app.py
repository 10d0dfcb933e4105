"""The declarative app API: streams, maps, filters, aggregations, tables and outputs.

An app is a Python module in the deployment directory (``conf/apps/`` by default) that
defines a module-level ``app``::

    from walrep.engine.app import App, count, sum_

    app = App("shop")
    app.stream("Order", {"shop": "string", "amount": "long", "ts": "long"}, timestamp="ts")
    app.aggregation(
        "OrdersPerShop", from_="Order", group_by=["shop"],
        aggregates=[count("orders"), sum_("revenue", of="amount")],
        every=("sec", "year"), retention={"sec": "5 min"},
    )

Declarations are checked when they are made (an unknown stream or attribute, a type
that cannot be summed, a name used twice) and raise ``AppDefinitionError``. Functions
an app passes (map, filter, ``where``, ``of=``, ``select``) must be pure: the same
input gives the same output on every node and in every process, with no clock, no
randomness and no mutation of the attributes they are given. docs/apps.md has the
full reference and a worked example.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from walrep.engine.schema import StreamDef
from walrep.engine.specs import (
    AGG_COUNT,
    AGG_SUM_PREFIX,
    AggKind,
    Aggregate,
    AggregationSpec,
    Attrs,
    FilterStep,
    MapStep,
    OutputSpec,
    PerStream,
    StreamSpec,
    TableSpec,
    Truncate,
    ValueFn,
    ValueSource,
    avg,
    count,
    describe_source,
    distinct_count,
    family,
    max_,
    min_,
    parse_retention_ms,
    source_for,
    sum_,
    value_type,
)
from walrep.engine.timeunits import DEFAULT_RETENTION_MS, Duration, durations_between
from walrep.engine.types import AttrType
from walrep.errors import AppDefinitionError

__all__ = [
    "AGG_COUNT",
    "AGG_SUM_PREFIX",
    "Aggregate",
    "AggKind",
    "AggregationSpec",
    "App",
    "Attrs",
    "FilterStep",
    "MapStep",
    "OutputSpec",
    "PerStream",
    "StreamSpec",
    "TableSpec",
    "Truncate",
    "ValueFn",
    "ValueSource",
    "avg",
    "count",
    "distinct_count",
    "max_",
    "min_",
    "parse_retention_ms",
    "source_for",
    "sum_",
]


class App:
    """An app under construction, then (once the module has run) the engine's input.

    ``version``: the one given, else (set by the loader) the first 16 hex digits of the
    sha256 of the module's source, else for an app built in code a hash of its
    declarations (names, attributes, kinds; function bodies are not seen: give an
    explicit ``version=`` there).
    """

    def __init__(self, name: str, *, version: str | None = None) -> None:
        if not name or not isinstance(name, str):
            raise AppDefinitionError("an app needs a non-empty name")
        self.name = name
        self._version = version
        self.source_version: str | None = None  # set by walrep.engine.loader
        self.streams: dict[str, StreamSpec] = {}
        self.aggregations: list[AggregationSpec] = []
        self.tables: list[TableSpec] = []
        self.outputs: list[OutputSpec] = []
        self.compiled: dict[str, Any] = {}  # the engine's compiled plans, by name (a cache)

    def __repr__(self) -> str:
        return f"App({self.name!r}, version={self.version!r})"

    @property
    def version(self) -> str:
        if self._version is not None:
            return self._version
        if self.source_version is not None:
            return self.source_version
        return "decl-" + hashlib.sha256(self._describe().encode()).hexdigest()[:16]

    # --- declarations ------------------------------------------------------------

    def stream(
        self, name: str, attributes: Mapping[str, str | AttrType], *, timestamp: str | None = None
    ) -> StreamDef:
        """Declare an input stream: attribute name -> type (Siddhi's names: ``string``,
        ``int``, ``long``, ``float``, ``double``, ``bool``); ``timestamp`` names the
        int/long attribute holding the event time in epoch ms (else: the ingest time)."""
        if name in self.streams:
            raise AppDefinitionError(f"app {self.name}: stream {name} declared twice")
        try:
            definition = StreamDef.of(name, attributes, timestamp)
        except ValueError as e:
            raise AppDefinitionError(f"app {self.name}: {e}") from None
        self.streams[name] = StreamSpec(definition)
        return definition

    def truncate(self, stream: str, limits: Mapping[str, int]) -> None:
        """Cut string attributes of ``stream`` to at most ``limits[attr]`` characters."""
        spec = self._open_stream(stream)
        for attr, limit in limits.items():
            if spec.shape.type_of(attr) is not AttrType.STRING:
                raise AppDefinitionError(f"{self._at(stream)}: truncate: {attr!r} is no string")
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise AppDefinitionError(f"{self._at(stream)}: truncate {attr!r}: bad limit")
        spec.steps.append(Truncate(tuple(limits.items())))

    def map(
        self,
        stream: str,
        fn: Callable[[Attrs], dict[str, Any]],
        *,
        adds: Mapping[str, str | AttrType] | None = None,
    ) -> None:
        """Replace each event's attributes by ``fn(attrs)`` (a new dict: the stream's
        attributes plus ``adds``; the result is validated, a failing event is skipped
        and counted in the stream's ``errors``)."""
        spec = self._open_stream(stream)
        try:
            added = StreamDef.of(stream, adds or {}).attributes
        except ValueError as e:
            raise AppDefinitionError(f"{self._at(stream)}: map: {e}") from None
        clash = [c.name for c in added if spec.shape.type_of(c.name) is not None]
        if clash:
            raise AppDefinitionError(f"{self._at(stream)}: map adds existing {clash[0]!r}")
        shape = spec.shape
        spec.output = StreamDef(stream, shape.attributes + added, shape.timestamp)
        spec.steps.append(MapStep(fn, added))

    def filter(self, stream: str, fn: Callable[[Attrs], object]) -> None:
        """Keep only the events of ``stream`` for which ``fn(attrs)`` is true."""
        self._open_stream(stream).steps.append(FilterStep(fn))

    def aggregation(
        self,
        name: str,
        *,
        from_: str | Sequence[str],
        group_by: Sequence[str],
        aggregates: Sequence[Aggregate],
        carried: Sequence[str] = (),
        every: tuple[str, str] = ("sec", "year"),
        retention: Mapping[str, str | int | None] | None = None,
        where: ValueFn | None = None,
    ) -> AggregationSpec:
        """Declare an incremental aggregation (see docs/apps.md for the stored columns)."""
        sources = self._sources(name, from_)
        self._check_attrs(name, sources, group_by, "group by")
        self._check_attrs(name, sources, carried, "carried")
        self._check_aggregates(name, sources, aggregates)
        self._check_names(name, group_by, aggregates, carried)
        try:
            durations = durations_between(Duration.parse(every[0]), Duration.parse(every[1]))
        except (ValueError, IndexError) as e:
            raise AppDefinitionError(f"app {self.name}: aggregation {name}: every: {e}") from None
        kept = {d: DEFAULT_RETENTION_MS[d] for d in durations}
        for key, value in (retention or {}).items():
            try:
                duration = Duration.parse(key)
            except ValueError as e:
                raise AppDefinitionError(f"aggregation {name}: retention: {e}") from None
            if duration not in kept:
                raise AppDefinitionError(f"aggregation {name}: retention for {key!r}: not kept")
            kept[duration] = parse_retention_ms(value)
        spec = AggregationSpec(
            name,
            sources,
            tuple(group_by),
            tuple(aggregates),
            tuple(carried),
            durations,
            tuple(kept.items()),
            where,
        )
        self._register(name, sources)
        self.aggregations.append(spec)
        return spec

    def table(
        self,
        name: str,
        *,
        from_: str | Sequence[str],
        key: Sequence[str],
        values: Sequence[Aggregate],
        carried: Sequence[str] = (),
        where: ValueFn | None = None,
    ) -> TableSpec:
        """Declare a keyed table: one row per ``key``, ``values`` aggregated over all time
        (``max_`` for a value that never moves backwards), ``carried`` the last seen."""
        sources = self._sources(name, from_)
        self._check_attrs(name, sources, key, "key")
        self._check_attrs(name, sources, carried, "carried")
        self._check_aggregates(name, sources, values)
        self._check_names(name, key, values, carried)
        spec = TableSpec(name, sources, tuple(key), tuple(values), tuple(carried), where)
        self._register(name, sources)
        self.tables.append(spec)
        return spec

    def output(
        self,
        name: str,
        *,
        from_: str,
        where: ValueFn | None = None,
        select: Callable[[Attrs], dict[str, Any]] | None = None,
    ) -> OutputSpec:
        """Emit an output event for every event of ``from_`` that passes ``where``: its
        attributes, or ``select(attrs)``. Its id is (input offset, index)."""
        (source,) = self._sources(name, from_)
        spec = OutputSpec(name, source, where, select)
        self._register(name, (source,))
        self.outputs.append(spec)
        return spec

    # --- checks --------------------------------------------------------------------

    def _at(self, stream: str) -> str:
        return f"app {self.name}: stream {stream}"

    def _open_stream(self, stream: str) -> StreamSpec:
        spec = self.streams.get(stream)
        if spec is None:
            raise AppDefinitionError(f"app {self.name}: unknown stream {stream!r}")
        if spec.consumers:
            raise AppDefinitionError(
                f"{self._at(stream)}: declare maps and filters before the stream's consumers "
                f"({', '.join(spec.consumers)}): they apply to all of them"
            )
        return spec

    def _sources(self, name: str, from_: str | Sequence[str]) -> tuple[str, ...]:
        if not name or not isinstance(name, str):
            raise AppDefinitionError(f"app {self.name}: a name is needed")
        if self._taken(name):
            raise AppDefinitionError(f"app {self.name}: {name!r} declared twice")
        sources = (from_,) if isinstance(from_, str) else tuple(from_)
        if not sources or len(set(sources)) != len(sources):
            raise AppDefinitionError(f"app {self.name}: {name}: from_ needs distinct streams")
        for stream in sources:
            if stream not in self.streams:
                raise AppDefinitionError(f"app {self.name}: {name}: unknown stream {stream!r}")
        return sources

    def _taken(self, name: str) -> bool:
        names = [s.name for s in self.aggregations] + [s.name for s in self.tables]
        return name in names or name in [s.name for s in self.outputs]

    def _register(self, name: str, sources: Iterable[str]) -> None:
        for stream in sources:
            self.streams[stream].consumers.append(name)

    def _check_attrs(
        self, name: str, sources: tuple[str, ...], attrs: Sequence[str], role: str
    ) -> None:
        for stream in sources:
            shape = self.streams[stream].shape
            for attr in attrs:
                if shape.type_of(attr) is None:
                    raise AppDefinitionError(
                        f"app {self.name}: {name}: {role} attribute {attr!r} is not in "
                        f"stream {stream}"
                    )
        for attr in attrs:
            kinds = {family(self.streams[s].shape.type_of(attr)) for s in sources}
            if len(kinds) > 1:
                raise AppDefinitionError(
                    f"app {self.name}: {name}: {attr!r} has different types in {sources}"
                )

    def _check_aggregates(
        self, name: str, sources: tuple[str, ...], aggregates: Sequence[Aggregate]
    ) -> None:
        if not aggregates:
            raise AppDefinitionError(f"app {self.name}: {name}: no aggregates")
        for agg in aggregates:
            if not isinstance(agg, Aggregate):
                raise AppDefinitionError(f"app {self.name}: {name}: {agg!r} is no aggregate")
            if agg.kind is AggKind.COUNT:
                continue
            value_type(
                self.name, self.streams, name, sources, agg
            )  # raises when it cannot be typed

    def _check_names(
        self,
        name: str,
        keys: Sequence[str],
        aggregates: Sequence[Aggregate],
        carried: Sequence[str],
    ) -> None:
        stored = [*keys, *(a.name for a in aggregates), *carried]
        if any(a.kind is AggKind.AVG for a in aggregates):
            stored += [AGG_COUNT]
            stored += [AGG_SUM_PREFIX + a.name for a in aggregates if a.kind is AggKind.AVG]
        seen: set[str] = set()
        for column in stored:
            if column in seen:
                raise AppDefinitionError(f"app {self.name}: {name}: column {column!r} twice")
            seen.add(column)

    def _describe(self) -> str:
        parts = [self.name]
        for spec in self.streams.values():
            parts.append(repr(spec.definition))
            parts += [type(s).__name__ + repr(getattr(s, "limits", "")) for s in spec.steps]
        for agg in self.aggregations:
            parts.append(repr((agg.name, agg.sources, agg.group_by, agg.carried, agg.durations)))
            parts += [repr((a.kind, a.name, describe_source(a.of))) for a in agg.aggregates]
            parts.append(repr(agg.retention_ms))
        for table in self.tables:
            parts.append(repr((table.name, table.sources, table.key, table.carried)))
            parts += [repr((a.kind, a.name, describe_source(a.of))) for a in table.aggregates]
        parts += [repr((o.name, o.source)) for o in self.outputs]
        return "\n".join(parts)
