"""A database that refuses connections or stops answering: typed errors, self-fencing of
the active, no promotion of the passive. Real servers behind a loopback proxy."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.engine import make_url

from tests.replica.tcp_proxy import TcpProxy
from tests.services import TABLE_PREFIX, require_service
from walrep.db import create_engine, normalize_url
from walrep.errors import CoordinationError
from walrep.replica.coordinator import Coordinator
from walrep.replica.lease import LeaseTiming
from walrep.replica.sql_store import SqlStore

TIMING = LeaseTiming(
    heartbeat_interval_ms=100, lease_ttl_ms=600, safety_margin_ms=150, poll_interval_ms=50
)
SERVERS = ["mariadb", "postgresql"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def store_at(backend: str, port: int, call_timeout_ms: int = 400) -> SqlStore:
    url = make_url(str(normalize_url(require_service(backend)))).set(host="127.0.0.1", port=port)
    engine = create_engine(url, connect_timeout_ms=call_timeout_ms)
    return SqlStore(engine, table_prefix=TABLE_PREFIX, call_timeout_ms=call_timeout_ms)


@pytest.fixture(params=SERVERS)
async def proxy(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, TcpProxy]]:
    url = make_url(require_service(request.param))
    p = TcpProxy(url.host or "127.0.0.1", url.port or 0)
    await p.start()
    yield request.param, p
    await p.close()


@pytest.mark.parametrize("backend", SERVERS)
async def test_connection_refused_is_a_retriable_coordination_error(backend: str) -> None:
    store = store_at(backend, free_port())
    try:
        for call in (
            store.db_now_ms(),
            store.try_acquire("g", "a", 0, 1000),
            store.renew("g", "a", 1, 1000),
        ):
            with pytest.raises(CoordinationError) as info:
                await call
            assert info.value.retriable and info.value.__cause__ is not None
            assert "unavailable" in str(info.value) or "no answer" in str(info.value)
    finally:
        await store.close()


async def test_a_hanging_connection_times_out_as_a_coordination_error(
    proxy: tuple[str, TcpProxy],
) -> None:
    backend, p = proxy
    store = store_at(backend, p.port)
    try:
        await store.setup()
        p.hang()
        started = time.monotonic()
        with pytest.raises(CoordinationError) as info:
            await store.renew(f"g-{uuid.uuid4().hex[:8]}", "a", 1, 1000)
        assert info.value.retriable
        assert time.monotonic() - started < 2.0, "the call timeout must bound a hung call"
    finally:
        await p.restore()
        await store.close()


@pytest.mark.parametrize("outage", ["hang", "refuse"])
async def test_database_outage_fences_the_active_and_promotes_no_one(
    proxy: tuple[str, TcpProxy], outage: str
) -> None:
    backend, p = proxy
    group = f"outage-{uuid.uuid4().hex[:10]}"
    log: list[tuple[float, str, str]] = []
    promoted = asyncio.Event()

    def on_promoted(node: str, epoch: int) -> None:
        log.append((time.monotonic(), node, f"promoted {epoch}"))
        promoted.set()

    def coordinator(node: str) -> Coordinator:
        return Coordinator(
            store_at(backend, p.port),
            group,
            node,
            TIMING,
            on_promoted=lambda epoch: on_promoted(node, epoch),
            on_fenced=lambda epoch, why: log.append((time.monotonic(), node, f"fenced {epoch}")),
        )

    a = coordinator("a")
    await a.store.setup()
    run_a = asyncio.create_task(a.run())
    await asyncio.wait_for(promoted.wait(), 10)
    assert await a.set_in_sync("b", True)
    b = coordinator("b")
    run_b = asyncio.create_task(b.run())
    await asyncio.sleep(0.3)
    assert a.holds_lease() and not b.holds_lease()

    cut = time.monotonic()
    if outage == "hang":
        p.hang()
    else:
        await p.refuse()
    await asyncio.sleep(TIMING.lease_ttl_ms * 3 / 1000)
    fenced = [t for t, node, what in log if node == "a" and what == "fenced 1"]
    assert fenced and fenced[0] - cut <= (TIMING.valid_for_ms + 100) / 1000, log
    assert not a.holds_lease()
    assert [e for e in log if e[1] == "b"] == [], (
        "b must not promote while the database is unreachable"
    )

    promoted.clear()
    await p.restore()
    await asyncio.wait_for(promoted.wait(), 10)
    assert a.holds_lease() != b.holds_lease(), "exactly one holder once the database is back"
    epochs = [int(what.split()[1]) for _, _, what in log if what.startswith("promoted")]
    assert epochs == sorted(set(epochs)), "epochs strictly increase"
    for c, task in ((a, run_a), (b, run_b)):
        await c.stop()
        await task
        await c.store.close()
