"""``--where``: a small, safe condition over an event's attributes (never ``eval``).

The language is the Store Query condition (``walrep.query.grammar.condition``: ``==``,
``!=``, ``<``, ``>``, ``<=``, ``>=``, ``and``, ``or``, ``not``, parentheses, string and
number literals, ``true``/``false``) with the names standing for the event's attributes::

    apiName == 'PizzaShackAPI' and responseCode >= 500

Comparisons are the Store Query's (``compare_values``: a missing attribute is null,
and null equals only null). The kinds of the two sides are checked per event, since an
event log holds whatever was published: a number compared with a string, or a bool
with ``<``, is false (``!=``: true). A name that is a keyword of the grammar cannot be
used. Compiled once into closures; evaluating one costs a few dict lookups.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from walrep.query import ast
from walrep.query.errors import QueryError
from walrep.query.evaluate import compare_values
from walrep.query.grammar import condition
from walrep.replay.errors import ReplayError

Attrs = Mapping[str, Any]
Test = Callable[[Attrs], Any]


def _kind(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "other"  # a list or an object: equal to nothing of another kind


def _compare(op: str, left: Test, right: Test) -> Test:
    def test(attrs: Attrs) -> bool:
        a, b = left(attrs), right(attrs)
        ka, kb = _kind(a), _kind(b)
        both = ka is not None and kb is not None
        if both and (ka != kb or ka == "other" or (ka == "bool" and op not in ("==", "!="))):
            return op == "!="
        return compare_values(op, a, b)

    return test


def _compile(expr: ast.Expr) -> Test:
    if isinstance(expr, ast.Name):
        name = expr.name
        return lambda attrs: attrs.get(name)
    if isinstance(expr, ast.Literal):
        value = expr.value
        return lambda attrs: value
    if isinstance(expr, ast.Compare):
        return _compare(expr.op, _compile(expr.left), _compile(expr.right))
    if isinstance(expr, ast.And):
        parts = [_compile(e) for e in expr.operands]
        return lambda attrs: all(p(attrs) is True for p in parts)
    if isinstance(expr, ast.Or):
        parts = [_compile(e) for e in expr.operands]
        return lambda attrs: any(p(attrs) is True for p in parts)
    if isinstance(expr, ast.Not):
        inner = _compile(expr.operand)
        return lambda attrs: inner(attrs) is not True
    line, column = expr.pos
    raise ReplayError(f"--where: line {line}, column {column}: a function is not a condition")


def compile_where(text: str) -> Callable[[Attrs], bool]:
    """The predicate of ``text``; ``ReplayError`` naming the position of a fault."""
    try:
        expr = condition(text)
    except QueryError as e:
        raise ReplayError(f"--where {text!r}: {e}") from None
    test = _compile(expr)
    return lambda attrs: test(attrs) is True
