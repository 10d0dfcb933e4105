"""The peer beside ``node_e2e.py``: NATS JetStream publishing the same events.

The server is the machine's own (``nats://127.0.0.1:4222``, started with ``-js``, file
storage under ``/var/lib/nats-server``); this script creates a stream of its own
(``WALREPBENCH``, file storage, one replica: the server is single) and deletes it after.
nats-server 2.9 has no per-message fsync setting (``sync_interval`` came in 2.10): its
file store writes each message and syncs on its own schedule, so an acknowledged
publish is in the server's page cache, not necessarily on disk. walrep fsyncs on both
nodes before it acknowledges. Both figures are reported with that difference stated.

Cases, each timed after a warm-up:

* ``nats x500``  one message per batch of 500 events (the same JSON array walrep's TCP
  ingest gets), 8 publishes in flight;
* ``nats x1``    one message per event, 64 publishes in flight (p50/p99 from send to ack);
* ``nats sync``  one message per event, one at a time (each publish awaits its ack).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

URL = "nats://127.0.0.1:4222"
STREAM = "WALREPBENCH"
SUBJECT = "walrepbench.events"


async def nats_cases(pool: list[dict[str, Any]], seconds: float) -> list[dict[str, Any]]:
    """The three cases, or one row saying why NATS was skipped (never a made-up figure)."""
    try:
        import nats
        from nats.js.api import StorageType
    except ImportError:
        return [{"case": "nats", "skipped": "nats-py is not installed"}]
    try:
        nc = await nats.connect(URL, connect_timeout=2, max_reconnect_attempts=0)
    except Exception as e:
        return [{"case": "nats", "skipped": f"no NATS server at {URL}: {e!r}"}]
    js = nc.jetstream()
    v = nc.connected_server_version
    version = f"{v.major}.{v.minor}.{v.patch}"
    try:
        await js.add_stream(name=STREAM, subjects=[SUBJECT], storage=StorageType.FILE)
        settings = f"nats-server {version}, JetStream file storage, 1 replica, default sync"
        batches = [orjson.dumps(pool[i : i + 500]) for i in range(0, len(pool) - 499, 500)]
        singles = [orjson.dumps([e]) for e in pool]

        async def publish(payload: bytes) -> None:
            await js.publish(SUBJECT, payload)

        rows = [
            await _windowed("nats x500", publish, batches, 500, 8, seconds),
            await _windowed("nats x1", publish, singles, 1, 64, seconds),
            await _windowed("nats sync", publish, singles, 1, 1, seconds),
        ]
        for row in rows:
            row["settings"] = settings
        return rows
    finally:
        try:
            await js.delete_stream(STREAM)
        finally:
            await nc.close()


async def _windowed(
    case: str,
    publish: Callable[[bytes], Awaitable[None]],
    payloads: list[bytes],
    events_per_payload: int,
    window: int,
    seconds: float,
) -> dict[str, Any]:
    for payload in payloads[:window]:  # warm-up
        await publish(payload)
    latencies: list[float] = []
    sent = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def worker(first: int) -> None:
        nonlocal sent
        i = first
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            await publish(payloads[i % len(payloads)])
            latencies.append(time.perf_counter() - began)
            sent += events_per_payload
            i += window

    await asyncio.gather(*(worker(k) for k in range(window)))
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "case": case,
        "in_flight": window,
        "events": sent,
        "events_per_s": sent / elapsed,
        "p50_ms": ordered[len(ordered) // 2] * 1000,
        "p99_ms": ordered[int(len(ordered) * 0.99)] * 1000,
    }
