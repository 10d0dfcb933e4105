"""How late the node's event loop runs what is due: ``walrep_event_loop_lag_seconds``.

Everything time-critical in a node (lease renewals, acks, heartbeats) is a callback on
one asyncio loop, so a callback that runs long, or a thread that holds the interpreter
(a digest or a snapshot being encoded), delays all of them. ``watch_loop_lag`` sleeps
``INTERVAL_S`` at a time and records how much later than asked it woke up, into a
histogram exported by ``/metrics``; a lag past ``WARN_S`` is also logged, at most once
per ``WARN_EVERY_S``, because the lease's validity (``lease_ttl_ms - safety_margin_ms``)
is what such a lag eats into.
"""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import Histogram
from prometheus_client.registry import CollectorRegistry

log = logging.getLogger("walrep.process")

INTERVAL_S = 0.02
WARN_S = 0.25
WARN_EVERY_S = 10.0
BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def lag_histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram(
        "walrep_event_loop_lag_seconds",
        "How much later than due the node's event loop woke a sleeper",
        buckets=BUCKETS_S,
        registry=registry,
    )


async def watch_loop_lag(histogram: Histogram, node_id: str) -> None:
    """Measure the loop's lag until cancelled."""
    warned_at = -WARN_EVERY_S
    while True:
        asked = time.monotonic()
        await asyncio.sleep(INTERVAL_S)
        woke = time.monotonic()
        lag_s = max(0.0, woke - asked - INTERVAL_S)
        histogram.observe(lag_s)
        if lag_s >= WARN_S and woke - warned_at >= WARN_EVERY_S:
            warned_at = woke
            log.warning(
                "node %s: the event loop ran %d ms late (a long callback, or a thread "
                "holding the interpreter): lease renewals and acks wait as long",
                node_id,
                lag_s * 1000,
            )
