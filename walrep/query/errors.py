"""Errors of the Store Query API (``walrep.query``).

``QueryError`` is every fault of a query the client can fix: a syntax error (with the
position and what the grammar expected there), a query outside the supported subset,
an unknown aggregation, attribute or duration, a type error (an aggregate over a
non-numeric column, a comparison of a string with a number). It always names a
position (``line``, ``column``, 1-based) in the query text, or in the fragment named by
``field`` for the structured JSON form.
"""

from __future__ import annotations

from collections.abc import Sequence

from walrep.errors import WalrepError


class QueryError(WalrepError):
    """A query that cannot be answered as written (the client's fault; not retriable).

    ``reason`` is the message without the position; ``str(error)`` is
    ``"line L, column C: <reason>"``. ``expected`` lists what the grammar accepted at the
    position of a syntax error (empty for other errors). ``field`` names the part of a
    structured (JSON) query the position refers to, else None.
    """

    retriable = False

    def __init__(
        self,
        reason: str,
        *,
        position: tuple[int, int] | None = None,
        expected: Sequence[str] = (),
        field: str | None = None,
    ) -> None:
        self.reason = reason
        self.position = position if position is not None else (1, 1)
        self.expected = tuple(expected)
        self.field = field
        where = f"line {self.position[0]}, column {self.position[1]}"
        if field is not None:
            where = f"{field}: {where}"
        super().__init__(f"{where}: {reason}")

    @property
    def line(self) -> int:
        return self.position[0]

    @property
    def column(self) -> int:
        return self.position[1]

    def in_field(self, field: str) -> QueryError:
        """The same error, located in ``field`` of a structured query."""
        return type(self)(self.reason, position=self.position, expected=self.expected, field=field)


class UnknownAppError(QueryError):
    """The query names an app this node does not run (HTTP 404 ``unknown_app``)."""


class TooManyRecordsError(QueryError):
    """The answer would hold more records than allowed (HTTP 400 ``too_many_records``)."""
