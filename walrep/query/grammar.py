"""The Store Query grammar (lark, LALR) and the parser into ``walrep.query.ast``.

The subset of Siddhi's on-demand aggregation query that WSO2 API-M clients send
(APPS.md, "Store Query API")::

    from <Aggregation> [on <condition>]
    within <start>, <end> | within <pattern>
    per <duration string>
    select <item>, ...
    [group by <attr>, ...] [having <condition>]
    [order by <item> [asc|desc], ...] [limit <n>] [offset <n>] [;]

Lexical rules are Siddhi's: keywords in any case; strings in single or double quotes
(no escapes, no line breaks); ``==``, ``!=``, ``<``, ``>``, ``<=``, ``>=``, ``and``, ``or``,
``not`` and parentheses; numbers with an optional ``L`` (long) or ``f``/``d`` suffix;
``--`` and ``/* */`` comments. Select items and order items are an attribute or one of
``sum(x)``, ``count()``, ``count(x)``, ``min(x)``, ``max(x)``, ``avg(x)`` (function names in
any case). Keywords are reserved: they are never attribute names.

``parse`` raises ``QueryError`` for anything else, with the position and what was
expected there: ``line 1, column 38: expected 'on' or 'within', got 'per'``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Final, cast

from lark import Lark, Token, Tree, UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.exceptions import VisitError
from lark.lexer import PatternStr

from walrep.query import timespec
from walrep.query.ast import (
    FUNCTIONS,
    And,
    Call,
    Compare,
    CompareOp,
    Expr,
    Literal,
    Name,
    Not,
    Or,
    OrderItem,
    Per,
    Pos,
    Query,
    SelectItem,
    Value,
    Within,
)
from walrep.query.errors import QueryError

MAX_QUERY_CHARS: Final = 64 * 1024
MAX_DEPTH: Final = 50  # nesting of conditions (parentheses, not, and/or)

QUERY_GRAMMAR: Final = r"""
query: from_clause on_clause? within_clause per_clause select_clause group_clause? \
       having_clause? order_clause? limit_clause? offset_clause? ";"?

from_clause: _FROM NAME
on_clause: _ON condition
within_clause: _WITHIN time_value ("," time_value)?
?time_value: STRING | integer
per_clause: _PER STRING
select_clause: _SELECT select_item ("," select_item)*
select_item: value (_AS NAME)?
group_clause: _GROUP _BY NAME ("," NAME)*
having_clause: _HAVING condition
order_clause: _ORDER _BY order_item ("," order_item)*
order_item: value (ASC | DESC)?
limit_clause: _LIMIT NUMBER
offset_clause: _OFFSET NUMBER

?value: NAME -> attribute
      | NAME "(" NAME? ")" -> call

?condition: or_expr
?or_expr: and_expr (_OR and_expr)*
?and_expr: not_expr (_AND not_expr)*
?not_expr: _NOT not_expr -> negation
         | comparison
?comparison: operand (COMPARE operand)?
?operand: value
        | literal
        | "(" condition ")"
literal: STRING | number | TRUE | FALSE
integer: MINUS? NUMBER
number: MINUS? NUMBER

_FROM: "from"i
_ON: "on"i
_WITHIN: "within"i
_PER: "per"i
_SELECT: "select"i
_AS: "as"i
_GROUP: "group"i
_BY: "by"i
_HAVING: "having"i
_ORDER: "order"i
_LIMIT: "limit"i
_OFFSET: "offset"i
_AND: "and"i
_OR: "or"i
_NOT: "not"i
ASC: "asc"i
DESC: "desc"i
TRUE: "true"i
FALSE: "false"i

NAME: /[A-Za-z_][A-Za-z0-9_]*/
NUMBER: /[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?[lLfFdD]?/
STRING: /'[^'\n]*'|"[^"\n]*"/
COMPARE: /==|!=|<=|>=|<|>/
MINUS: "-"

