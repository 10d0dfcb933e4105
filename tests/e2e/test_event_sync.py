"""Event sync end to end, both ends in this process: real loopback TCP, real WAL files.

Happy path, passive restart under both standby-loss policies, and KIP-101 divergence.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.cluster import (
    PASSIVE,
    Entry,
    Nodes,
    Writers,
    events,
    frames_of,
    wait_until,
    within,
)
from walrep.log.types import AppendResult
from walrep.log.wal import Wal
from walrep.replica.shipper import ShipperConfig


async def test_appends_commit_and_logs_are_identical(nodes: Nodes) -> None:
    passive = await nodes.passive()
    active = nodes.active(passive.address)
    await active.recorder.wait_recorded(True)
    assert passive.wal is not None

    def check(result: AppendResult) -> None:
        # Returned => committed: durable here and (in-sync standby) fsynced on the passive.
        assert active.link.committed >= result.end_offset
        assert active.wal.durable_end >= result.end_offset
        assert passive.wal is not None and passive.wal.durable_end >= result.end_offset

    for _ in range(200):
        check(await active.append(events(1)))
    for _ in range(10):
        check(await active.append(events(1000)))
    mixed = [events(1000) if i % 25 == 0 else events(1) for i in range(300)]
    results = await within(
        asyncio.gather(*(active.append(batch) for batch in mixed)), "concurrent appends"
    )
    assert isinstance(results, list)
    for result in results:
        check(result)

    end = active.wal.log_end
    assert end == 200 + 10 * 1000 + sum(len(b) for b in mixed)
    await active.wait_caught_up(lambda: passive.wal.durable_end if passive.wal else -1)
    assert active.link.committed == active.wal.log_end == passive.wal.log_end == end
    assert frames_of(passive.wal) == frames_of(active.wal)
    assert passive.wal.epochs.entries == active.wal.epochs.entries
    assert active.recorder.records() == [(PASSIVE, True)]
    assert active.shipper.unprotected_offsets == 0
    assert not active.link.metrics and not passive.server.metrics  # type: ignore[union-attr]


def check_out_of_sync_before_unprotected_acks(journal: list[Entry], passive_end: int) -> None:
    """Invariant 1 with ``degrade``: an event the standby lacks is acknowledged only after
    the out-of-sync record was confirmed; and acknowledging did go on after it."""
    start = next(i for i, e in enumerate(journal) if e.kind == "record-start" and not e.in_sync)
    done = next(i for i, e in enumerate(journal) if e.kind == "record-done" and not e.in_sync)
    acked_then = journal[start].offset
    assert start < done
    assert acked_then <= passive_end
    early = [e.offset for e in journal[:done] if e.kind == "ack"]
    late = [e.offset for e in journal[done:] if e.kind == "ack"]
    assert early and max(early) <= acked_then, (max(early), acked_then)
    assert late and max(late) > acked_then


async def test_passive_restart_degrade(nodes: Nodes) -> None:
    passive = await nodes.passive()
    active = nodes.active(passive.address)
    recorder = active.recorder
    await recorder.wait_recorded(True)
    writers = Writers(active)
    await writers.wait_acks(100, "before the outage")

    recorder.hold_out_of_sync = asyncio.Event()
    await passive.stop()
    assert passive.wal is not None
    passive_end = passive.wal.durable_end
    await recorder.wait_for(
        lambda: (PASSIVE, False) in recorder.records("record-start"), "out-of-sync record asked"
    )
    # While the record is on its way nothing beyond the standby's acked offset is acked.
    acks = writers.acks
    await asyncio.sleep(0.3)  # proving an absence: nothing to await
    assert writers.acks - acks <= 4  # at most what was already committed when it was lost
    assert active.link.committed <= passive_end
    recorder.hold_out_of_sync.set()
    done = await recorder.wait_recorded(False)
    await writers.wait_acks(100, "during the outage (degraded)")
    assert active.link.committed > passive_end
    assert active.shipper.unprotected_offsets > 0

    await passive.start()
    await recorder.wait_recorded(True, after=done)
    await writers.wait_acks(100, "after the passive returned")
    await writers.stop()
    await active.wait_caught_up(lambda: passive.wal.durable_end if passive.wal else -1)
    assert frames_of(passive.wal) == frames_of(active.wal)
    assert recorder.records() == [(PASSIVE, True), (PASSIVE, False), (PASSIVE, True)]
    check_out_of_sync_before_unprotected_acks(recorder.journal, passive_end)
    assert active.link.metrics["replication_standby_lost"] == 1


async def test_passive_restart_block(nodes: Nodes) -> None:
    passive = await nodes.passive()
    active = nodes.active(passive.address, config=ShipperConfig(degrade=False))
    recorder = active.recorder
    await recorder.wait_recorded(True)
    writers = Writers(active)
    await writers.wait_acks(100, "before the outage")

    await passive.stop()
    assert passive.wal is not None
    passive_end = passive.wal.durable_end
    await wait_until(lambda: writers.pending == 4, "every publisher waits")
    committed = active.link.committed
    await asyncio.sleep(0.5)  # proving an absence: nothing to await
    assert active.link.committed == committed <= passive_end
    assert writers.pending == 4
    assert max(e.offset for e in recorder.journal if e.kind == "ack") <= passive_end
    assert active.wal.log_end > passive_end  # appended locally, not acknowledged

    await passive.start()
    await writers.wait_acks(100, "after the passive returned")
    await writers.stop()
    await active.wait_caught_up(lambda: passive.wal.durable_end if passive.wal else -1)
    assert frames_of(passive.wal) == frames_of(active.wal)
    assert recorder.records() == [(PASSIVE, True)]  # never recorded out of sync


async def write_history(wal: Wal, epoch: int, batches: int, tag: str) -> None:
    for _ in range(batches):
        await wal.append(events(10, tag), epoch=epoch)


@pytest.mark.parametrize("tail_epoch", [1, 2])
async def test_divergent_tail_is_truncated_kip101(nodes: Nodes, tail_epoch: int) -> None:
    """The passive holds a tail (epoch ``tail_epoch``) the new active never had; the new
    active's epoch 1 ends at 30 and it writes under ``tail_epoch + 1``."""
    common_dir, passive_dir = nodes.root / "a", nodes.root / "p"
    with Wal.open(common_dir) as aw:
        for _ in range(3):
            aw.append_sync(events(10, "common"), epoch=1)
        common = frames_of(aw)
    with Wal.open(passive_dir) as pw:
        await pw.append_frames(b"".join(common))
        await write_history(pw, tail_epoch, 2, "lost")
        assert pw.log_end == 50 and pw.last_epoch == tail_epoch
        await pw.aclose()

    passive = await nodes.passive()
    epoch = tail_epoch + 1
    active = nodes.active(passive.address, epoch=epoch)
    for _ in range(5):
        await active.append(events(10, "new"))
    await active.recorder.wait_recorded(True)
    for _ in range(5):
        await active.append(events(10, "new"))
    assert passive.wal is not None
    await active.wait_caught_up(lambda: passive.wal.durable_end if passive.wal else -1)

    assert frames_of(passive.wal) == frames_of(active.wal)
    assert frames_of(passive.wal)[:3] == common
    assert [(e.epoch, e.start_offset) for e in passive.wal.epochs.entries] == [(1, 0), (epoch, 30)]
    lost = [r for r in passive.wal.read() if r.event[1]["tag"] == "lost"]
    assert lost == []
    assert passive.wal.log_end == 130


