"""The webhook sink against a real aiohttp server on 127.0.0.1: idempotency keys, retries of
503 and timeouts, 4xx refused, bounded retries, a bounded queue."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
import pytest
from aiohttp import web

from walrep.engine.sinks.base import Output, SinkBatch
from walrep.engine.sinks.webhook import WebhookSink
from walrep.errors import SinkError

FAST = {"backoff_initial_ms": 1, "backoff_max_ms": 5}


def out(offset: int, index: int) -> Output:
    return Output((offset, index), "apim", "Alerts", {"api": "pizza", "n": offset * 10 + index})


@dataclass
class Receiver:
    """The endpoint: records every attempt, answers as the test configures."""

    fail_first_with: int | None = None  # status of the first attempt of each key
    status: int = 200  # of every other attempt
    hang_first: bool = False  # the first attempt of each key never answers
    gate: asyncio.Event | None = None  # hold every request until set
    attempts: list[tuple[str, dict[str, object], dict[str, str]]] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    closing: asyncio.Event = field(default_factory=asyncio.Event)  # set by the fixture

    async def handle(self, request: web.Request) -> web.Response:
        key = request.headers["Idempotency-Key"]
        first = all(k != key for k, _, _ in self.attempts)
        self.attempts.append((key, orjson.loads(await request.read()), dict(request.headers)))
        self.arrived.set()
        if self.gate is not None:
            await self.gate.wait()
        if first and self.hang_first:
            await self.closing.wait()  # the client gives up first (its timeout)
        status = self.fail_first_with if first and self.fail_first_with else self.status
        if 200 <= status < 300:
            self.accepted.append(key)
        return web.Response(status=status, text=f"status {status}")

    def tries(self, key: str) -> int:
        return sum(1 for k, _, _ in self.attempts if k == key)


@pytest.fixture
async def server() -> AsyncIterator[tuple[Receiver, str]]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield receiver, f"http://127.0.0.1:{port}/hook"
    receiver.closing.set()
    if receiver.gate is not None:
        receiver.gate.set()
    await runner.cleanup()


async def started(url: str, **kwargs: object) -> WebhookSink:
    sink = WebhookSink(url, **{**FAST, **kwargs})  # type: ignore[arg-type]
    await sink.setup([])
    return sink


async def test_a_503_is_retried_and_every_post_carries_its_idempotency_key(
    server: tuple[Receiver, str],
) -> None:
    receiver, url = server
    receiver.fail_first_with = 503
    sink = await started(url, headers={"Authorization": "Bearer s3cret"})
    await sink.write(SinkBatch(7, 3, outputs=[out(1, 0), out(1, 1)]))
    await sink.write(SinkBatch(7, 5, outputs=[out(4, 0)]))
    await sink.flush()
    assert await sink.applied_offset() == 5
    assert receiver.accepted == ["1-0", "1-1", "4-0"]
    assert [receiver.tries(k) for k in receiver.accepted] == [2, 2, 2]
    for key, body, headers in receiver.attempts:
        offset, index = (int(p) for p in key.split("-"))
        assert body == out(offset, index).to_json_obj()
        assert headers["X-Walrep-Epoch"] == "7"
        assert headers["Authorization"] == "Bearer s3cret"
        assert headers["Content-Type"] == "application/json"
    await sink.write(SinkBatch(7, 5, outputs=[out(4, 0)]))  # at the applied offset: no-op
    await sink.close()
    assert len(receiver.attempts) == 6


async def test_a_400_is_a_non_retriable_error_naming_the_status(
    server: tuple[Receiver, str],
) -> None:
    receiver, url = server
    receiver.status = 400
    sink = await started(url)
    await sink.write(SinkBatch(1, 3, outputs=[out(1, 0), out(2, 0)]))
    with pytest.raises(SinkError, match="output 1-0: refused with HTTP 400") as e:
        await sink.flush()
    assert not e.value.retriable
    assert receiver.tries("1-0") == 1 and receiver.tries("2-0") == 0
    assert await sink.applied_offset() == 0
    with pytest.raises(SinkError, match="HTTP 400"):  # failed for good
        await sink.write(SinkBatch(1, 4, outputs=[out(3, 0)]))
    with pytest.raises(SinkError, match="HTTP 400"):
        await sink.close()


async def test_retries_are_bounded_then_retriable_and_a_resend_delivers(
    server: tuple[Receiver, str],
) -> None:
    receiver, url = server
    receiver.status = 503
    sink = await started(url, attempts_max=3)
    await sink.write(SinkBatch(1, 2, outputs=[out(0, 0)]))
    await sink.write(SinkBatch(1, 4, outputs=[out(3, 0)]))
    with pytest.raises(SinkError, match="not delivered in 3 attempts, last: HTTP 503") as e:
        await sink.flush()
    assert e.value.retriable
    assert receiver.tries("0-0") == 3 and receiver.tries("3-0") == 0
    # The endpoint recovers; the engine sends again from the applied offset.
    assert await sink.applied_offset() == 0
    receiver.status = 200
    await sink.write(SinkBatch(1, 2, outputs=[out(0, 0)]))
    await sink.write(SinkBatch(1, 4, outputs=[out(3, 0)]))
    await sink.close()
    assert receiver.accepted == ["0-0", "3-0"]
    assert await sink.applied_offset() == 4


async def test_a_request_timeout_is_retried(server: tuple[Receiver, str]) -> None:
    receiver, url = server
    receiver.hang_first = True
    sink = await started(url, request_timeout_ms=300)
    await sink.write(SinkBatch(1, 2, outputs=[out(1, 0)]))
    await sink.close()
    assert receiver.tries("1-0") == 2 and receiver.accepted == ["1-0"]


async def test_a_refused_connection_is_retriable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens here once closed
    sink = await started(f"http://127.0.0.1:{port}/hook", attempts_max=2)
    await sink.write(SinkBatch(1, 2, outputs=[out(1, 0)]))
    with pytest.raises(SinkError, match="not delivered in 2 attempts") as e:
        await sink.flush()
    assert e.value.retriable
    await sink.close()


async def test_a_full_queue_makes_write_wait(server: tuple[Receiver, str]) -> None:
    receiver, url = server
    receiver.gate = asyncio.Event()
    sink = await started(url, queue_items_max=2)
    writing = asyncio.create_task(
        sink.write(SinkBatch(1, 9, outputs=[out(i, 0) for i in range(6)]))
    )
    await receiver.arrived.wait()  # the first output is out, the server holds it
    for _ in range(50):
        await asyncio.sleep(0)
    assert not writing.done()  # 2 queued behind the one in flight: the rest must wait
    receiver.gate.set()
    await writing
    await sink.close()
    assert receiver.accepted == [f"{i}-0" for i in range(6)]
    assert await sink.applied_offset() == 9
