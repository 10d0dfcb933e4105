"""``POST /stores/query`` over real HTTP on a real active/passive pair (SQLite in tmp_path):
answers from the active's committed state, 503 on the passive, every client fault a 4xx."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.node.servers import Served, serve, shop_node
from tests.node.test_engine_host import host, orders, shop_app, straight
from walrep.node.query_http import QueryApi
from walrep.node.role import Role
from walrep.node.runtime import Node
from walrep.query import run_query

APP = "shop"
EVERYTHING = "within 0L, 9999999999999L"
BY_SHOP = (
    f"from OrdersPerShop {EVERYTHING} per 'days' select shop, sum(orders) as n, "
    "sum(revenue) as revenue group by shop order by n desc, shop"
)


node = shop_node


async def serve_query(n: Node, **options: int) -> Served:
    return await serve(QueryApi(n, [shop_app()], **options).app(), "/stores/query")


@dataclass
class Pair:
    a: Node
    b: Node
    active: Served
    passive: Served
    http: aiohttp.ClientSession

    async def post(
        self, body: Any, *, url: str | None = None
    ) -> tuple[int, dict[str, Any], Mapping[str, str]]:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        payload = io.BytesIO(data) if len(data) > 64 * 1024 else data  # aiohttp: large as a file
        async with self.http.post(url or self.active.url, data=payload) as response:
            return response.status, await response.json(), response.headers

    async def query(self, query: Any, *, app: str = APP, url: str | None = None) -> Any:
        return await self.post({"appName": app, "query": query}, url=url)


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    a, b = node(tmp_path, "a"), node(tmp_path, "b")
    await a.start()
    await a.wait_until(lambda n: n.role is Role.ACTIVE, 5)
    await b.start()
    active, passive = await serve_query(a, max_records=50), await serve_query(b)
    async with aiohttp.ClientSession() as http:
        try:
            yield Pair(a, b, active, passive, http)
        finally:
            for served in (active, passive):
                await served.runner.cleanup()
            for n in (a, b):
                await n.stop()


async def fill(pair: Pair, n: int) -> None:
    for at in range(0, n, 50):
        await pair.a.append(orders(at, 50))
    await pair.a.wait_until(lambda x: host(x).engine_.applied == n, 5)


async def test_the_active_answers_from_its_committed_state(pair: Pair) -> None:
    status, body, _ = await pair.query(BY_SHOP)
    assert (status, body) == (200, {"records": []})  # nothing appended yet
    await fill(pair, 200)
    status, body, headers = await pair.query(BY_SHOP)
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    expected = run_query(straight(200), [shop_app()], APP, BY_SHOP)
    assert body == {"records": expected}
    assert sum(r[1] for r in expected) == 200 and len(expected) == 7
    # per seconds, with on / having / limit, and the structured form
    seconds = (
        f"from OrdersPerShop on shop != 's0' {EVERYTHING} per 'seconds' select AGG_TIMESTAMP, "
        "shop, orders order by AGG_TIMESTAMP desc limit 5;"
    )
    status, body, _ = await pair.query(seconds)
    assert (status, body) == (
        200,
        {"records": run_query(straight(200), [shop_app()], APP, seconds)},
    )
    assert len(body["records"]) == 5
    structured = {
        "from": "OrdersPerShop",
        "within": [0, 9999999999999],
        "per": "days",
        "select": ["shop", "sum(orders) as n", "sum(revenue) as revenue"],
        "group_by": ["shop"],
        "order_by": ["n desc", "shop"],
    }
    assert (await pair.query(structured))[:2] == (200, {"records": expected})
    # an answer over many rows is computed in a worker thread: the same records
    threaded = await serve_query(pair.a, thread_rows=0)
    try:
        assert (await pair.query(BY_SHOP, url=threaded.url))[:2] == (200, {"records": expected})
    finally:
        await threaded.runner.cleanup()


async def test_the_passive_refuses_with_503_and_retry_after(pair: Pair) -> None:
    await fill(pair, 50)
    await pair.b.wait_until(lambda n: host(n).engine_.applied == 50, 5)
    status, body, headers = await pair.query(BY_SHOP, url=pair.passive.url)
    assert (status, body["error"]) == (503, "not_active")
    assert headers["Retry-After"] == "1"
    assert "PASSIVE" in body["message"]


async def test_a_node_without_an_engine_is_not_ready(tmp_path: Path) -> None:
    lone = node(tmp_path, "lone", engine=False)
    await lone.start()
    served = await serve_query(lone)
    try:
        await lone.wait_until(lambda n: n.role is Role.ACTIVE, 5)
        async with aiohttp.ClientSession() as http:
            body = orjson.dumps({"appName": APP, "query": BY_SHOP})
            async with http.post(served.url, data=body) as response:
                assert response.status == 503
                assert response.headers["Retry-After"] == "1"
                assert (await response.json())["error"] == "not_ready"
    finally:
        await served.runner.cleanup()
        await lone.stop()


async def test_invalid_queries_are_400_with_line_column_and_expected(pair: Pair) -> None:
    status, body, _ = await pair.query("from OrdersPerShop per 'days' select shop")
    assert status == 400
    assert body == {
        "error": "invalid_query",
        "message": "line 1, column 20: expected 'on' or 'within', got 'per'",
        "line": 1,
        "column": 20,
        "expected": ["'on'", "'within'"],
    }
    status, body, _ = await pair.query(f"from OrdersPerShop {EVERYTHING} per 'days'\nselect shp")
    assert (status, body["error"], body["line"], body["column"]) == (400, "invalid_query", 2, 8)
    assert "unknown attribute 'shp'" in body["message"] and "did you mean 'shop'" in body["message"]
    assert "expected" not in body
    status, body, _ = await pair.query(
        {"from": "OrdersPerShop", "within": [0, 1], "per": "days", "select": ["sum(shop"]}
    )
    assert (status, body["error"], body["field"], body["column"]) == (
        400,
        "invalid_query",
        "select",
        9,
    )


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "malformed_json"),
        (b"", 400, "malformed_json"),
        ([APP, BY_SHOP], 400, "malformed_request"),
        ({"query": BY_SHOP}, 400, "malformed_request"),
        ({"appName": APP}, 400, "malformed_request"),
        ({"appName": 3, "query": BY_SHOP}, 400, "malformed_request"),
        ({"appName": APP, "query": 7}, 400, "malformed_request"),
        ({"appName": APP, "query": BY_SHOP, "limit": 3}, 400, "unknown_field"),
        ({"appName": "nope", "query": BY_SHOP}, 404, "unknown_app"),
        ({"appName": "nope", "query": "garbage"}, 404, "unknown_app"),  # the app first
        (
            {"appName": APP, "query": "from Nope within 0, 1 per 'days' select x"},
            400,
            "invalid_query",
        ),
        ({"appName": APP, "query": {"from": "OrdersPerShop"}}, 400, "invalid_query"),
        (
            {"appName": APP, "query": f"from OrdersPerShop {EVERYTHING} per 'seconds' select shop"},
            400,
            "too_many_records",
        ),
        ({"appName": APP, "query": "x" * (1024 * 1024)}, 413, "request_too_large"),
    ],
)
async def test_client_faults_are_4xx(pair: Pair, body: Any, status: int, code: str) -> None:
    await fill(pair, 100)  # 100 seconds, one row each: over max_records=50
    got_status, got, _ = await pair.post(body)
    assert (got_status, got["error"]) == (status, code), got
    assert got["message"]
    if code == "too_many_records":
        assert "limit" in got["message"] and got["max_records"] == 50
        ok = body["query"] + " limit 50"
        assert (await pair.query(ok))[0] == 200
