"""Failover with real processes: the lease, the in-sync rule and the logs decide together.

* A passive whose data directory was wiped while it was down is not recorded in sync
  before it has caught up, so a kill of the active meanwhile does not promote it; the
  killed node, restarted, takes the lease back (its last holder) and nothing it
  acknowledged is lost.
* The in-sync standby takes over from a SIGKILLed active; its own standby (the old active,
  still down) never connects, which does not hold its commits; the old active returns as
  passive, its unacknowledged tail is cut (KIP-101) and it catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from typing import Any

import pytest

from tests.e2e.cluster import (
    ACTIVE,
    FAST_EXPIRY,
    PASSIVE,
    Cluster,
    NodeProcess,
    events,
    frames_in,
    frames_of,
    in_sync,
    is_role,
    shipper,
    store_until,
    until,
    wait_until,
)
from walrep.log.wal import Wal
from walrep.node.role import Role
from walrep.node.runtime import Node
from walrep.replica.shipper import Standby


class InSyncWatch:
    """Polls the store all along: whenever ``passive`` is recorded in sync, it must hold
    every event the active has acknowledged so far (invariant 1 as the store sees it)."""

    def __init__(self, cluster: Cluster, passive: Node, active: NodeProcess) -> None:
        self.cluster, self.passive, self.active = cluster, passive, active
        self.violations: list[str] = []
        self.seen_in_sync = 0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            records = await self.cluster.in_sync_nodes()
            if PASSIVE in records:
                self.seen_in_sync += 1
                acked = self.active.acked_end
                durable = self.passive.log.durable_end  # read after the store answered
                if durable < acked:
                    self.violations.append(f"in sync {records} with {durable} < acked {acked}")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        assert not self.violations, self.violations[:5]


def refused_an_expired_lease(node: Node) -> bool:
    """The node's last acquire saw the lease expired (store clock) and still lost."""
    seen = node.core_.lease.observed
    return (
        seen is not None
        and seen.holder == ACTIVE
        and seen.db_now_ms >= seen.expires_at_ms
        and node.role is Role.PASSIVE
    )


@pytest.mark.parametrize("policy", ["degrade", "block"])
async def test_wiped_passive_is_not_promoted_before_it_caught_up(
    cluster: Cluster, policy: str
) -> None:
    spec: dict[str, Any] = {"shipper": {"degrade": policy == "degrade"}, "lease": FAST_EXPIRY}
    active = await cluster.process(ACTIVE, **spec)
    await active.wait_role("ACTIVE")
    passive = await cluster.passive(**spec)
    await store_until(lambda: cluster.in_sync_are({PASSIVE: 1}), "the passive in sync")
    for _ in range(20):
        await active.append(100, "before")
    active.publish(2)
    await active.wait_acked(100, "publishers run")

    await passive.stop()
    shutil.rmtree(passive.data_dir)  # the disk was replaced while the node was down
    gate = cluster.gated()
    gate.close_gate()  # nothing the new passive receives becomes durable for now
    passive = await cluster.passive(file_ops=gate, **spec)
    # degrade: recorded out of sync when it went away; block: once it is back and says
    # it lacks committed events (the record is kept while it is down, by design).
    await store_until(lambda: cluster.in_sync_are({}), "the wiped passive is out of sync")
    watch = InSyncWatch(cluster, passive, active)
    await wait_until(
        lambda: passive.core_.receiving.appends_in_flight > 0, "catch-up frames arrive"
    )
    assert passive.log.durable_end == 0
    acked_before_kill = active.acked_end

    await active.kill()
    await store_until(cluster.lease_expired, "the killed active's lease expires in the store")
    held = passive.core_.metrics["acquire_held_back"]
    await until(
        passive,
        lambda n: refused_an_expired_lease(n) or n.core_.metrics["acquire_held_back"] > held + 2,
        "the passive tries and is refused (or, knowing its directory lost data, holds back)",
    )
    assert (await cluster.in_sync_nodes()) == {}
    assert passive.role is Role.PASSIVE and passive.epoch <= 1

    await active.start()  # the same directory: it re-acquires as the last holder
    await active.wait_role("ACTIVE")
    assert active.epoch == 2
    gate.open_gate()
    await store_until(lambda: cluster.in_sync_are({PASSIVE: 2}), "in sync once caught up")
    base, end = await active.append(10, "after")
    assert base >= acked_before_kill
    await until(passive, lambda n: n.log.durable_end >= end, "the passive holds the last ack")
    # The watch polls the store on its own: let it check the in-sync record at least once
    # (on a loaded machine its poll may come after the lines above).
    await wait_until(lambda: watch.seen_in_sync > 0, "the watch saw the in-sync record")
    await watch.stop()
    await passive.stop()
    await active.terminate()
    with Wal.open(cluster.root / ACTIVE) as wal:
        active.check_acknowledged(wal)  # nothing acknowledged, in either run, was lost
        assert frames_in(passive.data_dir) == frames_of(wal)


