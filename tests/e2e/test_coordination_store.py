"""The coordination store under real nodes, on each real store (SQLite, MariaDB,
PostgreSQL): in-sync records as the active makes them, a lease lost under the active, and
the lease gate when the database stops answering."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.e2e.cluster import (
    ACTIVE,
    CALL_TIMEOUT_MS,
    FAST_EXPIRY,
    PASSIVE,
    Cluster,
    Journal,
    Writers,
    caught_up,
    events,
    frames_of,
    in_sync,
    is_role,
    store_until,
    until,
    waiting_appends,
    within,
)
from tests.replica.tcp_proxy import TcpProxy
from tests.services import TABLE_PREFIX, require_service
from walrep.db import create_engine, normalize_url
from walrep.errors import NotActiveError
from walrep.node.role import Role
from walrep.replica.sql_store import SqlStore


async def test_in_sync_record_in_the_store(any_cluster: Cluster) -> None:
    cluster = any_cluster
    active = await cluster.active()
    epoch = active.epoch
    assert epoch == 1
    assert await cluster.in_sync_nodes() == {}
    passive = await cluster.passive()

    writers = Writers(active)
    await until(active, in_sync, "the passive is recorded in sync")
    assert await cluster.in_sync_nodes() == {PASSIVE: epoch}
    await writers.wait_acks(50, "in sync")

    await passive.stop()
    await until(active, lambda n: not in_sync(n), "the standby is lost")
    await store_until(lambda: cluster.in_sync_are({}), "the standby is recorded out of sync")
    await writers.wait_acks(50, "degraded")

    passive = await cluster.passive()
    await until(active, in_sync, "recorded in sync again")
    assert await cluster.in_sync_nodes() == {PASSIVE: epoch}
    await writers.stop()
    await caught_up(active, passive)
    assert frames_of(passive.log) == frames_of(active.log)

    # Graceful shutdown: stopping is not losing the standby, so it stays recorded, and the
    # record is what lets it take over at once when the lease is released.
    await active.stop()
    await until(passive, is_role(Role.ACTIVE), "the in-sync standby takes over")
    assert passive.epoch == epoch + 1
    history = await (await cluster.admin()).history(cluster.group)
    assert history[0].to_node == PASSIVE and "released" in history[0].reason, history


async def test_lost_lease_freezes_commits(any_cluster: Cluster) -> None:
    """The lease is taken from under the active (maintenance on, released and
    force-acquired by another node: direct store calls) while its renews hang: its
    out-of-sync record is refused, so nothing the standby lacks is acknowledged; the node
    fences itself and every waiting append fails with ``NotActiveError``."""
    cluster = any_cluster
    journal = Journal()
    store = cluster.journaled(journal)
    active = await cluster.active(store=store, lease={"lease_ttl_ms": 10_000})
    passive = await cluster.passive()
    await journal.wait_recorded(True)
    await active.append(events(10))
    epoch = active.epoch

    store.hold("renew")  # the active does not learn of the loss from a renew
    admin = await cluster.admin()
    await admin.set_maintenance(cluster.group, True)  # the standby may not take it
    assert await admin.release(cluster.group, ACTIVE, epoch)
    won, lease = await admin.try_acquire(cluster.group, "x", epoch, 60_000, force=True)
    assert won and lease.holder == "x"

    await passive.stop()
    passive_end = passive.log.durable_end
    blocked = asyncio.create_task(active.append(events(10)))
    index = await journal.wait_recorded(False)
    assert not journal.entries[index].ok  # asked and refused: the lease is gone
    await until(active, lambda n: n.role is not Role.ACTIVE, "the active fences itself")
    with pytest.raises(NotActiveError):
        await within(blocked, "the waiting append is answered")
    assert active.committed <= passive_end
    assert await cluster.in_sync_nodes() == {PASSIVE: epoch}  # unchanged
    with pytest.raises(NotActiveError):
        await active.append(events(1))
    store.unhold("renew")


# --- the lease gate when the database stops answering ------------------------------------------

SERVERS = ["mariadb", "postgresql"]


@pytest.fixture(params=SERVERS)
async def proxied(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Cluster, TcpProxy, SqlStore]]:
    """A cluster on a database server, and a store that reaches it through a proxy."""
    backend = str(request.param)
    url = make_url(str(normalize_url(require_service(backend))))
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 0)
    await proxy.start()
    engine = create_engine(
        url.set(host="127.0.0.1", port=proxy.port), connect_timeout_ms=CALL_TIMEOUT_MS
    )
    store = SqlStore(engine, table_prefix=TABLE_PREFIX, call_timeout_ms=CALL_TIMEOUT_MS)
    cluster = Cluster(tmp_path, backend)
    yield cluster, proxy, store
    await proxy.restore()
    await cluster.close()
    await proxy.close()


async def test_database_outage_fences_the_active_and_fails_waiting_appends(
    proxied: tuple[Cluster, TcpProxy, SqlStore],
) -> None:
    """Commits are held (``block``, the passive SIGSTOPped), then the database stops
    answering the active: it fences itself within its lease's own-clock validity, every
    waiting append fails with ``NotActiveError``, and nothing is acknowledged after."""
    cluster, proxy, store = proxied
    active = await cluster.active(
        store=store, shipper={"degrade": False}, lease=FAST_EXPIRY, call_timeout_ms=500
    )
    passive = await cluster.process()
    await until(active, in_sync, "the passive is recorded in sync")
    committed = (await active.append(events(10))).end_offset

    passive.signal(signal.SIGSTOP)
    waiting = [asyncio.create_task(active.append(events(10))) for _ in range(4)]
    await until(active, lambda n: waiting_appends(n) == 4, "four appends wait for a commit")
    assert active.committed == committed

    proxy.hang()
    await until(active, lambda n: n.role is not Role.ACTIVE, "the active fences itself")
    for task in waiting:
        with pytest.raises(NotActiveError):
            await within(task, "a waiting append is answered")
    assert active.committed == committed
    with pytest.raises(NotActiveError):
        await active.append(events(1))
    assert active.log.log_end == committed + 40  # written locally, never acknowledged
    assert active.core_.metrics["store_renew_failures"] >= 1
