"""Answering a Store Query from an engine's aggregation rows (docs/query.md).

``run_query(engine, apps, app_name, query)`` resolves the aggregation in that app, reads
the rows of the ``per`` duration whose bucket starts in ``within`` (``[start, end)``),
keeps those the ``on`` condition holds for, groups them, computes the select items
over the *stored* columns, then applies ``having``, ``order by``, ``offset`` and
``limit``. The answer is a list of records, each a list of values in select order.

Semantics (the same as docs/query.md):

* **Attributes** of an aggregation: ``AGG_TIMESTAMP`` (the bucket start, epoch ms), the
  group-by attributes, the stored columns (counts, sums, mins, maxes, distinct counts,
  the ``AGG_SUM_x`` and ``AGG_COUNT`` behind averages), the carried attributes, and each
  average ``x`` (per row: ``AGG_SUM_x / AGG_COUNT``). ``on`` may name any of them.
* **Groups**: with ``group by``, one group per distinct value of its attributes, in the
  order of their first row; without it, if anything aggregates (a function in select,
  having or order by), one group of all the rows (no rows: no record); else one record
  per row. Rows come in bucket start, then group-key order.
* **Functions** over the rows of a group: ``sum(x)`` adds the stored values (exact:
  ints for integer columns, ``math.fsum`` for doubles); ``avg(x)`` of an average is
  ``sum(AGG_SUM_x) / sum(AGG_COUNT)`` computed exactly, then rounded once to a float
  (as Siddhi keeps averages), of another column the exact mean of its stored values;
  ``min(x)``/``max(x)`` of the stored values; ``count()`` the rows, ``count(x)`` the rows
  where ``x`` is not null. ``sum`` of an average or of a distinct count is refused (they
  do not add up), as is any function but ``count`` over a string or bool.
* **A bare attribute** in an aggregated select takes the value of the *last row* of its
  group (the latest bucket, then the greatest group key), as Siddhi's carried
  attributes keep the last value seen.
* ``having`` and ``order by`` name the select items by their output name (the alias,
  else the attribute), else an attribute (the group's last row), or call a function
  over the group. ``order by`` sorts stably: ties keep the group order above, so the
  answer is deterministic; nulls sort first (last with ``desc``).
* Comparisons need the same kind on both sides (number, string or bool; ``<``/``>`` not
  on bools); a comparison with null is false (``!=``: true unless both are null).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from fractions import Fraction
from typing import Any, Final
from typing import Literal as Lit

from walrep.engine.aggregation import AggregationState
from walrep.engine.app import AGG_COUNT, AGG_SUM_PREFIX, AggKind, App
from walrep.engine.core import Engine
from walrep.engine.specs import AggregationSpec
from walrep.engine.timeunits import Duration
from walrep.engine.types import AggRow, AttrType, Value
from walrep.query import ast
from walrep.query.ast import Query
from walrep.query.errors import QueryError, TooManyRecordsError, UnknownAppError
from walrep.query.grammar import parse

Family = Lit["number", "string", "bool"]
Role = Lit["timestamp", "group_by", "aggregate", "distinct", "average", "stored", "carried"]
Record = list[Value]
Env = Any  # an AggRow (in ``on``), else (group rows, record)
Fn = Callable[[Env], Value]

AGG_TIMESTAMP: Final = "AGG_TIMESTAMP"
_NUMERIC: Final = frozenset({AttrType.INT, AttrType.LONG, AttrType.FLOAT, AttrType.DOUBLE})
_FLOATS: Final = frozenset({AttrType.FLOAT, AttrType.DOUBLE})
_COMPARE: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
}
_DURATIONS: Final = "'seconds', 'minutes', 'hours', 'days', 'months' or 'years'"


def family_of(attr_type: AttrType) -> Family:
    if attr_type is AttrType.STRING:
        return "string"
    if attr_type is AttrType.BOOL:
        return "bool"
    return "number"


@dataclass(frozen=True)
class Attribute:
    """One name a query may use on an aggregation's rows."""

    name: str
    type: AttrType
    role: Role
    get: Callable[[AggRow], Value]
    parts: tuple[Callable[[AggRow], Value], Callable[[AggRow], Value]] | None = None  # avg

    @property
    def family(self) -> Family:
        return family_of(self.type)