COMMENT: /--[^\n]*/ | /\/\*(.|\n)*?\*\//
%ignore /\s+/
%ignore COMMENT
"""

# How a terminal is named in "expected ..." (keywords and punctuation: as written).
_DISPLAY: Final = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string",
    "COMPARE": "a comparison (==, !=, <, >, <=, >=)",
    "$END": "the end of the query",
}
_STARTS: Final = ("query", "condition", "select_item", "order_item")


@cache
def _parser() -> Lark:
    return Lark(
        QUERY_GRAMMAR,
        parser="lalr",
        lexer="basic",  # keywords are reserved everywhere, as in Siddhi
        start=list(_STARTS),
        propagate_positions=True,
        maybe_placeholders=False,
    )


def parse(text: str) -> Query:
    """The ``Query`` in ``text``; ``QueryError`` for a syntax error or a malformed value."""
    tree = _parse(text, "query")
    with _bounded():
        return _Builder().query(tree)


def condition(text: str) -> Expr:
    """A condition alone (the ``on``/``having`` of the structured form)."""
    tree = _parse(text, "condition")
    with _bounded():
        return _Builder().expr(tree, 0)


def select_item(text: str) -> SelectItem:
    """``attr``, ``sum(x) as hits``, ... alone (the structured form's ``select``)."""
    tree = _parse(text, "select_item")
    with _bounded():
        return _Builder().select_item(tree)


def order_item(text: str) -> OrderItem:
    """``hits desc`` alone (the structured form's ``order_by``)."""
    tree = _parse(text, "order_item")
    with _bounded():
        return _Builder().order_item(tree)


@contextmanager
def _bounded() -> Iterator[None]:
    try:
        yield
    except RecursionError:
        raise QueryError("the query is nested too deeply") from None


def _parse(text: str, start: str) -> Tree[Token]:
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(f"the query is {len(text)} characters long, at most {MAX_QUERY_CHARS}")
    try:
        return _parser().parse(text, start=start)
    except UnexpectedInput as e:
        raise _syntax_error(e, text, start) from None
    except VisitError as e:  # pragma: no cover - no callbacks run while parsing
        raise QueryError(str(e.orig_exc)) from None
    except RecursionError:
        raise QueryError("the query is nested too deeply") from None


def _display(terminal: str) -> str:
    if terminal in _DISPLAY:
        return _DISPLAY[terminal]
    try:
        pattern = _parser().get_terminal(terminal).pattern
    except KeyError:  # pragma: no cover - every terminal is known
        return terminal.lower()
    if isinstance(pattern, PatternStr):
        return repr(pattern.value)
    return terminal.lower()  # pragma: no cover - every regex terminal is in _DISPLAY


def _expected_list(names: set[str] | frozenset[str] | list[str]) -> tuple[str, ...]:
    return tuple(sorted({_display(n) for n in names if n not in ("COMMENT",)}))


def _join(items: tuple[str, ...]) -> str:
    if not items:
        return "nothing more"
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " or " + items[-1]


def _accepts_at(text: str, pos: int, start: str) -> set[str] | None:
    """The terminals the parser takes after ``text[:pos]`` (exact, unlike the lexer's
    view of a merged LALR state), or None if the prefix does not parse that far."""
    try:
        interactive = _parser().parse_interactive(text[:pos], start=start)
        interactive.exhaust_lexer()
        return set(interactive.accepts())  # type: ignore[no-untyped-call]
    except (UnexpectedInput, RecursionError):
        return None


def _syntax_error(e: UnexpectedInput, text: str, start: str) -> QueryError:
    line = e.line if isinstance(e.line, int) and e.line > 0 else 1
    column = e.column if isinstance(e.column, int) and e.column > 0 else 1
    if isinstance(e, UnexpectedToken):
        token = e.token
        expected = _expected_list(set(e.accepts or e.expected))
        if token.type == "$END":
            got = "the end of the query"
            line, column = _end_position(text)
        else:
            got = repr(str(token))
        return QueryError(
            f"expected {_join(expected)}, got {got}", position=(line, column), expected=expected
        )
    if isinstance(e, UnexpectedCharacters):
        at = e.pos_in_stream if isinstance(e.pos_in_stream, int) else 0
        accepts = _accepts_at(text, at, start)
        expected = _expected_list(accepts if accepts is not None else set(e.allowed or ()))
        char = text[at] if 0 <= at < len(text) else ""
        hint = " (a string without its closing quote?)" if char in "'\"" else ""
        return QueryError(
            f"expected {_join(expected)}, got {char!r}{hint}",
            position=(line, column),
            expected=expected,
        )
    line, column = _end_position(text)  # UnexpectedEOF (not raised by LALR)
    return QueryError("unexpected end of the query", position=(line, column))


def _end_position(text: str) -> Pos:
    """The position just after the last non-blank character."""
    body = text.rstrip()
    line = body.count("\n") + 1
    column = len(body) - (body.rfind("\n") + 1) + 1
    return (line, column)


def _pos(node: Tree[Token] | Token) -> Pos:
    if isinstance(node, Token):
        return (node.line or 1, node.column or 1)
    meta = node.meta
    if meta.empty:  # pragma: no cover - every rule here has tokens
        return (1, 1)
    return (meta.line, meta.column)


def _tokens(node: Tree[Token]) -> list[Token]:
    return [c for c in node.children if isinstance(c, Token)]


def _trees(node: Tree[Token]) -> list[Tree[Token]]:
    return [c for c in node.children if isinstance(c, Tree)]


def _string(token: Token) -> str:
    return str(token)[1:-1]


def _whole(token: Token, what: str, *, minus: bool = False) -> int:
    """A whole number (``12``, ``12L``): a fraction, an exponent or ``f``/``d`` refused."""
    text = str(token)
    digits = text[:-1] if text[-1] in "lL" else text
    if not digits.isdigit():
        raise QueryError(f"{what} must be a whole number, got {text!r}", position=_pos(token))
    return -int(digits) if minus else int(digits)


def _number(token: Token, minus: bool) -> int | float:
    text = str(token)
    suffix = text[-1].lower() if text[-1].isalpha() and text[-1] not in "eE" else ""
    body = text[:-1] if suffix else text
    if body.isdigit() and suffix in ("", "l"):
        return -int(body) if minus else int(body)
    if suffix == "l":
        raise QueryError(f"a long literal is a whole number, got {text!r}", position=_pos(token))
    number = float(body)
    return -number if minus else number


class _Builder:
    """lark tree -> ``walrep.query.ast`` (iterative over the clauses; recursion only over
    nested conditions, bounded by ``MAX_DEPTH``)."""

    def query(self, tree: Tree[Token]) -> Query:
        clauses = {c.data: c for c in _trees(tree)}
        source_token = _tokens(clauses["from_clause"])[0]
        on = clauses.get("on_clause")
        having = clauses.get("having_clause")
        group = clauses.get("group_clause")
        order = clauses.get("order_clause")
        limit = clauses.get("limit_clause")
        offset = clauses.get("offset_clause")
        per_token = _tokens(clauses["per_clause"])[0]
        return Query(
            source=Name(str(source_token), _pos(source_token)),
            on=self.expr(on.children[0], 0) if on else None,
            within=self.within(clauses["within_clause"]),
            per=Per(_string(per_token), _pos(per_token)),
            select=tuple(self.select_item(t) for t in _trees(clauses["select_clause"])),
            group_by=tuple(Name(str(t), _pos(t)) for t in _tokens(group)) if group else (),
            having=self.expr(having.children[0], 0) if having else None,
            order_by=tuple(self.order_item(t) for t in _trees(order)) if order else (),
            limit=_whole(_tokens(limit)[0], "limit") if limit else None,
            offset=_whole(_tokens(offset)[0], "offset") if offset else None,
        )

    def within(self, tree: Tree[Token]) -> Within:
        pos = _pos(tree)
        values = tree.children
        if len(values) == 1:
            value = values[0]
            if not isinstance(value, Token):
                raise QueryError(
                    "within needs two times (start, end) or one pattern such as "
                    "'2026-11-** **:**:**'",
                    position=_pos(value),
                )
            found = timespec.span(_string(value), _pos(value))
            return Within(found.start_ms, found.end_ms, True, pos)
        start, end = (self.time(v) for v in values)
        if start > end:
            raise QueryError(
                f"within: the start {start} is after the end {end}", position=_pos(values[1])
            )
        return Within(start, end, False, pos)

    def time(self, node: Tree[Token] | Token) -> int:
        if isinstance(node, Token):  # a string
            return timespec.instant(_string(node), _pos(node))
        tokens = _tokens(node)
        return _whole(tokens[-1], "an epoch-ms time", minus=len(tokens) == 2)

    def select_item(self, tree: Tree[Token]) -> SelectItem:
        value = self.value(tree.children[0])
        alias = str(tree.children[1]) if len(tree.children) > 1 else None
        return SelectItem(value, alias, _pos(tree))

    def order_item(self, tree: Tree[Token]) -> OrderItem:
        value = self.value(tree.children[0])
        direction = tree.children[1] if len(tree.children) > 1 else None
        descending = isinstance(direction, Token) and direction.type == "DESC"
        return OrderItem(value, descending, _pos(tree))

    def value(self, node: Tree[Token] | Token) -> Value:
        if isinstance(node, Token):  # pragma: no cover - NAME is wrapped by 'attribute'
            return Name(str(node), _pos(node))
        tokens = _tokens(node)
        if node.data == "attribute":
            return Name(str(tokens[0]), _pos(tokens[0]))
        fn = str(tokens[0]).lower()
        if fn not in FUNCTIONS:
            raise QueryError(
                f"unknown function {str(tokens[0])!r} (the functions are {', '.join(FUNCTIONS)})",
                position=_pos(tokens[0]),
            )
        arg = Name(str(tokens[1]), _pos(tokens[1])) if len(tokens) > 1 else None
        if arg is None and fn != "count":
            raise QueryError(f"{fn}() needs an attribute: {fn}(x)", position=_pos(tokens[0]))
        return Call(fn, arg, _pos(node))

    def expr(self, node: Tree[Token] | Token, depth: int) -> Expr:
        if depth > MAX_DEPTH:
            raise QueryError(
                f"the condition is nested more than {MAX_DEPTH} levels deep", position=_pos(node)
            )
        if isinstance(node, Token):  # pragma: no cover - tokens come wrapped in rules
            raise QueryError(f"unexpected {str(node)!r}", position=_pos(node))
        kind = node.data
        if kind in ("attribute", "call"):
            return self.value(node)
        if kind == "literal":
            return self.literal(node)
        if kind == "negation":
            return Not(self.expr(node.children[0], depth + 1), _pos(node))
        if kind == "comparison":
            left, op, right = node.children
            assert isinstance(op, Token)
            return Compare(
                cast(CompareOp, str(op)),
                self.expr(left, depth + 1),
                self.expr(right, depth + 1),
                _pos(op),
            )
        if kind in ("and_expr", "or_expr"):
            operands = tuple(self.expr(c, depth + 1) for c in node.children)
            return And(operands, _pos(node)) if kind == "and_expr" else Or(operands, _pos(node))
        raise QueryError(f"unexpected {kind}", position=_pos(node))  # pragma: no cover

    def literal(self, node: Tree[Token]) -> Literal:
        child = node.children[0]
        if isinstance(child, Tree):  # number
            tokens = _tokens(child)
            return Literal(_number(tokens[-1], len(tokens) == 2), _pos(child))
        if child.type == "STRING":
            return Literal(_string(child), _pos(child))
        return Literal(child.type == "TRUE", _pos(child))
