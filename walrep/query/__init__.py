"""The Store Query API: Siddhi's on-demand aggregation queries over the engine's state.

``parse(text) -> Query`` (``walrep.query.grammar``), ``query_from_json(obj) -> Query``
(the structured form, ``walrep.query.json_form``), ``run_query(engine, apps, app_name,
query) -> records`` (``walrep.query.evaluate``); every client fault is a ``QueryError``.
The HTTP endpoint is ``walrep.node.query_http``; docs/query.md has the reference.
"""

from walrep.query.ast import Query
from walrep.query.errors import QueryError, TooManyRecordsError, UnknownAppError
from walrep.query.evaluate import PreparedQuery, prepare, run_query
from walrep.query.grammar import parse
from walrep.query.json_form import query_from_json

__all__ = [
    "PreparedQuery",
    "Query",
    "QueryError",
    "TooManyRecordsError",
    "UnknownAppError",
    "parse",
    "prepare",
    "query_from_json",
    "run_query",
]