def attributes_of(state: AggregationState, spec: AggregationSpec) -> dict[str, Attribute]:
    """The names of one aggregation (see the module docstring), in stored order."""
    schema = state.schema()
    kinds = {a.name: a.kind for a in spec.aggregates}
    averages = [a.name for a in spec.aggregates if a.kind is AggKind.AVG]
    helpers = {AGG_SUM_PREFIX + name for name in averages} | ({AGG_COUNT} if averages else set())
    out: dict[str, Attribute] = {
        AGG_TIMESTAMP: Attribute(AGG_TIMESTAMP, AttrType.LONG, "timestamp", _timestamp)
    }
    for i, column in enumerate(schema.group_by):
        out[column.name] = Attribute(column.name, column.type, "group_by", _key_getter(i))
    index: dict[str, int] = {}
    for i, column in enumerate(schema.columns):
        index[column.name] = i
        role: Role
        if column.name in spec.carried:
            role = "carried"
        elif column.name in helpers:
            role = "stored"
        elif kinds.get(column.name) is AggKind.DISTINCT_COUNT:
            role = "distinct"
        else:
            role = "aggregate"
        out[column.name] = Attribute(column.name, column.type, role, _value_getter(i))
    for name in averages:
        sum_at, count_at = index.get(AGG_SUM_PREFIX + name), index.get(AGG_COUNT)
        if sum_at is None or count_at is None or name in out:  # pragma: no cover - engine
            continue
        parts = (_value_getter(sum_at), _value_getter(count_at))
        out[name] = Attribute(name, AttrType.DOUBLE, "average", _avg_getter(*parts), parts)
    return out


def _timestamp(row: AggRow) -> Value:
    return row.agg_timestamp_ms


def _key_getter(i: int) -> Callable[[AggRow], Value]:
    return lambda row: row.key[i]


def _value_getter(i: int) -> Callable[[AggRow], Value]:
    return lambda row: row.values[i]


def _avg_getter(
    sum_of: Callable[[AggRow], Value], count_of: Callable[[AggRow], Value]
) -> Callable[[AggRow], Value]:
    return lambda row: _ratio([sum_of(row)], [count_of(row)])


def _ratio(sums: Sequence[Value], counts: Sequence[Value]) -> float | None:
    """sum(sums) / sum(counts), exactly, rounded once to a float (None: no count)."""
    total_count = sum(c for c in counts if isinstance(c, int))
    if total_count == 0:
        return None
    values = [s for s in sums if isinstance(s, int | float) and not isinstance(s, bool)]
    if all(isinstance(s, int) for s in values):
        return sum(values) / total_count  # int / int: correctly rounded
    exact = sum((Fraction(s) for s in values), Fraction(0))
    return float(exact / total_count)


# --- resolution ----------------------------------------------------------------------


@dataclass(frozen=True)
class Compiled:
    fn: Fn
    family: Family
    type: AttrType | None  # None for literals and comparisons


@dataclass(frozen=True)
class PreparedQuery:
    """A query resolved against one aggregation: ``fetch`` reads its rows (on the
    engine's thread), ``evaluate`` answers from them (pure: any thread)."""

    query: Query
    app: str
    aggregation: str
    duration: Duration
    start_ms: int
    end_ms: int
    columns: tuple[str, ...]  # the output names, in select order
    state: AggregationState
    aggregated: bool
    predicate: Fn | None
    group_key: Callable[[AggRow], tuple[Value, ...]] | None
    select: tuple[Fn, ...]
    having: Fn | None
    order: tuple[tuple[Fn, bool], ...]

    def fetch(self) -> list[AggRow]:
        """The rows of the ``per`` duration with bucket start in ``within``."""
        return self.state.rows(self.duration, self.start_ms, self.end_ms)

    def evaluate(self, rows: Sequence[AggRow], *, max_records: int | None = None) -> list[Record]:
        if self.predicate is not None:
            test = self.predicate
            rows = [r for r in rows if test(r) is True]
        groups: list[list[AggRow]]
        if not self.aggregated:
            groups = [[r] for r in rows]
        elif self.group_key is None:
            groups = [list(rows)] if rows else []
        else:
            by_key: dict[tuple[Any, ...], list[AggRow]] = {}
            key_of = self.group_key
            for row in rows:
                by_key.setdefault(_hashable(key_of(row)), []).append(row)
            groups = list(by_key.values())
        pairs: list[tuple[list[AggRow], Record]] = []
        for group in groups:
            record: Record = []
            env = (group, record)
            for fn in self.select:
                record.append(fn(env))
            pairs.append(env)
        if self.having is not None:
            keep = self.having
            pairs = [p for p in pairs if keep(p) is True]
        for fn, descending in reversed(self.order):  # stable: the first key sorts last
            pairs.sort(key=_sort_key(fn), reverse=descending)
        start = self.query.offset or 0
        stop = None if self.query.limit is None else start + self.query.limit
        records = [record for _, record in pairs[start:stop]]
        if max_records is not None and len(records) > max_records:
            raise TooManyRecordsError(
                f"the answer holds {len(records)} records, more than {max_records}: "
                "add a limit (and an offset to page), or narrow within",
                position=self.query.source.pos,
            )
        return records


