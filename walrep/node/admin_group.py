"""The admin API's view of the whole HA group, read from the coordination store.

* ``GET /cluster``: ``walrep.replica.group_view.group_document``: the lease (holder,
  epoch, expiry on the database's clock, maintenance flag), every node's published row
  and the in-sync standbys; the same document on every node of the group.
* ``GET /history?limit=N``: lease changes, newest first (``history_document``);
  ``limit`` 1..1000, default 100; another value is a 400 naming it.

Both read the database, so a database outage is a 503 ``store_unavailable`` naming the
failure (the node itself keeps running: the lease machine has its own retries).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from walrep.errors import CoordinationError
from walrep.node.runtime import Node
from walrep.replica.group_view import group_document, history_document

HISTORY_LIMIT_DEFAULT = 100
HISTORY_LIMIT_MAX = 1000
Reply = Callable[[int, Any], web.Response]
Handler = Callable[[web.Request], Awaitable[web.Response]]


def group_routes(node: Node, reply: Reply) -> list[tuple[str, Handler]]:
    """``(path, handler)`` of /cluster and /history; ``reply(status, body)`` answers JSON."""
    group = node.settings.group

    async def cluster(_: web.Request) -> web.Response:
        store = node.store
        try:
            lease = await store.read_lease(group)
            rows = await store.nodes(group)
            in_sync = await store.in_sync_nodes(group)
        except CoordinationError as e:
            return reply(503, {"error": "store_unavailable", "message": str(e)})
        return reply(200, group_document(group, lease, rows, in_sync))

    async def history(request: web.Request) -> web.Response:
        raw = request.query.get("limit", str(HISTORY_LIMIT_DEFAULT))
        try:
            limit = int(raw)
        except ValueError:
            limit = 0
        if not 1 <= limit <= HISTORY_LIMIT_MAX:
            message = f"limit must be an integer from 1 to {HISTORY_LIMIT_MAX}, got {raw!r}"
            return reply(400, {"error": "invalid_limit", "message": message})
        try:
            rows = await node.store.history(group, limit)
        except CoordinationError as e:
            return reply(503, {"error": "store_unavailable", "message": str(e)})
        return reply(200, {"group": group, "history": history_document(rows)})

    return [("/cluster", cluster), ("/history", history)]
