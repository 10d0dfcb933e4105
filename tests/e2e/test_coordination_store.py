"""The in-sync record in a real coordination store (SQLite ``SqlStore``): the active holds
the lease and records the standby through ``set_in_sync`` under its epoch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.cluster import (
    ACTIVE,
    GROUP,
    PASSIVE,
    Nodes,
    Recorder,
    Writers,
    events,
    frames_of,
)
from tests.services import sql_store
from walrep.replica.sql_store import SqlStore

TTL_MS = 60_000  # nobody renews in these tests; set_in_sync extends the lease anyway


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    s = sql_store("sqlite", tmp_path)
    await s.setup()
    yield s
    await s.close()


async def test_in_sync_record_in_sqlite_store(nodes: Nodes, store: SqlStore) -> None:
    ok, lease = await store.try_acquire(GROUP, ACTIVE, 0, TTL_MS)
    assert ok and lease.holder == ACTIVE
    epoch = lease.epoch

    async def record(standby: str, in_sync: bool) -> bool:
        return await store.set_in_sync(GROUP, ACTIVE, epoch, standby, in_sync, TTL_MS)

    passive = await nodes.passive()
    recorder = Recorder(record)
    active = nodes.active(passive.address, epoch=epoch, recorder=recorder)
    assert await store.in_sync_nodes(GROUP) == {}

    writers = Writers(active)
    await recorder.wait_recorded(True)
    assert await store.in_sync_nodes(GROUP) == {PASSIVE: epoch}
    await writers.wait_acks(50, "in sync")

    await passive.stop()
    lost = await recorder.wait_recorded(False)
    assert await store.in_sync_nodes(GROUP) == {}
    await writers.wait_acks(50, "degraded")

    await passive.start()
    await recorder.wait_recorded(True, after=lost)
    assert await store.in_sync_nodes(GROUP) == {PASSIVE: epoch}
    await writers.stop()
    await active.wait_caught_up(lambda: passive.wal.durable_end if passive.wal else -1)
    assert passive.wal is not None
    assert frames_of(passive.wal) == frames_of(active.wal)
    assert await store.in_sync_nodes(GROUP) == {PASSIVE: epoch}

    # Graceful shutdown: stopping the link is not losing the standby, so it stays
    # recorded, and the record is what lets it take over automatically once the lease
    # is released.
    await active.close()
    assert await store.in_sync_nodes(GROUP) == {PASSIVE: epoch}
    assert await store.release(GROUP, ACTIVE, epoch)
    ok, lease = await store.try_acquire(GROUP, PASSIVE, epoch, TTL_MS)
    assert ok and lease.holder == PASSIVE and lease.epoch == epoch + 1


async def test_lost_lease_freezes_commits(nodes: Nodes, store: SqlStore) -> None:
    """set_in_sync answers False once the lease is gone: the out-of-sync record never
    happens, so nothing the standby lacks is acknowledged (the node must fence itself)."""
    ok, lease = await store.try_acquire(GROUP, ACTIVE, 0, TTL_MS)
    assert ok
    epoch = lease.epoch

    async def record(standby: str, in_sync: bool) -> bool:
        return await store.set_in_sync(GROUP, ACTIVE, epoch, standby, in_sync, TTL_MS)

    passive = await nodes.passive()
    recorder = Recorder(record)
    active = nodes.active(passive.address, epoch=epoch, recorder=recorder)
    await recorder.wait_recorded(True)
    await active.append(events(10))
    assert await store.release(GROUP, ACTIVE, epoch)
    ok, _ = await store.try_acquire(GROUP, PASSIVE, epoch, TTL_MS)
    assert ok  # the standby took over

    await passive.stop()
    assert passive.wal is not None
    passive_end = passive.wal.durable_end
    index = await recorder.wait_recorded(False)
    assert not recorder.journal[index].ok  # asked and refused: the lease is gone
    assert await store.in_sync_nodes(GROUP) == {PASSIVE: epoch}  # unchanged
    blocked = asyncio.create_task(active.append(events(10)))
    await asyncio.sleep(0.3)  # proving an absence: nothing to await
    assert not blocked.done()
    assert active.link.committed <= passive_end
    blocked.cancel()
