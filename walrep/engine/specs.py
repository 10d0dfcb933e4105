"""What an app declares, as plain data: aggregates, stream steps, specs, retention.

Built by ``walrep.engine.app.App`` (the API apps use; it re-exports the aggregate
constructors), read by the engine. Everything here is immutable once declared, except
``StreamSpec``, which grows while the app module runs.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from walrep.engine.schema import FLOAT_TYPES, INT_TYPES, StreamDef
from walrep.engine.timeunits import DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS, Duration
from walrep.engine.types import AttrType, Column, Value
from walrep.errors import AppDefinitionError

Attrs = Mapping[str, Any]
ValueFn = Callable[[Attrs], Value]
# Where a value comes from: an attribute name, a function of the attributes, or a number.
ValueSource = str | ValueFn | int | float
PerStream = ValueSource | Mapping[str, ValueSource]

AGG_COUNT: Final = "AGG_COUNT"  # the stored count behind every avg (Siddhi's name)
AGG_SUM_PREFIX: Final = "AGG_SUM_"  # avg(x) is stored as AGG_SUM_x and AGG_COUNT


class AggKind(enum.Enum):
    COUNT = "count"
    SUM = "sum"
    AVG = "avg"
    MIN = "min"
    MAX = "max"
    DISTINCT_COUNT = "distinct_count"


@dataclass(frozen=True)
class Aggregate:
    """One declared aggregate: its kind, stored name, value source and value type.

    ``of`` is None for ``count``; otherwise an attribute name, a function of the
    event's attributes, a number, or a mapping stream -> one of those (an aggregation
    over several streams). ``type`` is the declared type of function values.
    """

    kind: AggKind
    name: str
    of: PerStream | None = None
    type: AttrType | None = None


def _type(value: str | AttrType | None) -> AttrType | None:
    if value is None or isinstance(value, AttrType):
        return value
    try:
        return AttrType(value)
    except ValueError:
        raise AppDefinitionError(f"unknown type {value!r}") from None


def count(name: str) -> Aggregate:
    """``count() as name``: the number of events."""
    return Aggregate(AggKind.COUNT, name)


def sum_(
    name: str, of: PerStream | None = None, *, type: str | AttrType | None = None
) -> Aggregate:
    """``sum(of) as name`` (``of`` defaults to the attribute ``name``)."""
    return Aggregate(AggKind.SUM, name, name if of is None else of, _type(type))


def avg(name: str, of: PerStream | None = None, *, type: str | AttrType | None = None) -> Aggregate:
    """``avg(of) as name``, stored as ``AGG_SUM_<name>`` and the shared ``AGG_COUNT``."""
    return Aggregate(AggKind.AVG, name, name if of is None else of, _type(type))


def min_(
    name: str, of: PerStream | None = None, *, type: str | AttrType | None = None
) -> Aggregate:
    """``min(of) as name``."""
    return Aggregate(AggKind.MIN, name, name if of is None else of, _type(type))


def max_(
    name: str, of: PerStream | None = None, *, type: str | AttrType | None = None
) -> Aggregate:
    """``max(of) as name``."""
    return Aggregate(AggKind.MAX, name, name if of is None else of, _type(type))


def distinct_count(
    name: str, of: PerStream | None = None, *, type: str | AttrType | None = None
) -> Aggregate:
    """``distinctCount(of) as name``: the number of distinct values (a set is kept)."""
    return Aggregate(AggKind.DISTINCT_COUNT, name, name if of is None else of, _type(type))


# --- stream steps --------------------------------------------------------------------


@dataclass(frozen=True)
class Truncate:
    """Cut string attributes to a maximum length (WSO2's ``str:substr`` before storing)."""

    limits: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class MapStep:
    """``fn(attrs) -> new attrs``: the stream's attributes plus ``adds``; checked again."""

    fn: Callable[[Attrs], dict[str, Any]]
    adds: tuple[Column, ...]


@dataclass(frozen=True)
class FilterStep:
    """Keep the events for which ``fn(attrs)`` is true."""

    fn: Callable[[Attrs], object]


Step = Truncate | MapStep | FilterStep


@dataclass
class StreamSpec:
    """An input stream: its definition, its steps in order, and its shape after them."""

    definition: StreamDef
    steps: list[Step] = field(default_factory=list)
    output: StreamDef | None = None  # after the maps; None: same as ``definition``
    consumers: list[str] = field(default_factory=list)

    @property
    def shape(self) -> StreamDef:
        return self.output or self.definition


@dataclass(frozen=True)
class AggregationSpec:
    """An incremental time aggregation (``define aggregation ... every sec ... year``).

    ``retention_ms`` holds, per duration, how long a bucket is kept after its end
    (measured against the aggregation's watermark); None keeps it for ever.
    """

    name: str
    sources: tuple[str, ...]
    group_by: tuple[str, ...]
    aggregates: tuple[Aggregate, ...]
    carried: tuple[str, ...]
    durations: tuple[Duration, ...]
    retention_ms: tuple[tuple[Duration, int | None], ...]
    where: ValueFn | None = None


@dataclass(frozen=True)
class TableSpec:
    """A keyed table: one row per key, updated by aggregates (a max never moves back)."""

    name: str
    sources: tuple[str, ...]
    key: tuple[str, ...]
    aggregates: tuple[Aggregate, ...]
    carried: tuple[str, ...]
    where: ValueFn | None = None


@dataclass(frozen=True)
class OutputSpec:
    """Output events: for every event of ``source`` that passes ``where``, ``select(e)``."""

    name: str
    source: str
    where: ValueFn | None
    select: Callable[[Attrs], dict[str, Any]] | None


_RETENTION_UNIT_MS: Final[dict[str, int]] = {
    "ms": 1,
    "millisecond": 1,
    "milliseconds": 1,
    "s": SECOND_MS,
    "h": HOUR_MS,
    "hr": HOUR_MS,
    "hrs": HOUR_MS,
    "d": DAY_MS,
    "w": 7 * DAY_MS,
    "week": 7 * DAY_MS,
    "weeks": 7 * DAY_MS,
    "y": 365 * DAY_MS,
    "yr": 365 * DAY_MS,
}
_DURATION_MS: Final[dict[Duration, int]] = {
    Duration.SECONDS: SECOND_MS,
    Duration.MINUTES: MINUTE_MS,
    Duration.HOURS: HOUR_MS,
    Duration.DAYS: DAY_MS,
    Duration.MONTHS: 30 * DAY_MS,  # retention arithmetic only: a month counts 30 days
    Duration.YEARS: 365 * DAY_MS,  # and a year 365
}


def parse_retention_ms(text: str | int | None) -> int | None:
    """``"5 min"``, ``"72 hours"``, ``"1 year"`` (365 days), ``300000`` (ms), or None /
    ``"forever"`` (kept for ever)."""
    if text is None:
        return None
    if isinstance(text, bool) or not isinstance(text, int | str):
        raise AppDefinitionError(f"retention {text!r}: expected like '5 min' or ms")
    if isinstance(text, int):
        if text < 0:
            raise AppDefinitionError(f"retention {text}: must be >= 0")
        return text
    words = text.strip().lower().split()
    if words == ["forever"]:
        return None
    if len(words) == 1:  # "5min"
        digits = len(words[0]) - len(words[0].lstrip("0123456789"))
        words = [words[0][:digits], words[0][digits:]]
    if len(words) != 2 or not words[0].isdigit():
        raise AppDefinitionError(f"retention {text!r}: expected '<number> <unit>'")
    unit = _RETENTION_UNIT_MS.get(words[1])
    if unit is None:
        try:
            unit = _DURATION_MS[Duration.parse(words[1])]
        except ValueError:
            raise AppDefinitionError(f"retention {text!r}: unknown unit {words[1]!r}") from None
    return int(words[0]) * unit


def family(attr_type: AttrType | None) -> str:
    if attr_type in INT_TYPES:
        return "int"
    if attr_type in FLOAT_TYPES:
        return "float"
    return str(attr_type)


def describe_source(of: PerStream | None) -> str:
    if callable(of):
        return getattr(of, "__qualname__", "fn")
    if isinstance(of, Mapping):
        return repr(sorted((k, describe_source(v)) for k, v in of.items()))
    return repr(of)


def source_for(agg: Aggregate, stream: str) -> ValueSource:
    """The value source of ``agg`` for events of ``stream`` (``of`` or ``of[stream]``)."""
    of = agg.of
    if isinstance(of, Mapping):
        return of[stream]
    assert of is not None
    return of


def value_type(
    app_name: str,
    streams: Mapping[str, StreamSpec],
    name: str,
    sources: tuple[str, ...],
    agg: Aggregate,
) -> AttrType:
    """The type of ``agg``'s values, the same family in every source stream."""
    where = f"app {app_name}: {name}: {agg.kind.value}({agg.name})"
    of = agg.of
    if isinstance(of, Mapping):
        missing = [s for s in sources if s not in of]
        extra = [s for s in of if s not in sources]
        if missing or extra:
            raise AppDefinitionError(
                f"{where}: per-stream values must name exactly the streams {sources}"
            )
    found: list[AttrType] = []
    for stream in sources:
        src = source_for(agg, stream)
        if isinstance(src, bool):
            raise AppDefinitionError(f"{where}: a bool is not a value source")
        if isinstance(src, str):
            attr_type = streams[stream].shape.type_of(src)
            if attr_type is None:
                raise AppDefinitionError(f"{where}: {src!r} is not an attribute of {stream}")
            found.append(attr_type)
        elif isinstance(src, int | float):
            found.append(AttrType.LONG if isinstance(src, int) else AttrType.DOUBLE)
        elif callable(src):
            declared = agg.type
            if declared is None and agg.kind in (AggKind.SUM, AggKind.AVG):
                declared = AttrType.LONG
            if declared is None:
                raise AppDefinitionError(f"{where}: a function value needs type=")
            found.append(declared)
        else:
            raise AppDefinitionError(f"{where}: {src!r} is no value source")
    if agg.type is not None and any(
        not callable(source_for(agg, s)) and family(t) != family(agg.type)
        for s, t in zip(sources, found, strict=True)
    ):
        raise AppDefinitionError(f"{where}: type= does not match the attribute's type")
    families = {family(t) for t in found}
    if len(families) != 1:
        raise AppDefinitionError(f"{where}: values of different types across streams")
    numeric = families <= {"int", "float"}
    if agg.kind in (AggKind.SUM, AggKind.AVG) and not numeric:
        raise AppDefinitionError(f"{where}: needs numbers, got {found[0].value}")
    if families == {"int"}:
        return AttrType.LONG if agg.kind in (AggKind.SUM, AggKind.AVG) else _widest_int(found)
    if families == {"float"}:
        return AttrType.DOUBLE
    return found[0]


def _widest_int(types: list[AttrType]) -> AttrType:
    return AttrType.LONG if AttrType.LONG in types else AttrType.INT