def _hashable(key: tuple[Value, ...]) -> tuple[Any, ...]:
    """Group keys where ``1``, ``1.0`` and ``True`` stay apart (a column has one type, but
    carried values of several source streams may be int and float)."""
    return tuple((type(v).__name__, v) for v in key)


def _sort_key(fn: Fn) -> Callable[[Env], tuple[int, Any]]:
    def key(env: Env) -> tuple[int, Any]:
        value = fn(env)
        return (0, 0) if value is None else (1, value)

    return key


def prepare(
    engine: Engine, apps: Sequence[App], app_name: str, query: str | Query
) -> PreparedQuery:
    """Resolve ``query`` on ``app_name``'s aggregation (``UnknownAppError`` for an app that
    ``apps`` or the engine does not hold, ``QueryError`` for the rest)."""
    parsed = parse(query) if isinstance(query, str) else query
    app = next((a for a in apps if a.name == app_name), None)
    running = {name for name, _ in engine.app_versions()}
    if app is None or app_name not in running:
        known = sorted({a.name for a in apps} & running)
        raise UnknownAppError(f"unknown app {app_name!r} (the apps: {', '.join(known) or 'none'})")
    source = parsed.source
    spec = next((s for s in app.aggregations if s.name == source.name), None)
    if spec is None:
        if any(t.name == source.name for t in app.tables):
            raise QueryError(
                f"{source.name} is a table: the Store Query API answers aggregations",
                position=source.pos,
            )
        names = [s.name for s in app.aggregations]
        raise QueryError(
            f"unknown aggregation {source.name!r} in app {app_name}"
            f"{_suggest(source.name, names)} (its aggregations: {', '.join(names) or 'none'})",
            position=source.pos,
        )
    try:
        state = engine.aggregation(spec.name)
    except KeyError:  # pragma: no cover - checked with app_versions above
        raise UnknownAppError(f"the engine does not hold {spec.name}") from None
    duration = _duration(parsed.per, spec)
    return _Resolver(parsed, attributes_of(state, spec), spec.name).prepare(
        app_name, state, duration
    )


def run_query(
    engine: Engine,
    apps: Sequence[App],
    app_name: str,
    query: str | Query,
    *,
    max_records: int | None = None,
) -> list[Record]:
    """The records answering ``query`` on ``app_name`` (see the module docstring).

    ``max_records``: refuse an answer of more records (``TooManyRecordsError``).
    """
    prepared = prepare(engine, apps, app_name, query)
    return prepared.evaluate(prepared.fetch(), max_records=max_records)


def _duration(per: ast.Per, spec: AggregationSpec) -> Duration:
    try:
        duration = Duration.parse(per.text)
    except ValueError:
        raise QueryError(
            f"unknown duration {per.text!r}: per takes {_DURATIONS}", position=per.pos
        ) from None
    if duration not in spec.durations:
        kept = ", ".join(d.value for d in spec.durations)
        raise QueryError(f"{spec.name} keeps {kept}, not {duration.value}", position=per.pos)
    return duration


def _suggest(name: str, known: Sequence[str]) -> str:
    close = get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _describe(c: Compiled) -> str:
    return {"number": "a number", "string": "a string", "bool": "true or false"}[c.family]


