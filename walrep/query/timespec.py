"""The time strings of ``within``: ISO-8601 instants and Siddhi's ``**`` patterns (UTC).

Forms (parsed with a small lark grammar, never by hand)::

    2026-11-05                      2026-11-05T13:04:05Z
    2026-11-05 13:04                2026-11-05T13:04:05.250+05:30
    2026-11-05 13:04:05 +05:30      2026-11-05 13:04:05+0530
    2026-11-** **:**:**             2026-**-** **:**:**  (patterns)

Without a zone a time is UTC. In a pattern, ``**`` stands for the whole span of its
field and every field after the first ``**`` must be ``**`` too; the year is always
given. ``span`` is the range ``[start, end)`` of a string's finest given field: a
pattern ``"2026-11-** **:**:**"`` is November 2026, ``"2026-11-05"`` that day,
``"2026-11-05 13:04:05"`` that second (with a fraction: that millisecond). ``instant``
is the start of that range, and is refused for a pattern.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import cache

from lark import Lark, Token, Tree, UnexpectedInput

from walrep.query.errors import QueryError

TIME_GRAMMAR = r"""
start: date tail?
date: YEAR "-" FIELD "-" FIELD
tail: T clock zone?
    | SP clock zone?
    | SP clock SP zone
    | SP zone
    | zone
clock: FIELD ":" FIELD (":" FIELD FRACTION?)?
zone: UTC_Z | SIGN DIGITS2 (":"? DIGITS2)?

YEAR: /[0-9]{4}/
FIELD: /[0-9]{2}|\*\*/
DIGITS2: /[0-9]{2}/
FRACTION: /\.[0-9]{1,9}/
T: "T"i
SP: " "
UTC_Z: "Z"i
SIGN: /[+-]/
"""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_EXPECTED_TIME = (
    "a date like 2026-11-05, 2026-11-05T13:04:05Z or a pattern like 2026-11-** **:**:**"
)
_FIELDS = ("year", "month", "day", "hour", "minute", "second")


@cache
def _parser() -> Lark:
    return Lark(TIME_GRAMMAR, parser="lalr", lexer="contextual")


@dataclass(frozen=True)
class TimeSpan:
    start_ms: int
    end_ms: int
    pattern: bool  # some field was ``**``


def span(text: str, pos: tuple[int, int]) -> TimeSpan:
    """The range of ``text`` (see the module docstring); ``pos`` is where the string's
    opening quote is in the query, for the error positions."""
    line, column = pos

    def error(reason: str, offset: int = 0) -> QueryError:
        return QueryError(f"time {text!r}: {reason}", position=(line, column + 1 + offset))

    try:
        tree = _parser().parse(text)
    except UnexpectedInput as e:
        where = max(e.column, 1) - 1 if isinstance(e.column, int) else 0
        raise error(f"not a time (expected {_EXPECTED_TIME})", where) from None
    fields: list[str | None] = [None] * 6  # None: not written
    fraction = ""
    zone = UTC
    first_star: int | None = None
    for node in tree.iter_subtrees_topdown():  # type: ignore[no-untyped-call]
        if node.data == "date" or node.data == "clock":
            values = [t for t in node.children if isinstance(t, Token) and t.type != "FRACTION"]
            base = 0 if node.data == "date" else 3
            for n, token in enumerate(values):
                fields[base + n] = str(token)
                if str(token) == "**" and first_star is None:
                    first_star = base + n
                elif str(token) != "**" and first_star is not None:
                    raise error(
                        f"{_FIELDS[base + n]} given after a '**' field: every field after "
                        "the first '**' must be '**'",
                        _offset(token),
                    )
            for token in node.children:
                if isinstance(token, Token) and token.type == "FRACTION":
                    if first_star is not None:
                        raise error("a fraction needs the seconds", _offset(token))
                    fraction = str(token)[1:]
        elif node.data == "zone":
            zone = _zone(node, error)
    try:
        year, month, day, hour, minute, second = (
            int(f) if f is not None and f != "**" else None for f in fields
        )
        assert year is not None  # the grammar requires it
        start = datetime(
            year, month or 1, day or 1, hour or 0, minute or 0, second or 0, tzinfo=zone
        )
    except ValueError as e:
        raise error(str(e)) from None
    finest = (first_star if first_star is not None else _written(fields)) - 1
    start_ms = (start - _EPOCH) // _MS
    if fraction:
        digits = (fraction + "00")[:3]
        start_ms += int(digits)
        return TimeSpan(start_ms, start_ms + 1, False)
    if finest == 0:
        end = start.replace(year=start.year + 1)
    elif finest == 1:
        end = (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else start.replace(month=start.month + 1)
        )
    else:
        end = (
            start
            + (
                timedelta(days=1),
                timedelta(hours=1),
                timedelta(minutes=1),
                timedelta(seconds=1),
            )[finest - 2]
        )
    try:
        end_ms = (end - _EPOCH) // _MS
    except OverflowError:  # pragma: no cover - year 9999 + 1
        raise error("out of range") from None
    return TimeSpan(start_ms, end_ms, first_star is not None)


def instant(text: str, pos: tuple[int, int]) -> int:
    """Epoch ms of an ISO-8601 time (a pattern is refused)."""
    found = span(text, pos)
    if found.pattern:
        raise QueryError(
            f"time {text!r}: a '**' pattern is within's only value, not one end of a range",
            position=(pos[0], pos[1] + 1),
        )
    return found.start_ms


def _written(fields: list[str | None]) -> int:
    return sum(1 for f in fields if f is not None)


def _offset(token: Token) -> int:
    return (token.column or 1) - 1


def _zone(node: Tree[Token], error: Callable[[str, int], QueryError]) -> timezone:
    tokens = [t for t in node.children if isinstance(t, Token)]
    if tokens[0].type == "UTC_Z":
        return UTC
    sign = -1 if str(tokens[0]) == "-" else 1
    hours = int(tokens[1])
    minutes = int(tokens[2]) if len(tokens) > 2 else 0
    if hours > 23 or minutes > 59:
        raise error(f"zone {''.join(map(str, tokens))} out of range", _offset(tokens[0]))
    return timezone(sign * timedelta(hours=hours, minutes=minutes))
