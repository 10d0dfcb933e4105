"""The passive in its own process: SIGKILL (fsync before ack), SIGSTOP with ``block``
(backpressure within the window) and with ``degrade`` (a hung standby is recorded out of
sync). The active is a ``Node`` in this process, so its core can be looked at."""

from __future__ import annotations

import asyncio
import signal

from tests.e2e.cluster import (
    PASSIVE,
    Cluster,
    Journal,
    NodeProcess,
    Writers,
    caught_up,
    events,
    frames_in,
    frames_of,
    in_sync,
    send_buffer_bytes,
    shipper,
    until,
    waiting_appends,
    within,
)
from walrep.log.wal import Wal
from walrep.node.runtime import Node
from walrep.replica.messages import PREFIX_BYTES

APPEND_HEAD_BYTES = PREFIX_BYTES + 1 + 28  # wire prefix, type, Append header
HEARTBEAT_BYTES = 64


async def finish(active: Node, passive: NodeProcess) -> None:
    """Let the standby catch up, stop it cleanly, and compare both logs byte for byte."""
    await caught_up(active)
    await passive.terminate()
    assert frames_in(passive.directory) == frames_of(active.log)


async def test_passive_sigkill_loses_no_acknowledged_event(cluster: Cluster) -> None:
    journal = Journal()
    active = await cluster.active(store=cluster.journaled(journal))
    passive = await cluster.process()
    await journal.wait_recorded(True)
    writers = Writers(active, journal)
    await writers.wait_acks(300, "before the kill")

    await passive.kill()
    lost = await journal.wait_recorded(False)
    acked_in_sync = max(e.offset for e in journal.entries[:lost] if e.kind == "ack")
    await writers.wait_acks(50, "degraded, while the passive is dead")
    assert await cluster.in_sync_nodes() == {}

    with Wal.open(passive.directory) as wal:  # what the killed process had made durable
        survived = frames_of(wal)
        survived_end = wal.log_end
    assert survived_end >= acked_in_sync, (survived_end, acked_in_sync)
    assert survived == frames_of(active.log)[: len(survived)]

    await passive.start()  # the same directory and port
    await journal.wait_recorded(True, after=lost)
    await writers.wait_acks(100, "after the restart")
    await writers.stop()
    await finish(active, passive)


async def test_sigstop_backpressure_is_bounded(cluster: Cluster) -> None:
    window = 256 * 1024
    active = await cluster.active(
        shipper={"window_bytes": window, "degrade": False, "standby_timeout_ms": 30_000}
    )
    passive = await cluster.process()
    await until(active, in_sync, "the passive is recorded in sync")
    batch = events(200, pad=128)
    frame_bytes = len(active.log.encode(batch).payload) + 64
    publishers = 16
    assert publishers * frame_bytes > 2 * window  # the window binds, not the publishers
    acks = 0
    seen = {"in_flight": 0, "buffer": 0}
    stopping = False

    async def publish() -> None:
        nonlocal acks
        while not stopping:
            await active.append(batch)
            acks += 1

    async def sample() -> None:
        while True:
            seen["in_flight"] = max(seen["in_flight"], shipper(active)._in_flight_bytes)
            seen["buffer"] = max(seen["buffer"], send_buffer_bytes(active) or 0)
            await asyncio.sleep(0.001)

    sampler = asyncio.create_task(sample())
    tasks = [asyncio.create_task(publish()) for _ in range(publishers)]
    await until(active, lambda _: acks >= 200, "streaming")

    passive.signal(signal.SIGSTOP)
    await until(
        active, lambda n: shipper(n)._in_flight_bytes > window - frame_bytes, "the window fills"
    )
    # Every publisher's append is written here and waits: the log does not run away.
    await until(active, lambda n: waiting_appends(n) == publishers, "every publisher waits")
    acked_when_stopped = acks
    held = active.log.log_end - active.committed
    assert 0 < held <= publishers * len(batch)
    assert shipper(active)._in_flight_bytes <= window
    assert send_buffer_bytes(active) is not None  # block, long timeout: the link is kept

    passive.signal(signal.SIGCONT)
    await until(active, lambda _: acks >= acked_when_stopped + 200, "resumed after SIGCONT")
    stopping = True
    await within(asyncio.gather(*tasks), "publishers finish")
    sampler.cancel()
    assert seen["in_flight"] <= window, seen
    assert seen["buffer"] <= window + APPEND_HEAD_BYTES + 4 * HEARTBEAT_BYTES, seen
    assert active.core_.metrics["replication_standby_lost"] == 0
    await finish(active, passive)


async def test_sigstop_degrade_records_standby_out_of_sync(cluster: Cluster) -> None:
    """A hung (not dead) passive: no ack within standby_timeout_ms -> recorded out of
    sync, publishers go on; after SIGCONT it catches up and is in sync again."""
    journal = Journal()
    active = await cluster.active(
        store=cluster.journaled(journal), shipper={"standby_timeout_ms": 300}
    )
    passive = await cluster.process()
    await journal.wait_recorded(True)
    writers = Writers(active, journal)
    await writers.wait_acks(100, "before SIGSTOP")

    passive.signal(signal.SIGSTOP)
    lost = await journal.wait_recorded(False)
    await writers.wait_acks(100, "degraded while the passive is stopped")
    assert shipper(active).unprotected_offsets > 0
    assert await cluster.in_sync_nodes() == {}
    passive.signal(signal.SIGCONT)
    await journal.wait_recorded(True, after=lost)
    await writers.wait_acks(100, "after SIGCONT")
    await writers.stop()
    assert active.core_.metrics["replication_standby_timeout"] >= 1
    assert await cluster.in_sync_nodes() == {PASSIVE: active.epoch}
    await finish(active, passive)
