"""One contract suite for every coordination store: memory, SQLite, MariaDB, PostgreSQL.

Expiry is on the store's clock, so the SQL backends are given a 1 ms TTL and a short
real wait where a test needs an expired lease; the in-memory store gets a clock that
the test moves.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.services import sql_store
from walrep.errors import CoordinationError
from walrep.replica.store import CoordinationStore, MemoryStore, NodeInfo

BACKENDS = ["memory", "sqlite", "mariadb", "postgresql"]
TTL_MS = 60_000


class Harness:
    """A store plus a way to let a lease expire on the store's own clock."""

    def __init__(self, store: CoordinationStore, clock: list[int] | None) -> None:
        self.store = store
        self._clock = clock
        self.group = f"g-{uuid.uuid4().hex[:12]}"

    async def pass_time(self, ms: int) -> None:
        if self._clock is not None:
            self._clock[0] += ms
        else:
            await asyncio.sleep(ms / 1000)

    async def expired_lease(self, node: str, epoch: int) -> None:
        """Give ``node`` the lease under ``epoch + 1`` with a 1 ms TTL, then let it lapse."""
        won, seen = await self.store.try_acquire(self.group, node, epoch, 1, force=True)
        assert won and seen.epoch == epoch + 1
        await self.pass_time(20)


