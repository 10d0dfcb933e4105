"""The typed syntax tree of a Store Query (what ``walrep.query.grammar.parse`` returns).

Every node carries ``pos``, the ``(line, column)`` (1-based) where it starts in the
query text, so that semantic errors name the place at fault. Names are kept as written
(attribute names are case-sensitive, as in Siddhi); function names are lower-cased.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal as Lit

Pos = tuple[int, int]
LiteralValue = str | int | float | bool
CompareOp = Lit["==", "!=", "<", ">", "<=", ">="]
FUNCTIONS = ("sum", "count", "min", "max", "avg")


@dataclass(frozen=True)
class Name:
    """An attribute (``apiName``, ``AGG_TIMESTAMP``) or, in ``having``/``order by``, a
    select item's output name."""

    name: str
    pos: Pos


@dataclass(frozen=True)
class Call:
    """``sum(x)``, ``count()``, ``count(x)``, ``min(x)``, ``max(x)``, ``avg(x)``."""

    fn: str
    arg: Name | None
    pos: Pos

    def text(self) -> str:
        return f"{self.fn}({self.arg.name if self.arg is not None else ''})"


@dataclass(frozen=True)
class Literal:
    value: LiteralValue
    pos: Pos


@dataclass(frozen=True)
class Compare:
    op: CompareOp
    left: Expr
    right: Expr
    pos: Pos


@dataclass(frozen=True)
class And:
    operands: tuple[Expr, ...]
    pos: Pos


@dataclass(frozen=True)
class Or:
    operands: tuple[Expr, ...]
    pos: Pos


@dataclass(frozen=True)
class Not:
    operand: Expr
    pos: Pos


Value = Name | Call
Expr = Name | Call | Literal | Compare | And | Or | Not


@dataclass(frozen=True)
class SelectItem:
    value: Value
    alias: str | None
    pos: Pos

    @property
    def output_name(self) -> str:
        """The alias, else the attribute's name, else the call as written (``sum(x)``)."""
        if self.alias is not None:
            return self.alias
        if isinstance(self.value, Name):
            return self.value.name
        return self.value.text()


@dataclass(frozen=True)
class OrderItem:
    value: Value
    descending: bool
    pos: Pos


@dataclass(frozen=True)
class Within:
    """Bucket starts in ``[start_ms, end_ms)``; ``pattern`` when one value gave both."""

    start_ms: int
    end_ms: int
    pattern: bool
    pos: Pos


@dataclass(frozen=True)
class Per:
    text: str  # as written, without quotes ('hours', "DAYS", ...)
    pos: Pos


@dataclass(frozen=True)
class Query:
    """``from <source> [on <on>] within ... per <per> select <select> [group by ...]
    [having ...] [order by ...] [limit n] [offset n]``."""

    source: Name
    on: Expr | None
    within: Within
    per: Per
    select: tuple[SelectItem, ...]
    group_by: tuple[Name, ...] = ()
    having: Expr | None = None
    order_by: tuple[OrderItem, ...] = ()
    limit: int | None = None
    offset: int | None = None
