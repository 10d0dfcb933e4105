"""HTTP ingest (``POST /events``) on real nodes over real HTTP: answers after commit with
offsets, every bad request refused with its 4xx and nothing appended, idempotent
producers answered with their original offsets, also by the new active after a failover."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.node.servers import Served, serve, shop_node
from tests.node.test_engine_host import host, orders, shop_app
from walrep.node.ingest_http import IngestApi
from walrep.node.role import Role
from walrep.node.runtime import Node

TOKEN = "ingest-t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {**AUTH, "Content-Type": "application/json"}


node = shop_node


async def serve_ingest(n: Node, **limits: int) -> Served:
    api = IngestApi(
        n,
        [shop_app()],
        token=TOKEN,
        max_request_bytes=limits.get("max_request_bytes", 64 * 1024),
        max_events_per_request=limits.get("max_events_per_request", 100),
    )
    return await serve(api.app(), "/events")


@dataclass
class Pair:
    a: Node
    b: Node
    ingest: Served
    http: aiohttp.ClientSession

    async def post(
        self, body: Any, *, headers: dict[str, str] | None = None, url: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        async with self.http.post(
            url or self.ingest.url, data=data, headers=AUTH if headers is None else headers
        ) as response:
            return response.status, await response.json()


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    a, b = node(tmp_path, "a"), node(tmp_path, "b")
    await a.start()
    await a.wait_until(lambda n: n.role is Role.ACTIVE, 5)
    await b.start()
    served = await serve_ingest(a)
    async with aiohttp.ClientSession() as http:
        try:
            yield Pair(a, b, served, http)
        finally:
            await served.runner.cleanup()
            for n in (a, b):
                await n.stop()


def order(i: int, **extra: Any) -> dict[str, Any]:
    event = orders(i, 1)[0]
    return {"stream": event.stream, "attributes": event.attributes, **extra}


async def test_events_are_answered_after_commit_with_their_offsets(pair: Pair) -> None:
    status, body = await pair.post([order(0), order(1), order(2)])
    assert (status, body) == (200, {"offsets": [0, 1, 2]})
    assert pair.a.committed == 3  # answered only once committed
    ndjson = b"\n".join(orjson.dumps(order(i)) for i in (3, 4)) + b"\n"
    headers = {**AUTH, "Content-Type": "application/x-ndjson"}
    assert await pair.post(ndjson, headers=headers) == (200, {"offsets": [3, 4]})
    await pair.b.wait_until(lambda n: host(n).engine_.applied == 5, 5)  # and replicated


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        ([order(0)], {}, 401, "unauthorized"),
        ([order(0)], {"Authorization": "Bearer wrong"}, 403, "forbidden"),
        (b"[{not json", None, 400, "malformed_json"),
        ({"stream": "Order"}, JSON, 400, "malformed_json"),  # JSON, but not an array
        ([], None, 400, "no_events"),
        ([order(0), 7], None, 400, "not_an_event"),
        ([order(0), {"stream": "Nope", "attributes": {}}], None, 400, "unknown_stream"),
        ([order(0, colour="red")], None, 400, "unknown_field"),
        (
            [{"stream": "Order", "attributes": {"shop": "s", "amount": "12", "ts": 1}}],
            None,
            400,
            "invalid_event",
        ),
        ([{"stream": "Order", "attributes": {"shop": "s", "ts": 1}}], None, 400, "invalid_event"),
        ([order(0, producer_id="p")], None, 400, "invalid_event"),  # seq missing
        ([order(i) for i in range(101)], None, 413, "too_many_events"),
        (
            [order(0, pad="x")] * 0
            + [{"stream": "Order", "attributes": {"shop": "s" * 70_000, "amount": 1, "ts": 1}}],
            None,
            413,
            "request_too_large",
        ),
    ],
)
async def test_bad_requests_get_their_4xx_and_append_nothing(
    pair: Pair, body: Any, headers: dict[str, str] | None, status: int, code: str
) -> None:
    got_status, got = await pair.post(body, headers=headers)
    assert (got_status, got["error"]) == (status, code), got
    assert got["message"]
    assert pair.a.log.log_end == 0
    if code in ("not_an_event", "unknown_stream"):
        assert got["index"] == 1  # the event at fault is named
    if code == "invalid_event":  # the message names stream and attribute (or the rule)
        assert "stream Order" in got["message"]
        assert any(word in got["message"] for word in ("amount", "producer_id")), got


async def test_a_retried_producer_batch_gets_its_original_offsets(pair: Pair) -> None:
    batch = [order(i, producer_id="gw-1", seq=i) for i in range(3)]
    assert await pair.post(batch) == (200, {"offsets": [0, 1, 2]})
    assert await pair.post(batch) == (200, {"offsets": [0, 1, 2]})  # nothing appended again
    assert pair.a.log.log_end == 3
    mixed = [order(2, producer_id="gw-1", seq=2), order(3, producer_id="gw-1", seq=3)]
    assert await pair.post(mixed) == (200, {"offsets": [2, 3]})  # one old, one new
    status, body = await pair.post([order(9, producer_id="gw-1", seq=9)])
    assert (status, body["error"]) == (409, "out_of_order_sequence")
    assert "expected 4" in body["message"] and pair.a.log.log_end == 4


async def test_after_a_failover_the_new_active_answers_retries_with_the_original_offsets(
    pair: Pair,
) -> None:
    batch = [order(i, producer_id="gw-1", seq=i) for i in range(3)]
    assert await pair.post(batch) == (200, {"offsets": [0, 1, 2]})
    await pair.b.wait_until(lambda n: host(n).engine_.applied == 3, 5)
    passive_ingest = await serve_ingest(pair.b)
    try:  # the passive refuses: it is not the active
        status, body = await pair.post(batch, url=passive_ingest.url)
        assert (status, body["error"]) == (503, "not_active")
        await pair.a.stop()
        await pair.b.wait_until(lambda n: n.role is Role.ACTIVE, 5)
        assert await pair.post(batch, url=passive_ingest.url) == (200, {"offsets": [0, 1, 2]})
        assert pair.b.log.log_end == 3
        again = [order(3, producer_id="gw-1", seq=3)]
        assert await pair.post(again, url=passive_ingest.url) == (200, {"offsets": [3]})
    finally:
        await passive_ingest.runner.cleanup()
