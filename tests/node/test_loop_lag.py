"""The event-loop lag watcher: a blocked loop shows in the histogram and in the log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pytest
from prometheus_client import CollectorRegistry

from walrep.node.loop_lag import WARN_S, lag_histogram, watch_loop_lag


def _count(registry: CollectorRegistry, le: str | None = None) -> float:
    name = (
        "walrep_event_loop_lag_seconds_count"
        if le is None
        else "walrep_event_loop_lag_seconds_bucket"
    )
    labels = {} if le is None else {"le": le}
    value = registry.get_sample_value(name, labels)
    assert value is not None
    return value


async def test_a_blocked_loop_is_measured_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    histogram = lag_histogram(registry)
    watcher = asyncio.create_task(watch_loop_lag(histogram, "n1"))
    try:
        while _count(registry) < 2:  # noqa: ASYNC110 (running: it woke up on time twice)
            await asyncio.sleep(0.01)
        caplog.set_level(logging.WARNING, "walrep.process")
        time.sleep(WARN_S + 0.1)  # noqa: ASYNC251 (the loop blocked, as by a long callback)
        while _count(registry) - _count(registry, "0.25") < 1:  # noqa: ASYNC110 (>= 0.25 s late)
            await asyncio.sleep(0.01)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    assert any(
        "the event loop ran" in r.getMessage() and "n1" in r.getMessage() for r in caplog.records
    )
