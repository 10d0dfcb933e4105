"""Faults of the node itself, not of its peer: its own disk fails, its store adapter has a
bug, it is stopped before (or while) it starts."""

from __future__ import annotations

import asyncio
import errno
import logging

import pytest

from tests.e2e.cluster import (
    ACTIVE,
    PASSIVE,
    Cluster,
    FailingSync,
    Journal,
    events,
    in_sync,
    is_role,
    until,
    within,
)
from walrep.errors import InternalError, LogFailedError, NotActiveError
from walrep.node.role import Role
from walrep.replica.lease import Phase


def peer_blamed(metrics: dict[str, int]) -> dict[str, int]:
    """Counters that blame the other side (garbage, refusals, protocol errors)."""
    words = ("replication_errors", "rejected", "refused", "wrong_peer", "malformed")
    return {k: v for k, v in metrics.items() if v and any(w in k for w in words)}


async def test_passive_log_failure_fences_the_passive_not_the_active(cluster: Cluster) -> None:
    """An fsync error on the passive (EIO through the log's fault seam) is the passive's
    own failure: it is FENCED with the error in ``failure``, counts nothing against the
    active, stops following the lease; the active records it out of sync and goes on."""
    journal = Journal()
    active = await cluster.active(store=cluster.journaled(journal))
    disk = FailingSync()
    passive = await cluster.passive(file_ops=disk)
    await journal.wait_recorded(True)
    await active.append(events(10))

    disk.armed = True
    result = await within(active.append(events(10)), "acknowledged once recorded out of sync")
    await until(passive, is_role(Role.FENCED), "the passive fails on its own disk")
    assert result.end_offset == 20
    assert isinstance(passive.failure, LogFailedError), passive.failure
    cause = passive.failure.__cause__
    assert isinstance(cause, OSError) and cause.errno == errno.EIO, cause
    assert disk.failures >= 1
    assert passive.core_.metrics["node_local_failures"] == 1
    assert peer_blamed(passive.core_.metrics) == {}
    assert passive.core_.lease.phase is Phase.STOPPED  # it will not try to take over
    assert passive.log.durable_end == 10

    assert active.role is Role.ACTIVE and active.failure is None
    assert peer_blamed(active.core_.metrics) == {}
    assert journal.records() == [(PASSIVE, True), (PASSIVE, False)]
    assert await cluster.in_sync_nodes() == {}
    assert (await active.append(events(10))).end_offset == 30  # degraded, alone


@pytest.mark.parametrize("op", ["renew", "publish_node"])
async def test_unexpected_store_exception_fails_the_node_loudly(
    cluster: Cluster, op: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A store call that raises something no walrep code expects (a driver bug) kills its
    task: the node fails loudly — FENCED with an ``InternalError``, its lease released so
    the in-sync standby takes over at once — instead of waiting forever for the answer."""
    caplog.set_level(logging.ERROR, logger="walrep.node")
    store = cluster.journaled()
    active = await cluster.active(store=store)
    passive = await cluster.passive()
    await until(active, in_sync, "the passive is recorded in sync")
    await active.append(events(10))

    bug = RuntimeError(f"driver bug in {op}")
    store.break_op(op, bug)
    await until(active, is_role(Role.FENCED), "the node fails")
    assert isinstance(active.failure, InternalError), active.failure
    assert active.failure.__cause__ is bug
    assert any("died" in r.getMessage() for r in caplog.records), caplog.text
    await until(passive, is_role(Role.ACTIVE), "the standby takes over")
    history = await (await cluster.admin()).history(cluster.group)
    assert history[0].to_node == PASSIVE and "released" in history[0].reason, history
    with pytest.raises(NotActiveError):
        await active.append(events(1))


async def test_stop_before_start_wins(cluster: Cluster) -> None:
    node = cluster.node(ACTIVE)
    await within(node.stop(), "stop of a node never started")
    await within(node.start(), "start after stop returns")
    assert node.core is None and node.address is None  # nothing was ever served
    with pytest.raises(NotActiveError):  # a typed, retriable answer to a publisher
        await node.append(events(1))
    await never_took_the_lease(cluster)


async def test_stop_while_starting_wins(cluster: Cluster) -> None:
    """stop() while start() waits for the store (creating its tables): start must give up
    instead of going on to follow the lease with a stopped node."""
    store = cluster.journaled()
    store.hold("setup")
    node = cluster.node(ACTIVE, store=store)
    starting = asyncio.create_task(node.start())
    await store.wait_waiting("setup")
    stopping = asyncio.create_task(node.stop())
    await asyncio.sleep(0)  # let stop() begin: it marks the node as stopping at once
    store.unhold("setup")
    await within(starting, "start returns")
    await within(stopping, "stop returns")
    assert node.core is None  # the node core never ran
    assert store.calls["try_acquire"] == 0 and store.calls["publish_node"] == 0
    await never_took_the_lease(cluster)


async def never_took_the_lease(cluster: Cluster) -> None:
    """A positive check: another node becomes the group's first holder, under epoch 1."""
    other = await cluster.active("b")
    assert other.epoch == 1
    history = await (await cluster.admin()).history(cluster.group)
    assert [(row.to_node, row.reason) for row in history] == [("b", "first holder of the group")]
