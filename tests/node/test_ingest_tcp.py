"""Binary TCP ingest over real sockets: hello, pipelined requests answered by id once
committed in the order sent, a producer's pipelined requests appended in order, and bad
input closing only its own connection (nothing appended)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from tests.node.test_ingest_http import TOKEN, Pair, order, pair
from walrep.node.ingest_http import IngestApi
from walrep.node.ingest_tcp import MAGIC, TcpIngest

__all__ = ["pair"]

HEAD = struct.Struct("<II")


@pytest.fixture
async def tcp(pair: Pair) -> AsyncIterator[tuple[str, int]]:
    api = IngestApi(
        pair.a, [*pair.a.engine_host.apps], token=TOKEN,  # type: ignore[union-attr]
        max_request_bytes=64 * 1024, max_events_per_request=100,
    )  # fmt: skip
    server = TcpIngest(api, "a", max_in_flight=4)
    url = await server.start("127.0.0.1", 0)
    host, port = url.removeprefix("tcp://").rsplit(":", 1)
    try:
        yield host, int(port)
    finally:
        await server.close()


WRITERS: list[asyncio.StreamWriter] = []


@pytest.fixture(autouse=True)
async def _close_writers() -> AsyncIterator[None]:
    yield
    while WRITERS:
        writer = WRITERS.pop()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def open_connection(address: tuple[str, int]) -> Any:
    reader, writer = await asyncio.open_connection(*address)
    WRITERS.append(writer)
    return reader, writer


async def connect(address: tuple[str, int], token: str = TOKEN) -> Any:
    reader, writer = await open_connection(address)
    secret = token.encode()
    writer.write(MAGIC + struct.pack("<H", len(secret)) + secret)
    return reader, writer, await read_answer(reader)


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
    length, request_id = HEAD.unpack(await reader.readexactly(HEAD.size))
    return request_id, orjson.loads(await reader.readexactly(length - 4))


def request(request_id: int, events: Any) -> bytes:
    payload = orjson.dumps(events)
    return HEAD.pack(len(payload) + 4, request_id) + payload


async def test_pipelined_requests_are_answered_by_id_in_the_order_sent(
    pair: Pair, tcp: tuple[str, int]
) -> None:
    reader, writer, hello = await connect(tcp)
    assert hello == (0, {"ok": True, "node": "a"})
    for r in range(1, 11):  # more than max_in_flight (4): the node reads as room frees up
        writer.write(
            request(r, [order(r * 3 + k, producer_id="gw", seq=r * 3 + k) for k in (0, 1, 2)])
        )
    answers = dict([await read_answer(reader) for _ in range(10)])
    assert sorted(answers) == list(range(1, 11))
    offsets = [answers[r]["offsets"] for r in range(1, 11)]
    assert offsets == [[3 * i, 3 * i + 1, 3 * i + 2] for i in range(10)]  # appended in order
    writer.write(request(11, [order(3, producer_id="gw", seq=3)]))  # a retry
    assert await read_answer(reader) == (11, {"offsets": [0]})
    writer.close()
    assert pair.a.log.log_end == 30


async def test_a_refused_request_is_answered_and_the_connection_goes_on(
    pair: Pair, tcp: tuple[str, int]
) -> None:
    reader, writer, _ = await connect(tcp)
    writer.write(request(1, [{"stream": "Nope", "attributes": {}}]))
    request_id, doc = await read_answer(reader)
    assert (request_id, doc["error"], doc["status"], doc["index"]) == (1, "unknown_stream", 400, 0)
    writer.write(request(2, [order(0)]))
    assert await read_answer(reader) == (2, {"offsets": [0]})
    writer.close()


@pytest.mark.parametrize(
    ("garbage", "code"),
    [
        (HEAD.pack(5, 1) + b"[{]", "malformed_json"),  # 1 byte of the 4-byte-id frame + junk
        (HEAD.pack(1 << 30, 1), "bad_length"),
        (request(1, {"not": "an array"}), "malformed_json"),
    ],
)
async def test_garbage_closes_only_its_connection_and_appends_nothing(
    pair: Pair, tcp: tuple[str, int], garbage: bytes, code: str
) -> None:
    other_reader, other_writer, _ = await connect(tcp)
    reader, writer, _ = await connect(tcp)
    writer.write(garbage)
    _, doc = await read_answer(reader)
    assert doc["error"] == code
    assert await reader.read() == b""  # closed by the node
    other_writer.write(request(7, [order(0)]))  # the healthy connection is served
    assert await read_answer(other_reader) == (7, {"offsets": [0]})
    other_writer.close()
    assert pair.a.log.log_end == 1


@pytest.mark.parametrize(("token", "code"), [("", "unauthorized"), ("wrong", "forbidden")])
async def test_a_bad_token_or_magic_is_refused_at_hello(
    tcp: tuple[str, int], token: str, code: str
) -> None:
    reader, _, (request_id, doc) = await connect(tcp, token)
    assert (request_id, doc["error"]) == (0, code)
    assert await reader.read() == b""
    reader, writer = await open_connection(tcp)
    writer.write(b"HTTP/1.1 GET /\r\n\r\n")
    _, doc = await read_answer(reader)
    assert doc["error"] == "bad_magic"
