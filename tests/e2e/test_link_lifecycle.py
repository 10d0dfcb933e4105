"""Connections that end badly or at awkward moments: a hung passive, a stale active,
and stopping the link (graceful shutdown) in the middle of things."""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.e2e.cluster import (
    PASSIVE,
    Nodes,
    Writers,
    events,
    frames_in,
    frames_of,
    wait_until,
    within,
)
from walrep.errors import ClosedError
from walrep.replica.shipper import ShipperConfig


async def test_stale_active_does_not_disturb_the_current_one(nodes: Nodes) -> None:
    """An old active (right secret, lower epoch) that keeps reconnecting is rejected
    without closing the current active's connection first."""
    passive = await nodes.passive()
    current = nodes.active(passive.address, epoch=2)
    await current.recorder.wait_recorded(True)
    await current.append(events(10))
    assert passive.server is not None and passive.wal is not None
    server = passive.server
    stale = nodes.active(passive.address, name="stale", epoch=1)
    writers = Writers(current, tasks=2)
    await wait_until(
        lambda: server.metrics["replication_rejected_stale_epoch"] >= 4, "stale active rejected"
    )
    await writers.wait_acks(20, "the current active keeps committing")
    await writers.stop()
    await stale.close()
    assert stale.link.metrics["replication_peer_refused"] >= 4
    assert current.recorder.records() == [(PASSIVE, True)]  # never lost its standby
    assert current.link.metrics["replication_standby_lost"] == 0
    await current.wait_caught_up(lambda: passive.wal.durable_end if passive.wal else -1)
    assert frames_of(passive.wal) == frames_of(current.wal)


async def test_stop_keeps_the_standby_in_sync(nodes: Nodes) -> None:
    """A graceful stop is not a standby loss: no out-of-sync record (it would keep the
    standby from taking over at once when the lease is released)."""
    passive = await nodes.passive()
    active = nodes.active(passive.address)
    await active.recorder.wait_recorded(True)
    writers = Writers(active, tasks=2)
    await writers.wait_acks(50, "in sync")
    await writers.stop()
    await active.close()
    assert active.recorder.records("record-start") == [(PASSIVE, True)]


async def test_stop_fails_waiting_appends(nodes: Nodes) -> None:
    passive = await nodes.passive()
    active = nodes.active(passive.address, config=ShipperConfig(degrade=False))
    await active.recorder.wait_recorded(True)
    await active.append(events(10))
    await passive.stop()
    waiting = [asyncio.create_task(active.append(events(10))) for _ in range(3)]
    await wait_until(lambda: active.wal.log_end == 40, "appended locally")
    assert not any(task.done() for task in waiting)
    await within(active.link.stop(), "link stop")
    for task in waiting:
        with pytest.raises(ClosedError):
            await within(task, "a waiting append is answered")
    with pytest.raises(ClosedError):
        await active.append(events(1))  # after stop: written locally, never committed
    await within(active.task, "run() returns")


async def test_stop_while_looking_up_the_peer(nodes: Nodes) -> None:
    """stop() while the peer's address is being looked up (a coordinator query) or
    the connection is being made: run() must return, not start a session."""
    passive = await nodes.passive()
    lookups = 0
    answer = asyncio.Event()
    answer.set()

    async def slow_lookup() -> tuple[str, int] | None:
        nonlocal lookups
        lookups += 1
        await answer.wait()
        return await passive.address()

    active = nodes.active(slow_lookup)
    await active.recorder.wait_recorded(True)
    answer.clear()
    await passive.stop()  # the link reconnects: lookup, then waits for the answer
    await passive.start()
    await wait_until(lambda: lookups >= 2, "the link looks up the peer again")
    await within(active.link.stop(), "link stop")
    answer.set()
    await within(active.task, "run() returns after stop", 3.0)
    assert passive.server is not None
    await asyncio.sleep(0.1)  # the passive would have seen a session by now
    assert passive.server._current is None


async def test_hung_passive_with_buffered_data_is_dropped(nodes: Nodes) -> None:
    """The passive hangs (SIGSTOP) with megabytes still in the link's send buffer: on the
    standby timeout the link must let the connection go at once (reconnect attempts,
    and stop) instead of waiting for a peer that does not read."""
    passive = await nodes.process(rcvbuf=64 * 1024)
    config = ShipperConfig(
        window_bytes=8 * 1024 * 1024, window_batches=1000, standby_timeout_ms=300
    )
    active = nodes.active(passive.address, config=config)
    recorder = active.recorder
    await recorder.wait_recorded(True)
    passive.signal(signal.SIGSTOP)
    batch = events(2000, pad=128)  # ~0.5 MiB frames
    frame = len(active.wal.encode(batch).payload) + 64
    most = 0

    async def sample() -> None:  # the window also bounds the link's own send buffer
        nonlocal most
        while True:
            if active.link._writer is not None:
                most = max(most, active.link._writer.transport.get_write_buffer_size())
            await asyncio.sleep(0.001)

    sampler = asyncio.create_task(sample())
    publishers = [asyncio.create_task(active.append(batch)) for _ in range(40)]
    assert 40 * frame > 2 * config.window_bytes
    await wait_until(lambda: most > 2 * 1024 * 1024, "megabytes wait in the link's send buffer")
    await recorder.wait_recorded(False)  # degrade: the publishers go on
    await within(asyncio.gather(*publishers), "publishers acknowledged (degraded)")
    await wait_until(
        lambda: active.link.metrics["replication_standby_timeout"] >= 2,
        "the link gave up the hung connection and tried again",
        seconds=5.0,
    )
    await within(active.close(), "stop while the passive is still hung", 3.0)
    sampler.cancel()
    assert most <= config.window_bytes + 1024, most  # Append headers and a few heartbeats
    passive.signal(signal.SIGCONT)
    await passive.terminate()
    survived = frames_in(passive.directory)
    assert survived == frames_in(active.directory)[: len(survived)]


async def test_in_sync_standby_that_never_connects_is_recorded_out_of_sync(
    nodes: Nodes,
) -> None:
    """The active restarts with its standby recorded in sync (coordinator) while the
    standby is down: no connection is ever lost, yet after standby_timeout_ms it must be
    recorded out of sync (degrade) and publishers acknowledged. Needs both halves: the
    shipper's timeout while DOWN (shipper.py, added in the working tree after 502737b)
    and the link ticking it between sessions (active_link.py)."""
    passive = await nodes.passive()
    await passive.stop()  # its port is now closed: every connect is refused
    active = nodes.active(
        passive.address, config=ShipperConfig(standby_timeout_ms=300), standby_in_sync=True
    )
    appended = asyncio.create_task(active.append(events(10)))
    await active.recorder.wait_recorded(False)
    await within(appended, "acknowledged once the standby is recorded out of sync")
    assert active.link.metrics["replication_connect_failures"] >= 1

    await passive.start()
    await active.recorder.wait_recorded(True)
    await active.wait_caught_up(lambda: passive.wal.durable_end if passive.wal else -1)