class _Resolver:
    """Names, types and functions of one query on one aggregation -> closures."""

    def __init__(self, query: Query, attributes: Mapping[str, Attribute], aggregation: str) -> None:
        self.query = query
        self.attributes = attributes
        self.aggregation = aggregation
        self.outputs: dict[str, tuple[int, Compiled]] = {}

    def attribute(self, name: ast.Name) -> Attribute:
        found = self.attributes.get(name.name)
        if found is None:
            known = list(self.attributes)
            raise QueryError(
                f"unknown attribute {name.name!r} in {self.aggregation}"
                f"{_suggest(name.name, known)} (known: {', '.join(known)})",
                position=name.pos,
            )
        return found

    def prepare(self, app: str, state: AggregationState, duration: Duration) -> PreparedQuery:
        q = self.query
        predicate = None
        if q.on is not None:
            predicate = self.condition(q.on, "on", in_group=False).fn
        calls = [item.value for item in q.select] + [item.value for item in q.order_by]
        aggregated = bool(q.group_by) or any(isinstance(v, ast.Call) for v in calls)
        aggregated = aggregated or (q.having is not None and _has_call(q.having))
        select: list[Fn] = []
        for n, item in enumerate(q.select):
            if item.output_name in self.outputs:
                raise QueryError(
                    f"two select items are named {item.output_name!r}: give one an alias (as)",
                    position=item.pos,
                )
            compiled = self.value(item.value, in_group=True, outputs=False)
            select.append(compiled.fn)
            self.outputs[item.output_name] = (n, compiled)
        group_key = None
        if q.group_by:
            group_key = _key_of(tuple(self.attribute(n).get for n in q.group_by))
        having = self.condition(q.having, "having", in_group=True).fn if q.having else None
        order = tuple(
            (self.value(item.value, in_group=True, outputs=True).fn, item.descending)
            for item in q.order_by
        )
        return PreparedQuery(
            query=q,
            app=app,
            aggregation=self.aggregation,
            duration=duration,
            start_ms=q.within.start_ms,
            end_ms=q.within.end_ms,
            columns=tuple(item.output_name for item in q.select),
            state=state,
            aggregated=aggregated,
            predicate=predicate,
            group_key=group_key,
            select=tuple(select),
            having=having,
            order=order,
        )

    # --- values -------------------------------------------------------------------

    def value(self, node: ast.Value, *, in_group: bool, outputs: bool) -> Compiled:
        if isinstance(node, ast.Name):
            if outputs and node.name in self.outputs:
                index, compiled = self.outputs[node.name]
                return Compiled(_output(index), compiled.family, compiled.type)
            attr = self.attribute(node)
            return Compiled(_last(attr.get) if in_group else attr.get, attr.family, attr.type)
        if not in_group:
            raise QueryError(
                f"{node.text()}: functions are not allowed in on (it filters rows; use having)",
                position=node.pos,
            )
        return self.call(node)

    def call(self, node: ast.Call) -> Compiled:
        if node.arg is None:  # count()
            return Compiled(_count_rows, "number", AttrType.LONG)
        attr = self.attribute(node.arg)
        if node.fn == "count":
            return Compiled(_count_values(attr.get), "number", AttrType.LONG)
        if attr.family != "number":
            raise QueryError(
                f"{node.text()}: {attr.name} is "
                f"{'a string' if attr.family == 'string' else 'a bool'}; {node.fn} takes a number",
                position=node.pos,
            )
        if node.fn == "sum":
            if attr.role == "average":
                raise QueryError(
                    f"{node.text()}: {attr.name} is an average (stored as "
                    f"{AGG_SUM_PREFIX}{attr.name} / {AGG_COUNT}); use avg({attr.name}), "
                    f"or sum({AGG_SUM_PREFIX}{attr.name})",
                    position=node.pos,
                )
            if attr.role == "distinct":
                raise QueryError(
                    f"{node.text()}: {attr.name} is a distinct count, and the distinct "
                    "counts of several buckets do not add up",
                    position=node.pos,
                )
            floats = attr.type in _FLOATS
            return Compiled(_sum(attr.get, floats), "number", attr.type)
        if node.fn == "avg":
            if attr.parts is not None:
                return Compiled(_avg_of_average(*attr.parts), "number", AttrType.DOUBLE)
            return Compiled(_mean(attr.get), "number", AttrType.DOUBLE)
        pick = min if node.fn == "min" else max
        return Compiled(_extreme(attr.get, pick), "number", attr.type)

    # --- conditions ---------------------------------------------------------------

    def condition(self, expr: ast.Expr, clause: str, *, in_group: bool) -> Compiled:
        compiled = self.expr(expr, in_group=in_group)
        if compiled.family != "bool":
            raise QueryError(
                f"{clause} needs a condition (true or false), got {_describe(compiled)}",
                position=expr.pos,
            )
        return compiled

    def expr(self, expr: ast.Expr, *, in_group: bool) -> Compiled:
        if isinstance(expr, ast.Name | ast.Call):
            return self.value(expr, in_group=in_group, outputs=in_group)
        if isinstance(expr, ast.Literal):
            constant = expr.value
            family: Family
            if isinstance(constant, bool):
                family = "bool"
            elif isinstance(constant, str):
                family = "string"
            else:
                family = "number"
            return Compiled(lambda env: constant, family, None)
        if isinstance(expr, ast.Compare):
            left = self.expr(expr.left, in_group=in_group)
            right = self.expr(expr.right, in_group=in_group)
            if left.family != right.family:
                raise QueryError(
                    f"{expr.op} compares {_describe(left)} with {_describe(right)}",
                    position=expr.pos,
                )
            if left.family == "bool" and expr.op not in ("==", "!="):
                raise QueryError(f"{expr.op} does not order bools", position=expr.pos)
            return Compiled(_comparison(expr.op, left.fn, right.fn), "bool", None)
        if isinstance(expr, ast.Not):
            operand = self.condition(expr.operand, "not", in_group=in_group)
            inner = operand.fn
            return Compiled(lambda env: inner(env) is False, "bool", None)
        word = "and" if isinstance(expr, ast.And) else "or"
        parts = tuple(self.condition(e, word, in_group=in_group).fn for e in expr.operands)
        if isinstance(expr, ast.And):
            return Compiled(lambda env: all(p(env) is True for p in parts), "bool", None)
        return Compiled(lambda env: any(p(env) is True for p in parts), "bool", None)