async def test_in_sync_standby_takes_over_and_the_old_active_returns(cluster: Cluster) -> None:
    """SIGKILL of the active: the in-sync standby promotes once the lease expires. The
    new active's standby (the old active) is down and never connects; that does not hold
    its commits (nobody is in sync under a new epoch). The old active, restarted, comes
    back as passive, its unacknowledged tail is cut and it is recorded in sync."""
    old = await cluster.process(ACTIVE, lease=FAST_EXPIRY)
    await old.wait_role("ACTIVE")
    passive = await cluster.passive(lease=FAST_EXPIRY)
    await store_until(lambda: cluster.in_sync_are({PASSIVE: 1}), "the passive in sync")
    old.publish(4)
    await old.wait_acked(300, "publishers run")

    await old.kill()
    await until(passive, is_role(Role.ACTIVE), "the in-sync standby takes over")
    new = passive
    assert new.epoch == 2
    old.check_acknowledged(new.log)  # every acknowledged event is on the new active
    result = await new.append(events(10, "new"))  # at once: the old active is not awaited
    assert shipper(new).standby_state is Standby.OUT_OF_SYNC
    assert result.base_offset >= old.acked_end
    await until(
        new,
        lambda n: n.core_.metrics["replication_connect_failures"] >= 1,
        "it tries the old active's address, which refuses",
    )

    await old.start()  # the old active returns as passive
    await old.wait_role("PASSIVE")
    await until(new, in_sync, "the old active is recorded in sync under epoch 2")
    assert (await cluster.in_sync_nodes())[ACTIVE] == 2  # (older epochs' records do not count)
    end = (await new.append(events(10, "in sync"))).end_offset
    await until(new, lambda n: shipper(n).acked >= end, "the old active acked the last append")
    await old.terminate()
    survivors = frames_in(old.directory)
    assert survivors == frames_of(new.log)[: len(survivors)]
    assert len(survivors) == len(frames_of(new.log))


async def test_restarted_active_does_not_wait_for_a_standby_that_never_connects(
    cluster: Cluster,
) -> None:
    """``block``: the standby stops (it stays recorded in sync: commits wait for it); the
    active is killed and restarted while the standby is still down. Its new term (epoch 2)
    counts nobody in sync (an epoch-1 record no longer counts), so it commits at once
    without the standby that never connects; once the standby is back it catches up and
    is recorded in sync under epoch 2, with everything acknowledged in both terms."""
    spec: dict[str, Any] = {"shipper": {"degrade": False}}
    active = await cluster.process(ACTIVE, **spec)
    await active.wait_role("ACTIVE")
    passive = await cluster.passive(**spec)
    await store_until(lambda: cluster.in_sync_are({PASSIVE: 1}), "the passive in sync")
    for _ in range(5):
        await active.append(100, "epoch-1")
    await passive.stop()
    assert await cluster.in_sync_nodes() == {PASSIVE: 1}  # block: still counted for epoch 1

    await active.kill()
    await active.start()
    await active.wait_role("ACTIVE")
    assert active.epoch == 2
    base, end = await active.append(100, "epoch-2")  # committed without the standby
    assert base == 500
    assert await cluster.in_sync_nodes() == {PASSIVE: 1}  # stale: the lease is at epoch 2

    passive = await cluster.passive(**spec)
    await store_until(lambda: cluster.in_sync_are({PASSIVE: 2}), "in sync under epoch 2")
    await until(passive, lambda n: n.log.durable_end >= end, "the passive holds everything")
    active.check_acknowledged(passive.log)


async def test_wiped_passive_recorded_in_sync_is_not_promoted(cluster: Cluster) -> None:
    """``block`` keeps a standby that went away recorded in sync (it holds everything
    committed, by design). If its directory is wiped meanwhile and the active dies before
    the standby reconnects, the record is stale: the standby must not take over."""
    spec: dict[str, Any] = {"shipper": {"degrade": False}, "lease": FAST_EXPIRY}
    active = await cluster.process(ACTIVE, **spec)
    await active.wait_role("ACTIVE")
    passive = await cluster.passive(**spec)
    await store_until(lambda: cluster.in_sync_are({PASSIVE: 1}), "the passive in sync")
    for _ in range(5):
        await active.append(100, "acknowledged")
    await passive.stop()
    shutil.rmtree(passive.data_dir)
    await active.kill()

    passive = await cluster.passive(**spec)
    # The store would let it in (it is recorded in sync, the lease expired): the node
    # itself holds back, because it can tell its directory lost what it held.
    lease = await (await cluster.admin()).read_lease(cluster.group)
    await store_until(cluster.lease_expired, "the killed active's lease expires in the store")
    held = passive.core_.metrics["acquire_held_back"]
    await until(
        passive,
        lambda n: n.role is Role.ACTIVE or n.core_.metrics["acquire_held_back"] >= held + 3,
        "the wiped passive decides about the expired lease",
    )
    assert passive.role is Role.PASSIVE, (
        f"promoted with log_end={passive.log.log_end}; {active.acked_end} were acknowledged"
    )
    assert lease.holder == ACTIVE
