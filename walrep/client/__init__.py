"""``walrep.client``: publish events to a walrep pair over HTTP, across failover.

```python
async with Client(["http://node1:7280", "http://node2:7281"], token=..., producer_id="gw-1") as c:
    offsets = await c.publish([("Request", {...}), ("Request", {...})])
```

Contracts:

* **Acks carry offsets**: ``publish`` returns once every event is committed on the pair
  (durable on both, under a valid lease), one log offset per event, in order.
* **Failover**: ``endpoints`` are the ingest URLs of both nodes (or, with ``admin=``, the
  admin URLs: the client asks each ``/status`` for the active's ingest URL). A refused
  connection, a timeout or a 503 moves on to the next endpoint, with a backoff doubling
  from ``backoff_initial_ms`` to ``backoff_max_ms``, until ``retry_deadline_s``.
* **Idempotent producer**: with ``producer_id``, every event is stamped with the next
  ``seq`` once, when ``publish`` takes it; a retry sends the very same stamps, so an
  event appended before the node died is answered with its original offset by the new
  active, never appended twice. Requests of one producer go one at a time, in order (a
  second ``publish`` waits for the first): the server refuses a gap in ``seq``.
* **Typed errors** (``ClientError``, ``retriable`` says whether to try again): a 4xx is
  not retriable (nothing of that request was appended; its stamps are given back, so
  the next ``publish`` continues without a gap); running out of time is retriable, and
  then the events may or may not be in: ``error.events`` holds them as stamped, and
  publishing exactly those again (``publish(error.events)``) before anything else
  answers them with their original offsets if they were appended.
* **Batching**: ``publish`` sends at most ``max_batch_events`` events a request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import aiohttp
import orjson

from walrep.errors import ClientError

__all__ = ["Client", "ClientError", "PublishError", "get_json"]

Stamped = dict[str, Any]  # {"stream", "attributes", "producer_id"?, "seq"?}
EventLike = tuple[str, Mapping[str, Any]] | Mapping[str, Any]


class PublishError(ClientError):
    """A publish that did not complete: ``status``/``code`` of the last answer (None when
    no node answered), ``events`` as they were stamped (see the module docstring)."""

    def __init__(
        self,
        message: str,
        *,
        retriable: bool,
        events: list[Stamped],
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, retriable=retriable)
        self.events, self.status, self.code = events, status, code


class Client:
    """A publisher to one walrep pair (see the module docstring)."""

    def __init__(
        self,
        endpoints: Sequence[str] = (),
        *,
        admin: Sequence[str] = (),
        token: str | None = None,
        producer_id: str | None = None,
        first_seq: int = 0,
        max_batch_events: int = 1000,
        request_timeout_s: float = 10.0,
        retry_deadline_s: float = 30.0,
        backoff_initial_ms: int = 50,
        backoff_max_ms: int = 1000,
    ) -> None:
        if not endpoints and not admin:
            raise ValueError("give the nodes' ingest URLs (endpoints) or admin URLs (admin)")
        if max_batch_events < 1 or retry_deadline_s <= 0 or backoff_initial_ms < 1:
            raise ValueError("max_batch_events, retry_deadline_s and backoffs must be positive")
        self.endpoints = [u.rstrip("/") for u in endpoints]
        self.admin = [u.rstrip("/") for u in admin]
        self.producer_id = producer_id
        self.next_seq = first_seq
        self.max_batch_events = max_batch_events
        self.retry_deadline_s = retry_deadline_s
        self._backoff_ms = (backoff_initial_ms, max(backoff_initial_ms, backoff_max_ms))
        self._headers = {"Content-Type": "application/json"}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._current = 0  # index of the endpoint that answered last
        self._lock = asyncio.Lock()  # one request of this producer at a time, in order
        self.failovers = 0  # times the client moved to another endpoint

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def stamp(self, events: Iterable[EventLike]) -> list[Stamped]:
        """The events as sent: ``(stream, attributes)`` or event dicts; with a producer,
        each not yet stamped gets the next ``seq`` (an already stamped one keeps its)."""
        out: list[Stamped] = []
        for e in events:
            if isinstance(e, tuple):
                event: Stamped = {"stream": e[0], "attributes": dict(e[1])}
            else:
                event = dict(e)
            if self.producer_id is not None and "seq" not in event:
                event["producer_id"], event["seq"] = self.producer_id, self.next_seq
                self.next_seq += 1
            out.append(event)
        return out

    async def publish(self, events: Iterable[EventLike]) -> list[int]:
        """Append ``events``; their offsets, once committed (see the module docstring)."""
        async with self._lock:
            stamped = self.stamp(events)
            offsets: list[int] = []
            for i in range(0, len(stamped), self.max_batch_events):
                batch = stamped[i : i + self.max_batch_events]
                try:
                    offsets += await self._send(batch)
                except PublishError as e:
                    rest = stamped[i:]
                    if not e.retriable:  # nothing of this batch is in: give its seqs back
                        self._rewind(batch)
                    raise PublishError(
                        str(e), retriable=e.retriable, events=rest, status=e.status, code=e.code
                    ) from e
            return offsets

    def _rewind(self, batch: list[Stamped]) -> None:
        if self.producer_id is None:
            return
        seqs = [e["seq"] for e in batch if e.get("producer_id") == self.producer_id]
        if seqs and max(seqs) == self.next_seq - 1:
            self.next_seq = min(seqs)

    async def _send(self, batch: list[Stamped]) -> list[int]:
        body = orjson.dumps(batch)
        deadline = time.monotonic() + self.retry_deadline_s
        backoff_ms = self._backoff_ms[0]
        last = "no node answered"
        status: int | None = None
        code: str | None = None
        while True:
            url = await self._ingest_url()
            if url is not None:
                try:
                    async with self._http().post(
                        url + "/events", data=body, headers=self._headers
                    ) as response:
                        status = response.status
                        doc = await _json(response)
                    if status == 200:
                        return [int(o) for o in doc["offsets"]]
                    code = str(doc.get("error", status))
                    last = f"{url}: {status} {code}: {doc.get('message', '')}"
                    if status != 503:
                        raise PublishError(
                            last, retriable=False, events=batch, status=status, code=code
                        )
                except (aiohttp.ClientError, TimeoutError, OSError) as e:
                    last, status, code = f"{url}: {type(e).__name__}: {e}", None, None
            if time.monotonic() + backoff_ms / 1000 > deadline:
                raise PublishError(
                    f"gave up after {self.retry_deadline_s} s: {last}",
                    retriable=True,
                    events=batch,
                    status=status,
                    code=code,
                )
            self._next_endpoint()
            await asyncio.sleep(backoff_ms / 1000)
            backoff_ms = min(backoff_ms * 2, self._backoff_ms[1])

    def _next_endpoint(self) -> None:
        self._current += 1
        self.failovers += 1

    async def _ingest_url(self) -> str | None:
        """The endpoint to try now: the next ingest URL, or the active's, from /status."""
        if self.endpoints:
            return self.endpoints[self._current % len(self.endpoints)]
        admin = self.admin[self._current % len(self.admin)]
        try:
            async with self._http().get(admin + "/status") as response:
                doc = await _json(response)
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None
        if doc.get("role") != "ACTIVE":
            return None
        url = doc.get("urls", {}).get("ingest_http")
        return str(url) if url else None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    """``GET url``: its status and JSON body; ``(0, None)`` when nothing answered or the
    body is not JSON (the admin API's readers: the demo, ``walrep cluster``)."""
    try:
        async with http.get(url) as r:
            return r.status, await r.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return 0, None


async def _json(response: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        doc = orjson.loads(await response.read())
    except orjson.JSONDecodeError:
        return {"error": "not_json", "message": f"HTTP {response.status}, not JSON"}
    return doc if isinstance(doc, dict) else {"error": "not_json", "message": "not an object"}