async def test_truncation_below_committed_is_refused(nodes: Nodes) -> None:
    passive = await nodes.passive()
    old = nodes.active(passive.address, name="old")
    await old.recorder.wait_recorded(True)
    for _ in range(4):
        await old.append(events(10, "committed"))
    assert passive.wal is not None and passive.server is not None
    await old.wait_caught_up(lambda: passive.wal.durable_end if passive.wal else -1)
    server = passive.server
    await wait_until(lambda: server.committed == 40, "the passive learns the commit offset")
    first_two = frames_of(old.wal)[:2]
    await old.close()

    # A node whose epoch-1 history stops at 20 becomes active under epoch 2 (forced).
    with Wal.open(nodes.root / "stale") as sw:
        await sw.append_frames(b"".join(first_two))
        await sw.aclose()
    before = frames_of(passive.wal)
    stale = nodes.active(passive.address, name="stale", epoch=2)
    await stale.append(events(10, "stale"))
    await wait_until(
        lambda: (
            server.metrics["replication_divergence_refused"] >= 2
            and stale.link.metrics["replication_peer_refused"] >= 2
        ),
        "refused twice (the active retries, the passive keeps refusing)",
    )
    await stale.close()
    assert frames_of(passive.wal) == before
    assert passive.wal.log_end == 40 and passive.wal.last_epoch == 1
    assert stale.recorder.records() == []
