"""The HTTP webhook sink: each output POSTed as JSON — at least once, with an idempotency key.

Request: ``POST <url>`` with body ``{"id": [offset, index], "app", "stream", "attributes"}``
and headers ``Content-Type: application/json``, ``Idempotency-Key: <offset>-<index>``,
``X-Walrep-Epoch: <epoch>`` plus any configured ones (an ``Authorization`` header, never
logged). A receiver dedupes on the key: the same output always carries the same key, also
when a new active sends it again after a failover.

Ordering and delivery: ``write`` puts the batch's outputs on a bounded in-memory queue
(``queue_items_max``; a full queue makes ``write`` wait: backpressure) and returns; one
delivery task POSTs them one at a time in id order. ``applied_offset()`` is the
``to_offset`` of the last batch whose outputs were all answered with 2xx; ``flush`` waits
for the queue to drain; ``close`` flushes (bounded by ``close_timeout_ms``).

Failures: a connection error, a timeout (``request_timeout_ms`` a request), a 5xx, 408 or
429 is retried with exponential backoff and jitter, at most ``attempts_max`` attempts an
output; then a retriable ``SinkError``. Any other status (4xx, or 3xx: redirects are not
followed) is a non-retriable ``SinkError`` naming the status. The error is raised by the
next ``write``/``flush``/``close``; what was queued behind the failed output is dropped,
and after a retriable error the engine sends again from ``applied_offset()``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

import aiohttp
import orjson

from walrep.engine.sinks.base import Output, SinkBatch
from walrep.engine.types import AggregationSchema
from walrep.errors import SinkError

log = logging.getLogger(__name__)

QUEUE_ITEMS_MAX = 1000
ATTEMPTS_MAX = 5
REQUEST_TIMEOUT_MS = 5000
CONNECT_TIMEOUT_MS = 2000
BACKOFF_INITIAL_MS = 100
BACKOFF_MAX_MS = 5000
CLOSE_TIMEOUT_MS = 30_000
ERROR_BODY_BYTES_MAX = 512  # of a refused request's answer, in the error message
RESPONSE_BYTES_MAX = 64 * 1024  # read of an accepted request's answer (then discarded)
RETRIABLE_STATUSES = frozenset({408, 429})  # and every 5xx


class _Done:
    """Queue marker: every output of the batch up to ``to_offset`` is ahead of it."""

    __slots__ = ("to_offset",)

    def __init__(self, to_offset: int) -> None:
        self.to_offset = to_offset


class WebhookSink:
    """At-least-once delivery of outputs to one HTTP endpoint (see the module)."""

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        queue_items_max: int = QUEUE_ITEMS_MAX,
        attempts_max: int = ATTEMPTS_MAX,
        request_timeout_ms: int = REQUEST_TIMEOUT_MS,
        connect_timeout_ms: int = CONNECT_TIMEOUT_MS,
        backoff_initial_ms: int = BACKOFF_INITIAL_MS,
        backoff_max_ms: int = BACKOFF_MAX_MS,
        close_timeout_ms: int = CLOSE_TIMEOUT_MS,
    ) -> None:
        assert queue_items_max > 0 and attempts_max > 0
        assert 0 < backoff_initial_ms <= backoff_max_ms
        self.url = url
        self._headers = dict(headers or {})
        self._attempts_max = attempts_max
        self._timeout = aiohttp.ClientTimeout(
            total=request_timeout_ms / 1000, connect=connect_timeout_ms / 1000
        )
        self._backoff_initial_ms = backoff_initial_ms
        self._backoff_max_ms = backoff_max_ms
        self._close_timeout_ms = close_timeout_ms
        self._queue: asyncio.Queue[tuple[int, Output | _Done]] = asyncio.Queue(queue_items_max)
        self._session: aiohttp.ClientSession | None = None
        self._worker: asyncio.Task[None] | None = None
        self._delivered = 0  # batches with to_offset <= this are delivered
        self._queued = 0  # batches with to_offset <= this are queued or delivered
        self._error: SinkError | None = None
        self._random = random.Random()  # jitter only; nothing depends on its values

    @property
    def target(self) -> str:
        """The URL without credentials or query, for messages."""
        parts = urlsplit(self.url)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"

    async def setup(self, schemas: Sequence[AggregationSchema]) -> None:
        """Open the HTTP session and start the delivery task (idempotent)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._deliver_all(), name="webhook-sink")

    async def applied_offset(self) -> int:
        return self._delivered

    async def write(self, batch: SinkBatch) -> None:
        """Queue the batch's outputs (waits while the queue is full); raises an earlier
        delivery failure first."""
        assert self._worker is not None, "setup() first"
        self._raise_failure()
        if batch.to_offset <= self._queued:
            return  # already queued or delivered
        for output in batch.outputs:
            await self._queue.put((batch.epoch, output))
            self._raise_failure()
        await self._queue.put((batch.epoch, _Done(batch.to_offset)))
        self._queued = batch.to_offset

    async def flush(self) -> None:
        """Wait until everything queued is delivered; raise a delivery failure."""
        await self._queue.join()
        self._raise_failure()

    async def close(self) -> None:
        """Flush (at most ``close_timeout_ms``), then stop the task and close the session."""
        try:
            if self._worker is not None and not self._worker.done():
                async with asyncio.timeout(self._close_timeout_ms / 1000):
                    await self.flush()
        except TimeoutError as e:
            raise SinkError(
                f"webhook sink {self.target}: {self._queue.qsize()} items still queued after "
                f"{self._close_timeout_ms} ms at close"
            ) from e
        finally:
            if self._worker is not None:
                self._worker.cancel()
                await asyncio.gather(self._worker, return_exceptions=True)
                self._worker = None
            if self._session is not None:
                await self._session.close()
                self._session = None

    # --- delivery ---------------------------------------------------------------------------

    def _raise_failure(self) -> None:
        """Raise the delivery failure once; after a retriable one the sink works again,
        from ``applied_offset()`` (the queue holds nothing of the failed stretch)."""
        error = self._error
        if error is None:
            return
        self._drain()
        if error.retriable:
            self._error = None
            self._queued = self._delivered
        raise error

    def _drain(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()

    async def _deliver_all(self) -> None:
        while True:
            epoch, item = await self._queue.get()
            try:
                if self._error is not None:
                    continue  # dropped: the engine resends from applied_offset()
                if isinstance(item, _Done):
                    self._delivered = max(self._delivered, item.to_offset)
                else:
                    await self._deliver(epoch, item)
            except SinkError as e:
                self._error = e
                log.warning("%s", e)
            except Exception as e:  # a bug; the engine hears of it on its next call
                self._error = SinkError(
                    f"webhook sink {self.target}: delivery failed: {e!r}", retriable=False
                )
                log.exception("webhook sink %s: delivery failed", self.target)
            finally:
                self._queue.task_done()

    async def _deliver(self, epoch: int, output: Output) -> None:
        assert self._session is not None
        what = f"webhook sink {self.target}: output {output.idempotency_key}"
        try:
            body = orjson.dumps(output.to_json_obj())
        except TypeError as e:  # orjson.JSONEncodeError: an int over 64 bits, ...
            raise SinkError(f"{what}: not JSON: {e}", retriable=False) from e
        headers = {
            **self._headers,
            "Content-Type": "application/json",
            "Idempotency-Key": output.idempotency_key,
            "X-Walrep-Epoch": str(epoch),
        }
        last = ""
        for attempt in range(1, self._attempts_max + 1):
            try:
                async with self._session.post(
                    self.url, data=body, headers=headers, allow_redirects=False
                ) as response:
                    status = response.status
                    answer = await response.content.read(
                        RESPONSE_BYTES_MAX if status < 300 else ERROR_BODY_BYTES_MAX
                    )
            except (aiohttp.ClientError, TimeoutError) as e:
                last = f"{type(e).__name__}: {e}"
            else:
                if 200 <= status < 300:
                    return
                text = answer.decode("utf-8", "replace")
                if status < 500 and status not in RETRIABLE_STATUSES:
                    raise SinkError(f"{what}: refused with HTTP {status}: {text}", retriable=False)
                last = f"HTTP {status}: {text}"
            if attempt < self._attempts_max:
                await asyncio.sleep(self._backoff_s(attempt))
        raise SinkError(f"{what}: not delivered in {self._attempts_max} attempts, last: {last}")

    def _backoff_s(self, attempt: int) -> float:
        """Exponential, capped, with jitter in [50%, 100%] so retries do not synchronize."""
        ceiling_ms = min(self._backoff_max_ms, self._backoff_initial_ms << (attempt - 1))
        return ceiling_ms * (0.5 + 0.5 * self._random.random()) / 1000
