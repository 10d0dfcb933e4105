"""The Store Query grammar: the APPS.md example verbatim, Siddhi's lexical rules, every
clause, the ``within`` forms, and syntax errors that name line, column and expectation."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from walrep.errors import WalrepError
from walrep.query import QueryError, parse, query_from_json
from walrep.query.ast import (
    And,
    Call,
    Compare,
    Literal,
    Name,
    Not,
    Or,
    OrderItem,
    Query,
    SelectItem,
)
from walrep.query.grammar import MAX_DEPTH, condition, order_item, select_item

APPS_MD_EXAMPLE = (
    "from ApiUserPerAppAgg on apiContext == '/pizza/1.0' within 1700000000000L, 1700086400000L "
    "per 'hours' select apiName, applicationName, sum(totalRequestCount) as hits group by "
    "applicationId order by hits desc limit 10"
)
BASE = "from A within 0, 10 per 'hours' select x"


def ms(*fields: int) -> int:
    return int(datetime(*fields, tzinfo=UTC).timestamp()) * 1000  # type: ignore[misc]


def strip(q: Query) -> object:
    """The query without positions (to compare two spellings of one query)."""
    return _strip(q)


def _strip(node: object) -> object:
    if isinstance(node, tuple):
        return tuple(_strip(n) for n in node)
    if hasattr(node, "__dataclass_fields__"):
        fields = node.__dataclass_fields__  # type: ignore[attr-defined]
        values = [(name, _strip(getattr(node, name))) for name in fields if name != "pos"]
        return (type(node).__name__, *values)
    return node


def test_the_apps_md_example_parses_verbatim() -> None:
    q = parse(APPS_MD_EXAMPLE)
    assert q.source == Name("ApiUserPerAppAgg", (1, 6))
    assert q.on == Compare(
        "==", Name("apiContext", (1, 26)), Literal("/pizza/1.0", (1, 40)), (1, 37)
    )
    assert (q.within.start_ms, q.within.end_ms, q.within.pattern) == (
        1_700_000_000_000,
        1_700_086_400_000,
        False,
    )
    assert q.per.text == "hours"
    assert [i.output_name for i in q.select] == ["apiName", "applicationName", "hits"]
    assert q.select[2].value == Call("sum", Name("totalRequestCount", (1, 140)), (1, 136))
    assert [n.name for n in q.group_by] == ["applicationId"]
    assert q.order_by == (OrderItem(Name("hits", (1, 199)), True, (1, 199)),)
    assert (q.having, q.limit, q.offset) == (None, 10, None)


def test_keywords_in_any_case_and_both_quotes_mean_the_same_query() -> None:
    lower = parse(APPS_MD_EXAMPLE)
    shouted = APPS_MD_EXAMPLE
    for word in ("from", "on", "within", "per", "select", "as", "group", "by", "order", "desc"):
        shouted = shouted.replace(f"{word} ", f"{word.upper()} ")
    shouted = shouted.replace("limit", "LiMiT").replace("sum(", "SUM(")
    assert shouted != APPS_MD_EXAMPLE
    assert parse(shouted) == lower  # same lengths: the positions agree too
    double = APPS_MD_EXAMPLE.replace("'/pizza/1.0'", '"/pizza/1.0"').replace("'hours'", '"hours"')
    assert parse(double) == lower


@pytest.mark.parametrize("per", ["'hours'", '"hours"', "'HOURS'", '"hour"'])
def test_per_takes_a_string_in_either_quote(per: str) -> None:
    assert parse(f"from A within 0, 10 per {per} select x").per.text.lower() in ("hours", "hour")


def test_long_suffixes_trailing_semicolon_and_comments() -> None:
    q = parse(
        "from A /* the agg */ on n == 5L and m > 7l within 1L, 20l -- a range\n"
        "per 'days' select x limit 3L offset 2l ;  "
    )
    assert (q.within.start_ms, q.within.end_ms, q.limit, q.offset) == (1, 20, 3, 2)
    assert isinstance(q.on, And)
    assert [c.right for c in q.on.operands] == [  # type: ignore[attr-defined]
        Literal(5, (1, 30)),
        Literal(7, (1, 41)),
    ]
    assert parse(BASE + ";") == parse(BASE)


def test_every_clause() -> None:
    q = parse(
        "from ApiExeTime on apiName != 'x' within '2026-01-01', '2026-01-03' per 'days' "
        "select AGG_TIMESTAMP, apiContext as ctx, avg(responseTime) as rt, count() as n, "
        "count(apiName) as c, min(minResponseTime) as lo, max(maxResponseTime) as hi "
        "group by AGG_TIMESTAMP, apiContext having n >= 2 and rt < 100.5 "
        "order by rt desc, ctx asc, AGG_TIMESTAMP limit 5 offset 10"
    )
    assert (q.within.start_ms, q.within.end_ms) == (ms(2026, 1, 1), ms(2026, 1, 3))
    assert [i.output_name for i in q.select] == ["AGG_TIMESTAMP", "ctx", "rt", "n", "c", "lo", "hi"]
    assert [i.value.fn for i in q.select if isinstance(i.value, Call)] == [
        "avg",
        "count",
        "count",
        "min",
        "max",
    ]
    assert q.select[3].value == Call("count", None, q.select[3].pos)
    assert [n.name for n in q.group_by] == ["AGG_TIMESTAMP", "apiContext"]
    assert isinstance(q.having, And)
    assert [(o.value, o.descending) for o in q.order_by] == [
        (Name("rt", q.order_by[0].pos), True),
        (Name("ctx", q.order_by[1].pos), False),
        (Name("AGG_TIMESTAMP", q.order_by[2].pos), False),
    ]
    assert (q.limit, q.offset) == (5, 10)


def test_conditions_precedence_not_parentheses_and_literals() -> None:
    e = condition("a == 1 or b != 'x' and not c < -2.5")
    assert isinstance(e, Or)
    left, right = e.operands
    assert left == Compare("==", Name("a", (1, 1)), Literal(1, (1, 6)), (1, 3))
    assert isinstance(right, And)
    assert isinstance(right.operands[1], Not)
    inner = right.operands[1].operand
    assert isinstance(inner, Compare) and inner.right == Literal(-2.5, inner.right.pos)
    grouped = condition("(a == 1 or b == 2) and c == true")
    assert isinstance(grouped, And) and isinstance(grouped.operands[0], Or)
    assert grouped.operands[1].right == Literal(True, (1, 29))  # type: ignore[union-attr]
    for op in ("==", "!=", "<", ">", "<=", ">="):
        found = condition(f"x {op} 1")
        assert isinstance(found, Compare) and found.op == op
    assert condition("x == 1.5f").right.value == 1.5  # type: ignore[union-attr]
    assert condition("x == 2d").right.value == 2.0  # type: ignore[union-attr]
    assert condition("x == 1e3").right.value == 1000.0  # type: ignore[union-attr]
    assert condition("x == FALSE").right.value is False  # type: ignore[union-attr]
    assert condition('x == "it\'s"').right.value == "it's"  # type: ignore[union-attr]


def test_fragments_of_the_structured_form() -> None:
    assert select_item("SUM(x) AS y") == SelectItem(
        Call("sum", Name("x", (1, 5)), (1, 1)), "y", (1, 1)
    )
    assert order_item("y desc") == OrderItem(Name("y", (1, 1)), True, (1, 1))
    assert order_item("y").descending is False


def test_the_structured_form_is_the_same_query() -> None:
    structured = query_from_json(
        {
            "from": "ApiUserPerAppAgg",
            "on": "apiContext == '/pizza/1.0'",
            "within": [1700000000000, 1700086400000],
            "per": "hours",
            "select": ["apiName", "applicationName", "sum(totalRequestCount) as hits"],
            "group_by": ["applicationId"],
            "order_by": ["hits desc"],
            "limit": 10,
        }
    )
    assert strip(structured) == strip(parse(APPS_MD_EXAMPLE))
    pattern = query_from_json(
        {"from": "A", "within": "2026-11-** **:**:**", "per": "days", "select": ["x"]}
    )
    assert (pattern.within.start_ms, pattern.within.end_ms) == (ms(2026, 11, 1), ms(2026, 12, 1))
    iso = query_from_json(
        {"from": "A", "within": ["2026-11-01", "2026-11-02"], "per": "days", "select": ["x"]}
    )
    assert (iso.within.start_ms, iso.within.end_ms) == (ms(2026, 11, 1), ms(2026, 11, 2))


@pytest.mark.parametrize(
    ("obj", "field", "words"),
    [
        ([], "query", "JSON object"),
        ({"from": "A", "per": "days", "select": ["x"]}, "within", "required"),
        (
            {"from": "A", "within": [0, 1], "per": "days", "select": ["x"], "where": "x"},
            "where",
            "unknown",
        ),
        ({"from": "A", "within": [0, 1], "per": "days", "select": []}, "select", "at least one"),
        ({"from": "A", "within": [0, 1], "per": "days", "select": ["sum(x"]}, "select", "expected"),
        (
            {"from": "A", "within": [0, 1], "per": "days", "select": ["x"], "on": "x ="},
            "on",
            "expected",
        ),
        (
            {"from": "A", "within": [0, 1], "per": "days", "select": ["x"], "limit": -1},
            "limit",
            ">= 0",
        ),
        ({"from": "A", "within": [0, 1], "per": 3, "select": ["x"]}, "per", "string"),
        ({"from": "A", "within": [2, 1], "per": "days", "select": ["x"]}, "within", "after"),
        ({"from": "A", "within": [0, True], "per": "days", "select": ["x"]}, "within", "epoch ms"),
        (
            {"from": "count()", "within": [0, 1], "per": "days", "select": ["x"]},
            "from",
            "not an attribute",
        ),
        (
            {
                "from": "A",
                "within": [0, 1],
                "per": "d",
                "select": ["x"],
                "groupBy": ["a"],
                "group_by": ["b"],
            },
            "groupBy",
            "one of",
        ),
    ],
)
def test_structured_form_errors_name_the_field(obj: object, field: str, words: str) -> None:
    with pytest.raises(QueryError) as caught:
        query_from_json(obj)
    assert caught.value.field == field
    assert words in str(caught.value), caught.value


@pytest.mark.parametrize(
    ("pattern", "start", "end"),
    [
        ("2026-**-** **:**:**", ms(2026, 1, 1), ms(2027, 1, 1)),
        ("2026-11-** **:**:**", ms(2026, 11, 1), ms(2026, 12, 1)),
        ("2026-12-** **:**:**", ms(2026, 12, 1), ms(2027, 1, 1)),
        ("2024-02-** **:**:**", ms(2024, 2, 1), ms(2024, 3, 1)),
        ("2024-02-29 **:**:**", ms(2024, 2, 29), ms(2024, 3, 1)),
        ("2026-11-05 13:**:**", ms(2026, 11, 5, 13), ms(2026, 11, 5, 14)),
        ("2026-11-05 13:04:**", ms(2026, 11, 5, 13, 4), ms(2026, 11, 5, 13, 5)),
        ("2026-11-** **:**:** +05:30", ms(2026, 10, 31, 18, 30), ms(2026, 11, 30, 18, 30)),
        ("2026-11-**", ms(2026, 11, 1), ms(2026, 12, 1)),
        ("2026-11-05", ms(2026, 11, 5), ms(2026, 11, 6)),  # one plain date: that day
    ],
)
def test_within_patterns_span_their_finest_field(pattern: str, start: int, end: int) -> None:
    for quote in ("'", '"'):
        w = parse(f"from A within {quote}{pattern}{quote} per 'hours' select x").within
        assert (w.start_ms, w.end_ms) == (start, end)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-05T13:04:05Z", ms(2026, 11, 5, 13, 4, 5)),
        ("2026-11-05t13:04:05z", ms(2026, 11, 5, 13, 4, 5)),
        ("2026-11-05 13:04:05", ms(2026, 11, 5, 13, 4, 5)),
        ("2026-11-05 13:04", ms(2026, 11, 5, 13, 4)),
        ("2026-11-05", ms(2026, 11, 5)),
        ("2026-11-05T13:04:05.25Z", ms(2026, 11, 5, 13, 4, 5) + 250),
        ("2026-11-05T13:04:05.123456Z", ms(2026, 11, 5, 13, 4, 5) + 123),
        ("2026-11-05 13:04:05 +05:30", ms(2026, 11, 5, 7, 34, 5)),
        ("2026-11-05T13:04:05-0100", ms(2026, 11, 5, 14, 4, 5)),
        ("2026-11-05T13:04:05+01", ms(2026, 11, 5, 12, 4, 5)),
    ],
)
def test_within_iso_strings(text: str, expected: int) -> None:
    w = parse(f"from A within '{text}', 9999999999999 per 'hours' select x").within
    assert (w.start_ms, w.end_ms, w.pattern) == (expected, 9_999_999_999_999, False)


def _error(query: str) -> QueryError:
    with pytest.raises(QueryError) as caught:
        parse(query)
    return caught.value


@pytest.mark.parametrize(
    ("query", "position", "expected", "got"),
    [
        ("from ApiUserPerAppAgg per 'hours' select x", (1, 23), ("'on'", "'within'"), "'per'"),
        (
            "from A on x == 'y' per 'hours' select x",
            (1, 20),
            ("'and'", "'or'", "'within'"),
            "'per'",
        ),
        ("from A within 0, 10 select x", (1, 21), ("'per'",), "'select'"),
        ("from A within 0, 10 per hours select x", (1, 25), ("a string",), "'hours'"),
        ("from A within 0, 10 per 'hours' select", (1, 39), ("a name",), "the end of the query"),
        (
            "from A within 0, 10 per 'hours'\nselect x,\n  group by y",
            (3, 3),
            ("a name",),
            "'group'",
        ),
        ("from A within 0, 10 per 'hours' select x order hits", (1, 48), ("'by'",), "'hits'"),
        (
            "from A within 0, 10 per 'hours' select x limit",
            (1, 47),
            ("a number",),
            "the end of the query",
        ),
        ("from A within 0, 10 per 'hours' select x limit 1 limit 2", (1, 50), None, "'limit'"),
        ("from A within 0, 10 per 'hours' select x where y", (1, 42), None, "'where'"),
        ("from A on x = 1 within 0, 10 per 'hours' select x", (1, 13), None, "'='"),
        ("from A within 0, 10 per 'hours select x", (1, 25), ("a string",), '"\'"'),
        ("select x from A", (1, 1), ("'from'",), "'select'"),
        ("", (1, 1), ("'from'",), "the end of the query"),
        ("from A within 0, 10 per 'hours' select sum(x y)", (1, 46), ("')'",), "'y'"),
    ],
)
def test_syntax_errors_name_line_column_and_what_was_expected(
    query: str, position: tuple[int, int], expected: tuple[str, ...] | None, got: str
) -> None:
    error = _error(query)
    assert error.position == position, error
    assert (error.line, error.column) == position
    if expected is not None:
        assert error.expected == expected, error
    assert str(error).startswith(f"line {position[0]}, column {position[1]}: expected ")
    assert str(error).endswith(f", got {got}") or f"got {got}" in str(error), error


def test_the_message_reads_as_documented() -> None:
    error = _error("from ApiUserPerAppAgg on x == 'y' per 'hours' select x")
    assert str(error) == "line 1, column 35: expected 'and', 'or' or 'within', got 'per'"
    assert isinstance(error, WalrepError) and not error.retriable


@pytest.mark.parametrize(
    ("query", "position", "words"),
    [
        ("from A within 0, 10 per 'hours' select x limit 1.5", (1, 48), "whole number"),
        ("from A within 0, 10 per 'hours' select x offset 2e3", (1, 49), "whole number"),
        ("from A within 1.5, 10 per 'hours' select x", (1, 15), "whole number"),
        ("from A on x == 1.5L within 0, 10 per 'h' select x", (1, 16), "long literal"),
        ("from A within 20, 10 per 'hours' select x", (1, 19), "after the end"),
        ("from A within 10 per 'hours' select x", (1, 15), "two times"),
        ("from A within 0, 10 per 'hours' select median(x)", (1, 40), "unknown function"),
        ("from A within 0, 10 per 'hours' select sum()", (1, 40), "needs an attribute"),
        ("from A within '2026-**-** **:**:**', 10 per 'h' select x", (1, 16), "only value"),
        ("from A within '2026-02-30', 10 per 'h' select x", (1, 16), "day is out of range"),
        ("from A within '2026-**-05', 10 per 'h' select x", (1, 24), "after a '**'"),
        ("from A within '2026-11-05 25:00', 10 per 'h' select x", (1, 16), "hour must be"),
        ("from A within '26-11-05', 10 per 'h' select x", (1, 16), "not a time"),
        ("from A within '2026-11-05 +25:00', 10 per 'h' select x", (1, 27), "zone"),
    ],
)
def test_malformed_values_are_query_errors_at_their_place(
    query: str, position: tuple[int, int], words: str
) -> None:
    error = _error(query)
    assert words in str(error), error
    assert error.position == position, error


def test_nesting_and_length_are_bounded() -> None:
    deep = "not " * (MAX_DEPTH + 5) + "x"
    assert "nested" in str(_error(f"from A on {deep} within 0, 1 per 'h' select x"))
    parens = "(" * 5000 + "x == 1" + ")" * 5000
    assert parse(f"from A on {parens} within 0, 1 per 'h' select x").on is not None
    assert "characters long" in str(
        _error("from A within 0, 1 per 'h' select " + "x, " * 30000 + "x")
    )


# --- anything else is a QueryError, never another exception ---------------------------

WORDS = [
    "from", "on", "within", "per", "select", "as", "group", "by", "having", "order", "asc",
    "desc", "limit", "offset", "and", "or", "not", "true", "false", "sum", "count", "avg",
    "(", ")", ",", ";", "==", "!=", "<", ">", "<=", ">=", "=", "-", "'hours'", '"days"',
    "'2026-11-** **:**:**'", "'2026-13-01'", "'", '"', "1", "10L", "1.5", "1e9", "x",
    "AGG_TIMESTAMP", "*", "@", "/*", "*/", "--", "\n", "1700000000000L",
]  # fmt: skip


def _parses_or_query_error(text: str) -> None:
    try:
        result = parse(text)
    except QueryError as e:
        assert e.line >= 1 and e.column >= 1
        assert str(e).startswith(f"line {e.line}, column {e.column}: ")
        return
    assert isinstance(result, Query)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_random_text_is_a_query_or_a_query_error(text: str) -> None:
    _parses_or_query_error(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(WORDS), max_size=40))
def test_random_token_soup_is_a_query_or_a_query_error(words: list[str]) -> None:
    _parses_or_query_error(" ".join(words))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, len(APPS_MD_EXAMPLE)),
    st.integers(0, 12),
    st.text(alphabet=st.sampled_from("()',;=<>!*-\" aL0"), max_size=4),
)
def test_mutated_valid_queries_are_a_query_or_a_query_error(at: int, cut: int, insert: str) -> None:
    _parses_or_query_error(APPS_MD_EXAMPLE[:at] + insert + APPS_MD_EXAMPLE[at + cut :])
