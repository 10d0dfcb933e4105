"""The Store Query API on the active: ``POST /stores/query`` (docs/query.md).

Request: ``{"appName": str, "query": str}`` (or ``"query"``: the structured JSON form,
``walrep.query.json_form``). Answer: 200 ``{"records": [[...], ...]}``, each record in
select order, from the engine's state (which only ever holds committed records: the
engine applies nothing else).

Errors are ``{"error": code, "message": ...}``:

* 400 ``malformed_json`` / ``malformed_request`` / ``unknown_field``: the body is not
  the object above;
* 400 ``invalid_query`` with ``line``, ``column`` (1-based, in the query text), and for
  a syntax error ``expected`` (what the grammar takes there); ``field`` for the
  structured form;
* 400 ``too_many_records``: the answer is over ``max_records`` (add a ``limit``);
* 404 ``unknown_app``: no app of that name on this node;
* 413 ``request_too_large``: the body is over ``max_request_bytes`` (1 MiB);
* 503 ``not_active`` / ``not_ready`` with ``Retry-After: 1``: this node is not the
  active, or its engine is not open yet. A passive's engine is a warm standby that may
  lag: queries go to the active.

A client fault is never a 5xx. The rows are read on the event loop (the engine's
thread); an answer over many rows is computed in a worker thread from them (they are
immutable), so a large query does not stall the loop for long.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import orjson
from aiohttp import web

from walrep.engine.app import App
from walrep.node.http_common import Refusal, json_response, read_body
from walrep.node.role import Role
from walrep.query import (
    Query,
    QueryError,
    TooManyRecordsError,
    UnknownAppError,
    parse,
    prepare,
    query_from_json,
)

if TYPE_CHECKING:
    from walrep.node.runtime import Node

log = logging.getLogger("walrep.query")

MAX_REQUEST_BYTES: Final = 1024 * 1024
MAX_RECORDS: Final = 100_000
THREAD_ROWS: Final = 20_000  # rows beyond which the answer is computed off the loop
BODY_KEYS: Final = frozenset({"appName", "query"})


def _invalid(error: QueryError) -> Refusal:
    extra: dict[str, Any] = {"line": error.line, "column": error.column}
    if error.expected:
        extra["expected"] = list(error.expected)
    if error.field is not None:
        extra["field"] = error.field
    return Refusal(400, "invalid_query", str(error), **extra)


class QueryApi:
    """``POST /stores/query`` for one node (see the module docstring)."""

    def __init__(
        self,
        node: Node,
        apps: Sequence[App],
        *,
        max_records: int = MAX_RECORDS,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        thread_rows: int = THREAD_ROWS,
    ) -> None:
        if max_records < 1 or max_request_bytes < 1:
            raise ValueError("max_records and max_request_bytes must be >= 1")
        self.node = node
        self.apps = list(apps)
        self.max_records = max_records
        self.max_request_bytes = max_request_bytes
        self.thread_rows = thread_rows

    def app(self) -> web.Application:
        server = web.Application(client_max_size=self.max_request_bytes)
        server.router.add_post("/stores/query", self.post_query)
        return server

    async def post_query(self, request: web.Request) -> web.Response:
        try:
            app_name, query = await self._request(request)
            return json_response({"records": await self._answer(app_name, query)})
        except Refusal as refusal:
            return refusal.response()

    async def _request(self, request: web.Request) -> tuple[str, Query]:
        """The app and the parsed query, or the client's fault (before any state)."""
        raw = await read_body(request, self.max_request_bytes)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise Refusal(400, "malformed_json", f"the body is not JSON: {e}") from None
        if not isinstance(body, dict):
            raise Refusal(400, "malformed_request", 'the body is {"appName": ..., "query": ...}')
        extra = sorted(set(body) - BODY_KEYS)
        if extra:
            raise Refusal(400, "unknown_field", f"unknown fields {extra} (appName, query)")
        app_name, text = body.get("appName"), body.get("query")
        if not isinstance(app_name, str):
            raise Refusal(400, "malformed_request", "appName must be a string")
        if not isinstance(text, str | dict):
            raise Refusal(400, "malformed_request", "query must be a string (or a JSON object)")
        if app_name not in {a.name for a in self.apps}:
            known = sorted(a.name for a in self.apps)
            raise Refusal(404, "unknown_app", f"no app {app_name!r} here (the apps: {known})")
        try:
            return app_name, parse(text) if isinstance(text, str) else query_from_json(text)
        except QueryError as e:
            raise _invalid(e) from None

    async def _answer(self, app_name: str, query: Query) -> list[list[Any]]:
        node = self.node
        if node.role is not Role.ACTIVE:
            raise Refusal(
                503,
                "not_active",
                f"node {node.settings.node_id} is {node.role.value}: ask the active",
            )
        host = node.engine_host
        engine = host.engine if host is not None else None
        if engine is None:
            raise Refusal(503, "not_ready", "the engine is not open yet")
        try:
            prepared = prepare(engine, self.apps, app_name, query)
            rows = prepared.fetch()  # on the loop: the engine's thread
            if len(rows) > self.thread_rows:
                return await asyncio.to_thread(
                    prepared.evaluate, rows, max_records=self.max_records
                )
            return prepared.evaluate(rows, max_records=self.max_records)
        except UnknownAppError as e:
            raise Refusal(404, "unknown_app", str(e)) from None
        except TooManyRecordsError as e:
            raise Refusal(400, "too_many_records", e.reason, max_records=self.max_records) from None
        except QueryError as e:
            raise _invalid(e) from None
