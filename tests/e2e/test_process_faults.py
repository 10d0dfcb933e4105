"""The passive in its own process: SIGKILL (fsync before ack), SIGSTOP with ``block``
(backpressure within the window) and with ``degrade`` (a hung standby is dropped)."""

from __future__ import annotations

import asyncio
import signal

from tests.e2e.cluster import (
    PASSIVE,
    ActiveNode,
    Nodes,
    PassiveProcess,
    Writers,
    events,
    frames_in,
    frames_of,
    wait_until,
    within,
)
from walrep.log.wal import Wal
from walrep.replica.messages import PREFIX_BYTES
from walrep.replica.shipper import ShipperConfig

APPEND_HEAD_BYTES = PREFIX_BYTES + 1 + 28  # wire prefix, type, Append header
HEARTBEAT_BYTES = 64


async def finish(active: ActiveNode, passive: PassiveProcess) -> None:
    """Let the standby catch up, stop it cleanly, and compare both logs byte for byte."""
    await active.wait_caught_up()
    await passive.terminate()
    assert frames_in(passive.directory) == frames_of(active.wal)


async def test_passive_sigkill_loses_no_acknowledged_event(nodes: Nodes) -> None:
    passive = await nodes.process()
    active = nodes.active(passive.address)
    recorder = active.recorder
    await recorder.wait_recorded(True)
    writers = Writers(active)
    await writers.wait_acks(300, "before the kill")

    await passive.kill()
    lost = await recorder.wait_recorded(False)
    acked_in_sync = max(e.offset for e in recorder.journal[:lost] if e.kind == "ack")
    await writers.wait_acks(50, "degraded, while the passive is dead")

    with Wal.open(passive.directory) as wal:  # what the killed process had written
        survived = frames_of(wal)
        survived_end = wal.log_end
    assert survived_end >= acked_in_sync, (survived_end, acked_in_sync)
    assert survived == frames_of(active.wal)[: len(survived)]

    await passive.start()
    await recorder.wait_recorded(True, after=lost)
    await writers.wait_acks(100, "after the restart")
    await writers.stop()
    await finish(active, passive)


async def test_sigstop_backpressure_is_bounded(nodes: Nodes) -> None:
    window = 256 * 1024
    passive = await nodes.process()
    config = ShipperConfig(window_bytes=window, degrade=False, standby_timeout_ms=10_000)
    active = nodes.active(passive.address, config=config)
    await active.recorder.wait_recorded(True)
    batch = events(200, pad=128)
    frame_bytes = len(active.wal.encode(batch).payload) + 64
    publishers = 16
    assert publishers * frame_bytes > 2 * window  # the window binds, not the publishers
    acks = 0
    seen = {"in_flight": 0, "buffer": 0}

    async def publish() -> None:
        nonlocal acks
        while not stopping:
            await active.append(batch)
            acks += 1

    async def sample() -> None:
        while True:
            writer = active.link._writer
            seen["in_flight"] = max(seen["in_flight"], active.shipper._in_flight_bytes)
            if writer is not None:
                seen["buffer"] = max(seen["buffer"], writer.transport.get_write_buffer_size())
            await asyncio.sleep(0.001)

    stopping = False
    sampler = asyncio.create_task(sample())
    tasks = [asyncio.create_task(publish()) for _ in range(publishers)]
    await wait_until(lambda: acks >= 200, "streaming")

    passive.signal(signal.SIGSTOP)
    await wait_until(
        lambda: active.shipper._in_flight_bytes > window - frame_bytes, "the window fills"
    )
    acked_when_stopped = acks
    await asyncio.sleep(1.5)  # the passive stays stopped; proving an absence
    assert acks - acked_when_stopped <= publishers  # only what was committed already
    held = active.wal.log_end - active.link.committed
    assert 0 < held <= publishers * len(batch)  # publishers wait: the log does not run away
    assert active.link._writer is not None  # block, long timeout: the connection is kept

    passive.signal(signal.SIGCONT)
    await wait_until(lambda: acks >= acked_when_stopped + 200, "resumed after SIGCONT")
    stopping = True
    await within(asyncio.gather(*tasks), "publishers finish")
    sampler.cancel()
    assert seen["in_flight"] <= window, seen
    assert seen["buffer"] <= window + APPEND_HEAD_BYTES + 4 * HEARTBEAT_BYTES, seen
    assert active.recorder.records() == [(PASSIVE, True)]
    await finish(active, passive)


async def test_sigstop_degrade_records_standby_out_of_sync(nodes: Nodes) -> None:
    """A hung (not dead) passive: no ack within standby_timeout_ms -> recorded out of
    sync, publishers go on; after SIGCONT it catches up and is in sync again."""
    passive = await nodes.process()
    active = nodes.active(passive.address, config=ShipperConfig(standby_timeout_ms=300))
    recorder = active.recorder
    await recorder.wait_recorded(True)
    writers = Writers(active)
    await writers.wait_acks(100, "before SIGSTOP")

    passive.signal(signal.SIGSTOP)
    lost = await recorder.wait_recorded(False)
    await writers.wait_acks(100, "degraded while the passive is stopped")
    assert active.shipper.unprotected_offsets > 0
    passive.signal(signal.SIGCONT)
    await recorder.wait_recorded(True, after=lost)
    await writers.wait_acks(100, "after SIGCONT")
    await writers.stop()
    assert active.link.metrics["replication_standby_timeout"] >= 1
    await finish(active, passive)