def _has_call(expr: ast.Expr) -> bool:
    if isinstance(expr, ast.Call):
        return True
    if isinstance(expr, ast.Compare):
        return _has_call(expr.left) or _has_call(expr.right)
    if isinstance(expr, ast.Not):
        return _has_call(expr.operand)
    if isinstance(expr, ast.And | ast.Or):
        return any(_has_call(e) for e in expr.operands)
    return False


def _key_of(
    getters: tuple[Callable[[AggRow], Value], ...],
) -> Callable[[AggRow], tuple[Value, ...]]:
    return lambda row: tuple(g(row) for g in getters)


def _output(index: int) -> Fn:
    return lambda env: env[1][index]


def _last(get: Callable[[AggRow], Value]) -> Fn:
    return lambda env: get(env[0][-1])


def _count_rows(env: Env) -> Value:
    return len(env[0])


def _count_values(get: Callable[[AggRow], Value]) -> Fn:
    return lambda env: sum(1 for row in env[0] if get(row) is not None)


def _numbers(get: Callable[[AggRow], Value], rows: Sequence[AggRow]) -> list[int | float]:
    out: list[int | float] = []
    for row in rows:
        v = get(row)
        if isinstance(v, int | float) and not isinstance(v, bool):
            out.append(v)
    return out


def _sum(get: Callable[[AggRow], Value], floats: bool) -> Fn:
    def total(env: Env) -> Value:
        values = _numbers(get, env[0])
        if not values:
            return None
        if floats or not all(isinstance(v, int) for v in values):
            return math.fsum(values)  # correctly rounded: exact, then one rounding
        return sum(values)

    return total


def _mean(get: Callable[[AggRow], Value]) -> Fn:
    def mean(env: Env) -> Value:
        values = _numbers(get, env[0])
        return _ratio(values, [len(values)]) if values else None

    return mean


def _avg_of_average(sum_of: Callable[[AggRow], Value], count_of: Callable[[AggRow], Value]) -> Fn:
    def average(env: Env) -> Value:
        rows = env[0]
        return _ratio([sum_of(r) for r in rows], [count_of(r) for r in rows])

    return average


def _extreme(get: Callable[[AggRow], Value], pick: Callable[..., Any]) -> Fn:
    def extreme(env: Env) -> Value:
        values = _numbers(get, env[0])
        return pick(values) if values else None

    return extreme


def compare_values(op: str, a: Value, b: Value) -> bool:
    """``a <op> b`` as a Store Query compares: with a null, only ``==`` (true when both
    are null) and ``!=`` (true unless both are) hold; else the operator's answer. The
    kinds were checked before (``family_of``): the replay tool's ``--where`` checks them
    per event."""
    if a is None or b is None:
        return (a is b) if op == "==" else (a is not b) if op == "!=" else False
    return bool(_COMPARE[op](a, b))


def _comparison(op: str, left: Fn, right: Fn) -> Fn:
    def test(env: Env) -> Value:
        return compare_values(op, left(env), right(env))

    return test
