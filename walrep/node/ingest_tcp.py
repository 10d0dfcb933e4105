"""Binary TCP ingest on the active (port 9611 + port_offset; docs/formats.md, "TCP ingest").

Framing (all integers little-endian):

* hello, client to node: ``b"WRI1"``, u16 token length, the token (UTF-8);
  node to client: one answer frame with request id 0 (``{"ok": true, "node": id}``, or
  an error and the connection closes);
* request: u32 length of what follows, u32 request id, then a JSON array of events (the
  body ``POST /events`` takes);
* answer: u32 length, u32 request id, JSON: ``{"offsets": [...]}`` once committed, or
  ``{"error", "message", "status", "index"?}`` (the HTTP ingest's codes and statuses).

Requests are pipelined: the node checks and reserves each request in arrival order
(``IngestApi.ingest``: nothing awaited before the reservations), so a producer's
requests append in the order sent; answers go out as each commits, carrying its id.
Bounds: ``max_in_flight`` requests a connection (beyond it the node stops reading: TCP
backpressure), ``max_request_bytes`` a request, ``max_connections`` connections, a hello
within ``hello_timeout_s``. Garbage (a bad magic, a length over the limit, a request
that is not a JSON array) gets an error frame and closes that connection only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from typing import Any, Final

import orjson

from walrep.node.http_common import Refusal
from walrep.node.ingest_http import IngestApi

log = logging.getLogger("walrep.ingest")

MAGIC: Final = b"WRI1"
_U16: Final = struct.Struct("<H")
_HEAD: Final = struct.Struct("<II")  # length (of id + payload), request id
MAX_TOKEN_BYTES: Final = 4096


def frame(request_id: int, doc: dict[str, Any]) -> bytes:
    payload = orjson.dumps(doc)
    return _HEAD.pack(len(payload) + 4, request_id) + payload


class TcpIngest:
    """The TCP ingest server of one node (see the module docstring)."""

    def __init__(
        self,
        api: IngestApi,
        node_id: str,
        *,
        max_in_flight: int = 64,
        max_connections: int = 256,
        hello_timeout_s: float = 5.0,
    ) -> None:
        self.api, self.node_id = api, node_id
        self.max_in_flight = max_in_flight
        self.max_connections = max_connections
        self.hello_timeout_s = hello_timeout_s
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> str:
        self._server = await asyncio.start_server(self._serve, host, port)
        bound = self._server.sockets[0].getsockname()
        return f"tcp://{bound[0]}:{bound[1]}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        try:
            if self.connections > self.max_connections:
                writer.write(frame(0, _error(Refusal(503, "overloaded", "too many connections"))))
                return
            if await self._hello(reader, writer):
                await self._requests(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass  # the client went away, or was too slow to say hello
        except asyncio.CancelledError:
            pass  # close(): the server stops (ending normally keeps asyncio's callback quiet)
        finally:
            self.connections -= 1
            self._handlers.discard(task)
            with contextlib.suppress(ConnectionError, OSError):
                await writer.drain()
            writer.close()

    async def _hello(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        async with asyncio.timeout(self.hello_timeout_s):
            magic = await reader.readexactly(len(MAGIC))
            if magic != MAGIC:
                writer.write(frame(0, _error(Refusal(400, "bad_magic", f"not {MAGIC!r}"))))
                return False
            (size,) = _U16.unpack(await reader.readexactly(_U16.size))
            if size > MAX_TOKEN_BYTES:
                writer.write(frame(0, _error(Refusal(400, "bad_hello", "token too long"))))
                return False
            token = await reader.readexactly(size)
        refusal = self.api.token_refusal(token)
        if refusal is not None:
            writer.write(frame(0, _error(refusal)))
            return False
        writer.write(frame(0, {"ok": True, "node": self.node_id}))
        return True

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        room = asyncio.Semaphore(self.max_in_flight)
        in_flight: set[asyncio.Task[None]] = set()
        limit = self.api.max_request_bytes + 4
        try:
            while True:
                head = await _read_head(reader)
                if head is None:
                    return  # the client closed
                length, request_id = head
                if length < 4 or length > limit:
                    reason = f"request length {length} outside 4..{limit}"
                    writer.write(frame(request_id, _error(Refusal(413, "bad_length", reason))))
                    return
                payload = await reader.readexactly(length - 4)
                try:
                    items = orjson.loads(payload)
                except orjson.JSONDecodeError as e:
                    refusal = Refusal(400, "malformed_json", f"not JSON: {e}")
                    writer.write(frame(request_id, _error(refusal)))
                    return
                if not isinstance(items, list):
                    refusal = Refusal(400, "malformed_json", "a request is a JSON array")
                    writer.write(frame(request_id, _error(refusal)))
                    return
                await room.acquire()  # beyond max_in_flight: stop reading (backpressure)
                task = asyncio.create_task(self._answer(writer, request_id, items, room))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        finally:
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)

    async def _answer(
        self,
        writer: asyncio.StreamWriter,
        request_id: int,
        items: list[Any],
        room: asyncio.Semaphore,
    ) -> None:
        try:
            doc: dict[str, Any] = {"offsets": await self.api.ingest(items)}
        except Refusal as refusal:
            doc = _error(refusal)
        finally:
            room.release()
        if not writer.is_closing():
            writer.write(frame(request_id, doc))


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, int] | None:
    try:
        data = await reader.readexactly(_HEAD.size)
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise
    length, request_id = _HEAD.unpack(data)
    return length, request_id


def _error(refusal: Refusal) -> dict[str, Any]:
    return {**refusal.body(), "status": refusal.status}
