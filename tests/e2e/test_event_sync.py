"""Event sync end to end between two ``Node``s in this process: real lease, real loopback
TCP, real WAL files, one SQLite store file.

Happy path, passive restart under both standby-loss policies, KIP-101 divergence, and a
truncation below the committed offset refused (also by the persisted committed floor).
"""

from __future__ import annotations

import asyncio
import shutil

import pytest

from tests.e2e.cluster import (
    ACTIVE,
    PASSIVE,
    Cluster,
    Entry,
    Journal,
    Writers,
    caught_up,
    events,
    frames_in,
    frames_of,
    in_sync,
    is_role,
    problems,
    shipper,
    until,
    waiting_appends,
    within,
    write_history,
)
from walrep.errors import CommittedTruncationError
from walrep.log.replica_state import load_replica_state
from walrep.log.types import AppendResult
from walrep.log.wal import Wal
from walrep.node.role import Role


async def test_appends_commit_and_logs_are_identical(cluster: Cluster) -> None:
    journal = Journal()
    active = await cluster.active(store=cluster.journaled(journal))
    passive = await cluster.passive()
    await journal.wait_recorded(True)
    assert await cluster.in_sync_nodes() == {PASSIVE: active.epoch}

    def check(result: AppendResult) -> None:
        # Returned => committed: durable here and (in-sync standby) fsynced on the passive.
        assert active.committed >= result.end_offset
        assert active.log.durable_end >= result.end_offset
        assert passive.log.durable_end >= result.end_offset

    for _ in range(200):
        check(await active.append(events(1)))
    for _ in range(10):
        check(await active.append(events(1000)))
    mixed = [events(1000) if i % 25 == 0 else events(1) for i in range(300)]
    results = await within(
        asyncio.gather(*(active.append(batch) for batch in mixed)), "concurrent appends"
    )
    for result in results:
        check(result)

    end = active.log.log_end
    assert end == 200 + 10 * 1000 + sum(len(b) for b in mixed)
    await caught_up(active, passive)
    assert active.committed == passive.log.log_end == end
    assert frames_of(passive.log) == frames_of(active.log)
    assert passive.log.epochs.entries == active.log.epochs.entries
    assert journal.records() == [(PASSIVE, True)]
    assert shipper(active).unprotected_offsets == 0
    assert problems(active) == {} and problems(passive) == {}


def check_out_of_sync_before_unprotected_acks(journal: Journal, passive_end: int) -> None:
    """Invariant 1 with ``degrade``: an event the standby lacks is acknowledged only after
    the out-of-sync record was confirmed; and acknowledging did go on after it."""
    entries: list[Entry] = journal.entries
    start = next(i for i, e in enumerate(entries) if e.kind == "record-start" and not e.in_sync)
    done = next(i for i, e in enumerate(entries) if e.kind == "record-done" and not e.in_sync)
    acked_then = entries[start].offset
    assert start < done
    assert acked_then <= passive_end
    early = [e.offset for e in entries[:done] if e.kind == "ack"]
    late = [e.offset for e in entries[done:] if e.kind == "ack"]
    assert early and max(early) <= acked_then, (max(early), acked_then)
    assert late and max(late) > acked_then


async def test_passive_restart_degrade(cluster: Cluster) -> None:
    journal = Journal()
    store = cluster.journaled(journal)
    active = await cluster.active(store=store)
    journal.acked_now = lambda: shipper(active).acked
    passive = await cluster.passive()
    await journal.wait_recorded(True)
    writers = Writers(active, journal)
    await writers.wait_acks(100, "before the outage")

    store.hold("set_in_sync")  # the out-of-sync record waits: look at the system meanwhile
    await passive.stop()
    passive_end = passive.log.durable_end
    await journal.wait_for(
        lambda: (PASSIVE, False) in journal.records("record-start"), "out-of-sync record asked"
    )
    # While the record is on its way nothing beyond the standby's acked offset is acked:
    # every publisher ends up waiting for a commit (a positive signal that they are stuck).
    await until(active, lambda n: waiting_appends(n) == writers.tasks, "every publisher waits")
    assert active.committed <= passive_end
    assert max(journal.acks()) <= passive_end
    store.unhold("set_in_sync")
    done = await journal.wait_recorded(False)
    await writers.wait_acks(100, "during the outage (degraded)")
    assert active.committed > passive_end
    assert shipper(active).unprotected_offsets > 0
    assert await cluster.in_sync_nodes() == {}

    passive = await cluster.passive()  # the same directory, a new process-like node
    await journal.wait_recorded(True, after=done)
    await writers.wait_acks(100, "after the passive returned")
    await writers.stop()
    await caught_up(active, passive)
    assert frames_of(passive.log) == frames_of(active.log)
    assert journal.records() == [(PASSIVE, True), (PASSIVE, False), (PASSIVE, True)]
    check_out_of_sync_before_unprotected_acks(journal, passive_end)
    assert active.core_.metrics["replication_standby_lost"] == 1


