"""Connections that end badly or at awkward moments: a stale active, a hung passive, and
stopping the active (graceful shutdown) in the middle of things."""

from __future__ import annotations

import asyncio
import signal
import socket

import pytest

from tests.e2e.cluster import (
    ACTIVE,
    PASSIVE,
    Cluster,
    Journal,
    Writers,
    caught_up,
    events,
    frames_in,
    frames_of,
    in_sync,
    is_role,
    send_buffer_bytes,
    until,
    waiting_appends,
    within,
)
from walrep.errors import NotActiveError
from walrep.node.role import Role


async def test_stale_active_does_not_disturb_the_current_one(cluster: Cluster) -> None:
    """An old active (right secret, lower epoch: it still believes in a lease of its own)
    keeps reconnecting to the passive; it is rejected without closing the current active's
    connection first."""
    admin = await cluster.admin()
    won, lease = await admin.try_acquire(cluster.group, ACTIVE, 0, 60_000)
    assert won and await admin.release(cluster.group, ACTIVE, lease.epoch)
    journal = Journal()
    current = await cluster.active(store=cluster.journaled(journal))
    assert current.epoch == 2
    passive = await cluster.passive()
    await journal.wait_recorded(True)
    await current.append(events(10))

    old = cluster.elsewhere("old-world")  # where the stale active still holds epoch 1
    stale = await old.active("stale")
    assert stale.epoch == 1
    await stale.append(events(10, "stale"))  # its own log: committed there, alone
    assert passive.address is not None
    await old.publish_fake(PASSIVE, passive.address[1])
    writers = Writers(current, journal, tasks=2)
    await until(
        passive,
        lambda n: n.core_.metrics["replication_rejected_stale_epoch"] >= 4,
        "stale active rejected",
    )
    await writers.wait_acks(20, "the current active keeps committing")
    await writers.stop()
    await until(stale, lambda n: n.core_.metrics["replication_peer_refused"] >= 4, "refusals")
    await stale.stop()
    assert journal.records() == [(PASSIVE, True)]  # never lost its standby
    assert current.core_.metrics["replication_standby_lost"] == 0
    await caught_up(current, passive)
    assert frames_of(passive.log) == frames_of(current.log)
    assert [r for r in passive.log.read() if r.event[1]["tag"] == "stale"] == []


async def test_stop_keeps_the_standby_in_sync(cluster: Cluster) -> None:
    """A graceful stop is not a standby loss: no out-of-sync record (it would keep the
    standby from taking over at once when the lease is released)."""
    journal = Journal()
    active = await cluster.active(store=cluster.journaled(journal))
    passive = await cluster.passive()
    await journal.wait_recorded(True)
    writers = Writers(active, journal, tasks=2)
    await writers.wait_acks(50, "in sync")
    await writers.stop()
    epoch = active.epoch
    await active.stop()
    assert journal.records("record-start") == [(PASSIVE, True)]
    assert await cluster.in_sync_nodes() == {PASSIVE: epoch}
    await until(passive, is_role(Role.ACTIVE), "the standby takes over at once")
    assert passive.epoch == epoch + 1
    assert passive.log.log_end == active.log.log_end


async def test_stop_fails_waiting_appends(cluster: Cluster) -> None:
    active = await cluster.active(shipper={"degrade": False})
    passive = await cluster.passive()
    await until(active, in_sync, "the passive is recorded in sync")
    await active.append(events(10))
    await passive.stop()
    waiting = [asyncio.create_task(active.append(events(10))) for _ in range(3)]
    await until(active, lambda n: waiting_appends(n) == 3, "appended locally, waiting")
    assert active.log.log_end == 40
    await within(active.stop(), "stop")
    for task in waiting:
        with pytest.raises(NotActiveError):
            await within(task, "a waiting append is answered")
    with pytest.raises(NotActiveError):
        await active.append(events(1))  # after stop


async def test_stop_while_looking_up_the_peer(cluster: Cluster) -> None:
    """stop() while the peer's address is being looked up (a store query that takes its
    time): stop returns within the call timeout, and no session is ever started."""
    store = cluster.journaled()
    active = await cluster.active(store=store, call_timeout_ms=300)
    store.hold("nodes")  # the active looks for a peer that has not published its row yet
    await store.wait_waiting("nodes")
    passive = await cluster.passive()
    await within(active.stop(), "stop while the lookup hangs", 3.0)
    store.unhold("nodes")
    # Every task of a stopped node has been awaited: nothing can connect from now on.
    assert active.core_.metrics["replication_connections"] == 0
    assert passive.core_.receiving.conns == {}


async def test_hung_passive_with_buffered_data_is_dropped(cluster: Cluster) -> None:
    """The passive hangs (SIGSTOP) with megabytes still in the active's send buffer: on the
    standby timeout the active must let the connection go at once (reconnect attempts,
    and stop) instead of waiting for a peer that does not read."""
    window = 8 * 1024 * 1024
    active = await cluster.active(
        shipper={"window_bytes": window, "window_batches": 1000, "standby_timeout_ms": 300}
    )
    passive = await cluster.process(rcvbuf=64 * 1024)
    await until(active, in_sync, "the passive is recorded in sync")
    passive.signal(signal.SIGSTOP)
    batch = events(2000, pad=128)  # ~0.5 MiB frames
    frame = len(active.log.encode(batch).payload) + 64
    most = 0

    async def sample() -> None:  # the window also bounds the active's own send buffer
        nonlocal most
        while True:
            most = max(most, send_buffer_bytes(active) or 0)
            await asyncio.sleep(0.001)

    sampler = asyncio.create_task(sample())
    publishers = [asyncio.create_task(active.append(batch)) for _ in range(40)]
    assert 40 * frame > 2 * window
    await until(active, lambda _: most > 2 * 1024 * 1024, "megabytes wait in the send buffer")
    await until(active, lambda n: not in_sync(n), "recorded out of sync (degrade)")
    await within(asyncio.gather(*publishers), "publishers acknowledged (degraded)")
    await until(
        active,
        lambda n: n.core_.metrics["replication_standby_timeout"] >= 2,
        "the active gave up the hung connection and tried again",
    )
    await within(active.stop(), "stop while the passive is still hung", 5.0)
    sampler.cancel()
    assert most <= window + 1024, most  # Append headers and a few heartbeats
    passive.signal(signal.SIGCONT)
    await passive.terminate()
    survived = frames_in(passive.directory)
    assert survived == frames_in(cluster.root / ACTIVE)[: len(survived)]


async def test_row_of_a_departed_node_does_not_hide_the_live_passive(cluster: Cluster) -> None:
    """A node replaced under a new id leaves its row behind (nothing deletes node rows).
    The live passive keeps its row fresh (a heartbeat every 200 ms); the departed one's
    never changes again. The active must find the live one."""
    active = await cluster.active()
    with socket.socket() as s:  # a port nobody listens on any more
        s.bind(("127.0.0.1", 0))
        departed_port = s.getsockname()[1]
    await cluster.publish_fake("0-departed", departed_port)  # sorts before "p"
    await cluster.passive()
    await until(
        active,
        lambda n: in_sync(n) or n.core_.metrics["replication_connect_failures"] >= 10,
        "the live passive is in sync, or ten connects to the departed one failed",
    )
    assert in_sync(active), active.core_.metrics