@pytest.fixture(params=BACKENDS)
async def h(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    if request.param == "memory":
        clock = [1_000_000]
        harness = Harness(MemoryStore(lambda: clock[0]), clock)
    else:
        harness = Harness(sql_store(request.param, tmp_path), None)
    await harness.store.setup()
    yield harness
    await harness.store.close()


async def test_first_acquire_of_a_group_wins_epoch_1(h: Harness) -> None:
    won, seen = await h.store.try_acquire(h.group, "a", 0, TTL_MS)
    assert won and (seen.holder, seen.epoch) == ("a", 1)
    assert seen.expires_at_ms - seen.db_now_ms <= TTL_MS
    assert seen.expires_at_ms > seen.db_now_ms
    [entry] = await h.store.history(h.group)
    assert (entry.epoch, entry.from_node, entry.to_node) == (1, None, "a")


async def test_a_valid_lease_cannot_be_taken_and_stale_epochs_lose(h: Harness) -> None:
    assert (await h.store.try_acquire(h.group, "a", 0, TTL_MS))[0]
    won, seen = await h.store.try_acquire(h.group, "b", 1, TTL_MS, force=True)
    assert not won and (seen.holder, seen.epoch) == ("a", 1)
    won, seen = await h.store.try_acquire(h.group, "a", 0, TTL_MS)  # stale expected epoch
    assert not won and seen.epoch == 1


async def test_the_holder_reacquiring_bumps_the_epoch(h: Harness) -> None:
    assert (await h.store.try_acquire(h.group, "a", 0, TTL_MS))[0]
    won, seen = await h.store.try_acquire(h.group, "a", 1, TTL_MS)
    assert won and seen.epoch == 2
    assert "last holder" in (await h.store.history(h.group))[0].reason


async def test_after_expiry_only_an_in_sync_standby_takes_over(h: Harness) -> None:
    await h.expired_lease("a", 0)
    won, seen = await h.store.try_acquire(h.group, "b", 1, TTL_MS)
    assert not won and seen.holder == "a", "an out-of-sync standby must not promote automatically"

    assert (await h.store.try_acquire(h.group, "a", 1, TTL_MS))[0]  # a again, epoch 2
    assert await h.store.set_in_sync(h.group, "a", 2, "b", True, 1)
    assert await h.store.in_sync_nodes(h.group) == {"b": 2}
    await h.pass_time(20)
    won, seen = await h.store.try_acquire(h.group, "b", 2, TTL_MS)
    assert won and (seen.holder, seen.epoch) == ("b", 3)
    assert "expired" in (await h.store.history(h.group))[0].reason


async def test_in_sync_records_of_an_older_epoch_do_not_count(h: Harness) -> None:
    assert (await h.store.try_acquire(h.group, "a", 0, TTL_MS))[0]
    assert await h.store.set_in_sync(h.group, "a", 1, "b", True, TTL_MS)
    await h.expired_lease("a", 1)  # a re-acquires (epoch 2): b's record is from epoch 1
    won, _ = await h.store.try_acquire(h.group, "b", 2, TTL_MS)
    assert not won


async def test_forced_takeover_of_an_out_of_sync_standby_is_recorded_with_the_loss(
    h: Harness,
) -> None:
    assert (await h.store.try_acquire(h.group, "a", 0, TTL_MS))[0]
    await h.expired_lease("a", 1)
    won, seen = await h.store.try_acquire(h.group, "b", 2, TTL_MS, force=True)
    assert won and seen.epoch == 3
    latest = (await h.store.history(h.group))[0]
    assert (latest.from_node, latest.to_node, latest.epoch) == ("a", "b", 3)
    assert "FORCED" in latest.reason and "may be lost" in latest.reason


async def test_maintenance_blocks_automatic_takeover_but_not_force(h: Harness) -> None:
    assert (await h.store.try_acquire(h.group, "a", 0, TTL_MS))[0]
    assert await h.store.set_in_sync(h.group, "a", 1, "b", True, 1)
    await h.store.set_maintenance(h.group, True)
    await h.pass_time(20)
    won, seen = await h.store.try_acquire(h.group, "b", 1, TTL_MS)
    assert not won and seen.maintenance
    await h.store.set_maintenance(h.group, False)
    won, seen = await h.store.try_acquire(h.group, "b", 1, TTL_MS)
    assert won and not seen.maintenance


async def test_renew_only_for_the_unexpired_holder_of_the_epoch(h: Harness) -> None:
    assert (await h.store.try_acquire(h.group, "a", 0, TTL_MS))[0]
    assert await h.store.renew(h.group, "a", 1, TTL_MS)
    assert not await h.store.renew(h.group, "b", 1, TTL_MS)
    assert not await h.store.renew(h.group, "a", 2, TTL_MS)
    await h.expired_lease("a", 1)
    assert not await h.store.renew(h.group, "a", 2, TTL_MS), "an expired lease must be re-acquired"


async def test_release_lets_an_in_sync_peer_take_over_at_once(h: Harness) -> None:
    assert (await h.store.try_acquire(h.group, "a", 0, TTL_MS))[0]
    assert await h.store.set_in_sync(h.group, "a", 1, "b", True, TTL_MS)
    assert not await h.store.release(h.group, "b", 1)
    assert await h.store.release(h.group, "a", 1)
    won, seen = await h.store.try_acquire(h.group, "b", 1, TTL_MS)
    assert won and seen.holder == "b"
    assert "released" in (await h.store.history(h.group))[0].reason


async def test_in_sync_changes_need_the_unexpired_lease_and_extend_it(h: Harness) -> None:
    assert (await h.store.try_acquire(h.group, "a", 0, 1))[0]
    await h.pass_time(20)
    assert not await h.store.set_in_sync(h.group, "a", 1, "b", True, TTL_MS), "expired lease"
    assert (await h.store.try_acquire(h.group, "a", 1, 300))[0]
    assert await h.store.set_in_sync(h.group, "a", 2, "b", True, TTL_MS)  # extends to TTL_MS
    await h.pass_time(400)  # past the 300 ms of the acquire
    assert await h.store.renew(h.group, "a", 2, TTL_MS), "set_in_sync must have extended the lease"
    assert not await h.store.set_in_sync(h.group, "b", 2, "a", True, TTL_MS), "not the holder"
    assert await h.store.set_in_sync(h.group, "a", 2, "b", False, TTL_MS)
    assert await h.store.in_sync_nodes(h.group) == {}


async def test_nodes_publish_their_details_on_the_store_clock(h: Harness) -> None:
    info = NodeInfo("b", "passive", "10.0.0.2", 9894, "http://10.0.0.2:9090", log_end=42, acked=40)
    await h.store.publish_node(h.group, info)
    await h.store.publish_node(h.group, NodeInfo("a", "active"))
    await h.store.publish_node(h.group, info)  # upsert, not a second row
    rows = await h.store.nodes(h.group)
    assert [r.info.node_id for r in rows] == ["a", "b"]
    assert rows[1].info == info
    assert 0 <= rows[1].heartbeat_age_ms < 10_000


async def test_groups_are_independent_and_setup_is_idempotent(h: Harness) -> None:
    await h.store.setup()
    other = f"{h.group}-other"
    assert (await h.store.try_acquire(h.group, "a", 0, TTL_MS))[0]
    won, seen = await h.store.try_acquire(other, "b", 0, TTL_MS)
    assert won and seen.epoch == 1
    assert (await h.store.read_lease(h.group)).holder == "a"


async def test_the_store_clock_does_not_go_backwards(h: Harness) -> None:
    readings = [await h.store.db_now_ms() for _ in range(5)]
    assert readings == sorted(readings)


@pytest.mark.parametrize("backend", ["sqlite", "mariadb", "postgresql"])
async def test_a_newer_schema_version_is_refused(backend: str, tmp_path: Path) -> None:
    store = sql_store(backend, tmp_path)
    prefix = f"wv{uuid.uuid4().hex[:8]}_"
    store = type(store)(store.engine, table_prefix=prefix, call_timeout_ms=5000)
    try:
        await store.setup()
        async with store.engine.begin() as conn:
            await conn.execute(store.version.update().values(version=99))
        with pytest.raises(CoordinationError) as info:
            await store.setup()
        assert not info.value.retriable and "99" in str(info.value)
    finally:
        async with store.engine.begin() as conn:
            await conn.run_sync(store.metadata.drop_all)
        await store.close()


def test_memory_store_reads_only_its_clock() -> None:
    clock = [5]
    store = MemoryStore(lambda: clock[0])
    assert asyncio.run(store.db_now_ms()) == 5 and abs(time.time() * 1000 - 5) > 1e9