async def test_passive_restart_block(cluster: Cluster) -> None:
    journal = Journal()
    active = await cluster.active(store=cluster.journaled(journal), shipper={"degrade": False})
    passive = await cluster.passive()
    await journal.wait_recorded(True)
    writers = Writers(active, journal)
    await writers.wait_acks(100, "before the outage")

    await passive.stop()
    passive_end = passive.log.durable_end
    # Every publisher's append is written here and waits for a commit that cannot come.
    await until(active, lambda n: waiting_appends(n) == writers.tasks, "every publisher waits")
    assert active.committed <= passive_end
    assert max(journal.acks()) <= passive_end
    assert active.log.log_end > passive_end  # appended locally, not acknowledged
    assert await cluster.in_sync_nodes() == {PASSIVE: active.epoch}  # block: still counts

    passive = await cluster.passive()
    await writers.wait_acks(100, "after the passive returned")
    await writers.stop()
    await caught_up(active, passive)
    assert frames_of(passive.log) == frames_of(active.log)
    assert journal.records() == [(PASSIVE, True)]  # never recorded out of sync


async def bump_epoch(cluster: Cluster, holder: str, times: int) -> None:
    """Acquire and release the lease ``times`` times as ``holder`` (direct store calls)."""
    store, group = await cluster.admin(), cluster.group
    for _ in range(times):
        seen = await store.read_lease(group)
        won, lease = await store.try_acquire(group, holder, seen.epoch, 60_000)
        assert won, lease
        assert await store.release(group, holder, lease.epoch)


@pytest.mark.parametrize("tail_epoch", [1, 2])
async def test_divergent_tail_is_truncated_kip101(cluster: Cluster, tail_epoch: int) -> None:
    """The passive holds a tail (epoch ``tail_epoch``) the new active never had; the new
    active's epoch 1 ends at 30 and it writes under ``tail_epoch + 1``."""
    with Wal.open(cluster.root / ACTIVE) as aw:
        for _ in range(3):
            aw.append_sync(events(10, "common"), epoch=1)
        common = frames_of(aw)
    with Wal.open(cluster.root / PASSIVE) as pw:
        await pw.append_frames(b"".join(common))
        await write_history(pw, tail_epoch, 2, "lost")
        assert pw.log_end == 50 and pw.last_epoch == tail_epoch
        await pw.aclose()
    await bump_epoch(cluster, ACTIVE, tail_epoch)  # the active was the last holder

    active = await cluster.active()
    epoch = tail_epoch + 1
    assert active.epoch == epoch
    passive = await cluster.passive()
    for _ in range(5):
        await active.append(events(10, "new"))
    await until(active, in_sync, "the passive is recorded in sync")
    for _ in range(5):
        await active.append(events(10, "new"))
    await caught_up(active, passive)

    assert frames_of(passive.log) == frames_of(active.log)
    assert frames_of(passive.log)[:3] == common
    assert [(e.epoch, e.start_offset) for e in passive.log.epochs.entries] == [(1, 0), (epoch, 30)]
    assert [r for r in passive.log.read() if r.event[1]["tag"] == "lost"] == []
    assert passive.log.log_end == 130


async def test_truncation_below_committed_is_refused(cluster: Cluster) -> None:
    """The passive knows 40 is committed (its persisted floor). The old active comes back
    with only 20 events of epoch 1 (its directory restored from an old backup). It does
    not take the lease back on its own: its log ends below the 40 it published as
    committed. Forced in by an operator (epoch 2), it asks the passive to truncate to 20:
    refused every time, by the restarted passive too (the floor is on disk)."""
    old = await cluster.active(ACTIVE)
    passive = await cluster.passive()
    await until(old, in_sync, "the passive is recorded in sync")
    for _ in range(4):
        await old.append(events(10, "committed"))
    await caught_up(old, passive)
    await until(
        passive, lambda n: n.log.replica_state.committed_floor == 40, "committed floor persisted"
    )
    first_two = frames_of(old.log)[:2]
    await passive.stop()  # before the old active: it must not take over
    await old.stop()
    state = load_replica_state(cluster.root / PASSIVE)
    assert state is not None and state.committed_floor == 40
    with Wal.open(cluster.root / PASSIVE) as pw, pytest.raises(CommittedTruncationError):
        pw.truncate_after(20)  # the log itself refuses, whoever asks
    before = frames_in(cluster.root / PASSIVE)

    shutil.rmtree(cluster.root / ACTIVE)
    with Wal.open(cluster.root / ACTIVE) as sw:
        await sw.append_frames(b"".join(first_two))
        await sw.aclose()
    stale = await cluster.start(ACTIVE)
    await until(
        stale, lambda n: n.core_.metrics["acquire_held_back"] >= 3, "holds back from the lease"
    )
    assert stale.role is Role.PASSIVE
    stale.force_takeover()
    await until(stale, is_role(Role.ACTIVE), "forced in by the operator")
    assert stale.epoch == 2
    await stale.append(events(10, "stale"))

    passive = await cluster.passive()  # restarted: the floor comes from its replica state
    assert passive.committed == 40
    await until(
        passive,
        lambda n: n.core_.metrics["replication_divergence_refused"] >= 2,
        "refused twice (the active retries, the passive keeps refusing)",
    )
    await until(stale, lambda n: n.core_.metrics["replication_peer_refused"] >= 2, "refusals")
    assert frames_of(passive.log) == before
    assert passive.log.log_end == 40 and passive.log.last_epoch == 1
    assert (await cluster.in_sync_nodes()).get(PASSIVE) != stale.epoch  # never in sync under it
