"""The structured (JSON) form of a Store Query, beside the string form.

::

    {"from": "ApiUserPerAppAgg",
     "on": "apiContext == '/pizza/1.0'",              (optional: a condition)
     "within": [1700000000000, 1700086400000],        (or ["2026-11-01", "2026-12-01"],
                                                        or one pattern "2026-11-** **:**:**")
     "per": "hours",
     "select": ["apiName", "sum(totalRequestCount) as hits"],
     "group_by": ["applicationId"],                    (optional; also "groupBy")
     "having": "hits > 10",                            (optional)
     "order_by": ["hits desc"],                        (optional; also "orderBy")
     "limit": 10, "offset": 0}                         (optional)

The fragments (conditions, select and order items, names) are parsed by the same
grammar as the string form; an error names the field (``QueryError.field``) and the
position inside that field's text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from walrep.query import grammar, timespec
from walrep.query.ast import Name, OrderItem, Per, Query, SelectItem, Within
from walrep.query.errors import QueryError

T = TypeVar("T")

FIELDS: Final = frozenset(
    {
        "from",
        "on",
        "within",
        "per",
        "select",
        "group_by",
        "groupBy",
        "having",
        "order_by",
        "orderBy",
        "limit",
        "offset",
    }
)
_START: Final = (1, 1)


def _fail(field: str, reason: str) -> QueryError:
    return QueryError(reason, position=_START, field=field)


def _in(field: str, parse: Callable[[str], T], text: str) -> T:
    try:
        return parse(text)
    except QueryError as e:
        raise e.in_field(field) from None


def _text(obj: Mapping[str, Any], field: str) -> str | None:
    value = obj.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(field, f"{field} must be a string")
    return value


def _texts(obj: Mapping[str, Any], *names: str) -> tuple[str, list[str]] | None:
    given = [n for n in names if n in obj]
    if len(given) > 1:
        raise _fail(given[1], f"give one of {' or '.join(names)}")
    if not given:
        return None
    field = given[0]
    items = obj[field]
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise _fail(field, f"{field} must be a list of strings")
    return field, items


def _count(obj: Mapping[str, Any], field: str) -> int | None:
    value = obj.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(field, f"{field} must be a whole number >= 0")
    return value


def _name(field: str, text: str) -> Name:
    item = _in(field, grammar.select_item, text)
    if not isinstance(item.value, Name) or item.alias is not None:
        raise _fail(field, f"{text!r} is not an attribute name")
    return item.value


def _time(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _fail("within", "a time is epoch ms (a number) or an ISO-8601 string")
    if isinstance(value, int):
        return value
    return _in("within", lambda t: timespec.instant(t, (1, 0)), value)


def _within(value: Any) -> Within:
    if isinstance(value, str):
        found = _in("within", lambda t: timespec.span(t, (1, 0)), value)
        return Within(found.start_ms, found.end_ms, True, _START)
    if not isinstance(value, list) or len(value) not in (1, 2):
        raise _fail("within", "within is [start, end] or one pattern string")
    if len(value) == 1:
        return _within(value[0]) if isinstance(value[0], str) else _within(None)
    start, end = _time(value[0]), _time(value[1])
    if start > end:
        raise _fail("within", f"the start {start} is after the end {end}")
    return Within(start, end, False, _START)


def query_from_json(obj: Any) -> Query:
    """The ``Query`` of a structured query (see the module docstring)."""
    if not isinstance(obj, dict):
        raise _fail("query", "a structured query is a JSON object")
    extra = sorted(set(obj) - FIELDS)
    if extra:
        raise _fail(
            extra[0], f"unknown field {extra[0]!r} (the fields: {', '.join(sorted(FIELDS))})"
        )
    for field in ("from", "within", "per", "select"):
        if field not in obj:
            raise _fail(field, f"{field} is required")
    source = _text(obj, "from")
    assert source is not None
    source_name = _name("from", source)
    on_text = _text(obj, "on")
    having_text = _text(obj, "having")
    per = _text(obj, "per")
    assert per is not None
    select = _texts(obj, "select")
    assert select is not None
    if not select[1]:
        raise _fail("select", "select needs at least one item")
    items: list[SelectItem] = [_in("select", grammar.select_item, t) for t in select[1]]
    group = _texts(obj, "group_by", "groupBy")
    order = _texts(obj, "order_by", "orderBy")
    order_items: list[OrderItem] = (
        [_in(order[0], grammar.order_item, t) for t in order[1]] if order else []
    )
    return Query(
        source=source_name,
        on=_in("on", grammar.condition, on_text) if on_text is not None else None,
        within=_within(obj["within"]),
        per=Per(per, _START),
        select=tuple(items),
        group_by=tuple(_name(group[0], t) for t in group[1]) if group else (),
        having=_in("having", grammar.condition, having_text) if having_text is not None else None,
        order_by=tuple(order_items),
        limit=_count(obj, "limit"),
        offset=_count(obj, "offset"),
    )
