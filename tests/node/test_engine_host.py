"""The engine in real nodes: a warm standby, snapshots in SQLite, an exactly-once sink,
failover and restart — the digests and the sink's rows equal a straight run's."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import sqlalchemy as sa
from aiohttp import web

from tests.services import sql_store
from walrep.db import create_engine, normalize_url
from walrep.engine.app import App, count, sum_
from walrep.engine.core import Engine
from walrep.engine.sinks.rdbms import RdbmsSink
from walrep.engine.sinks.webhook import WebhookSink
from walrep.engine.snapshots.db_store import DbSnapshotStore
from walrep.engine.timeunits import Duration
from walrep.errors import NondeterminismError
from walrep.log.frame import Event
from walrep.log.types import Record
from walrep.node.engine_host import DIGESTS_FILE, EngineHost
from walrep.node.role import Role
from walrep.node.runtime import Node
from walrep.node.settings import NodeSettings


def shop_app() -> App:
    app = App("shop", version="1")
    app.stream("Order", {"shop": "string", "amount": "long", "ts": "long"}, timestamp="ts")
    app.aggregation(
        "OrdersPerShop",
        from_="Order",
        group_by=["shop"],
        aggregates=[count("orders"), sum_("revenue", of="amount")],
        every=("sec", "day"),
        retention={"sec": None, "min": None, "hour": None, "day": None},
    )
    return app


def orders(start: int, n: int) -> list[Event]:
    base_ms = 1_767_225_600_000
    return [
        Event("Order", {"shop": f"s{i % 7}", "amount": i, "ts": base_ms + i * 137})
        for i in range(start, start + n)
    ]


def node(tmp_path: Path, name: str, *, interval_s: float = 0.2) -> Node:
    s = NodeSettings(group="group-1", node_id=name, secret=b"s")  # production lease timings
    url = normalize_url(f"sqlite:///{tmp_path / 'cluster.db'}")
    host = EngineHost(
        [shop_app()],
        store=DbSnapshotStore(create_engine(url), group_id="group-1"),
        sinks=[RdbmsSink(create_engine(normalize_url(f"sqlite:///{tmp_path / 'sink.db'}")))],
        snapshot_interval_s=interval_s,
        digest_interval=100,
    )
    return Node(s, tmp_path / name, sql_store("sqlite", tmp_path), own_store=True, engine=host)


def outputs_app() -> App:
    app = shop_app()
    app.output("BigOrder", from_="Order", where=lambda a: a["amount"] % 10 == 0)
    return app


def webhook_node(tmp_path: Path, name: str, url: str) -> Node:
    """A node whose one sink POSTs the app's outputs to ``url`` (no snapshots)."""
    s = NodeSettings(group="group-1", node_id=name, secret=b"s")  # production lease timings
    sink = WebhookSink(
        url, attempts_max=1000, backoff_initial_ms=20, backoff_max_ms=50, close_timeout_ms=300
    )
    host = EngineHost([outputs_app()], sinks=[sink], digest_interval=10**9)
    return Node(s, tmp_path / name, sql_store("sqlite", tmp_path), own_store=True, engine=host)


def bare_node(tmp_path: Path, name: str) -> Node:
    """A node whose engine keeps no snapshots: a restart replays from offset 0."""
    s = NodeSettings(group="group-1", node_id=name, secret=b"s")  # production lease timings
    host = EngineHost([shop_app()], digest_interval=100)
    return Node(s, tmp_path / name, sql_store("sqlite", tmp_path), own_store=True, engine=host)


def straight(n: int) -> Engine:
    engine = Engine([shop_app()], digest_interval=100)
    engine.apply([Record(i, 1, 0, e) for i, e in enumerate(orders(0, n))])
    return engine


def host(n: Node) -> EngineHost:
    assert n.engine_host is not None
    return n.engine_host


async def sink_rows(tmp_path: Path) -> set[tuple[object, ...]]:
    engine = create_engine(normalize_url(f"sqlite:///{tmp_path / 'sink.db'}"))
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(sa.text('SELECT * FROM "OrdersPerShop_SECONDS"'))
            return {tuple(r) for r in rows}
    finally:
        await engine.dispose()


async def test_failover_and_restart_keep_the_state_of_a_straight_run(tmp_path: Path) -> None:
    a, b = node(tmp_path, "a"), node(tmp_path, "b")
    try:
        await a.start()
        await a.wait_until(lambda n: n.role is Role.ACTIVE, 5)
        await b.start()
        for k in range(10):
            await a.append(orders(k * 50, 50))
        # The warm standby applies what it knows committed: it keeps up with the active.
        await b.wait_until(lambda n: host(n).engine_.applied == 500, 5)
        await a.wait_until(lambda n: host(n).last_snapshot is not None, 5)
        assert host(b).engine_.digest() == host(a).engine_.digest() == straight(500).digest()

        await a.stop()  # b takes over: nothing to replay
        await b.wait_until(lambda n: n.role is Role.ACTIVE, 5)
        assert [s.step for s in b.steps][2] == "catch_up"
        for k in range(10, 14):
            await b.append(orders(k * 50, 50))
        await b.wait_until(lambda n: host(n).engine_.applied == 700, 5)
        assert host(b).engine_.digest() == straight(700).digest()

        # The sink holds exactly the straight run's rows (nothing twice, nothing missed).
        rows = straight(700).aggregation("OrdersPerShop").rows(Duration.SECONDS, 0, 2**62)
        expected = {(r.agg_timestamp_ms, *r.key, *r.values) for r in rows}
        for _ in range(100):  # up to 5 s for the positive signal: the rows are all there
            if await sink_rows(tmp_path) == expected:
                break
            await asyncio.sleep(0.05)
        assert await sink_rows(tmp_path) == expected

        # a restarts from the newest snapshot it may use and replays the rest.
        a = node(tmp_path, "a")
        await a.start()
        await a.wait_until(lambda n: host(n).engine_.applied == 700, 5)
        assert host(a).engine_.digest() == straight(700).digest()
        assert host(a).last_snapshot is not None  # restored, not replayed from 0
        await host(a).drain_digests()  # hashed off the loop: wait for the last entry
        chain = (tmp_path / "a" / DIGESTS_FILE).read_text().splitlines()
        assert len(chain) == 7  # offsets 100 ... 700, each once across the restart
    finally:
        for n in (a, b):
            await n.stop()


async def test_a_digest_that_disagrees_with_the_recorded_chain_fences_the_node(
    tmp_path: Path,
) -> None:
    a, b = bare_node(tmp_path, "a"), bare_node(tmp_path, "b")
    try:
        await a.start()
        await a.wait_until(lambda n: n.role is Role.ACTIVE, 5)
        await b.start()
        for k in range(4):
            await a.append(orders(k * 50, 50))
        await a.wait_until(lambda n: host(n).engine_.applied == 200, 5)
        await host(a).drain_digests()
        chain_path = tmp_path / "a" / DIGESTS_FILE
        chain = chain_path.read_text().splitlines()
        assert [orjson.loads(line)["offset"] for line in chain] == [100, 200]
        assert orjson.loads(chain[0])["digest"] == straight(100).digest()
        await a.stop()
        await b.stop()

        # The recorded entry at 100 is edited: replaying the same records disagrees.
        forged = orjson.dumps({"offset": 100, "digest": "0" * 32}).decode()
        chain_path.write_text("\n".join([forged, *chain[1:]]) + "\n")
        a = bare_node(tmp_path, "a")
        await a.start()
        await a.wait_until(lambda n: n.failure is not None, 5)
        assert isinstance(a.failure, NondeterminismError)
        assert "offset 100" in str(a.failure)
        assert a.role is Role.FENCED
    finally:
        for n in (a, b):
            await n.stop()


async def test_a_new_active_sends_the_outputs_its_predecessor_did_not(tmp_path: Path) -> None:
    """Outputs are at least once across a failover: a's receiver refuses everything, so
    nothing it produced arrives; b, promoted, sends every output from its sink's offset
    (kept while it was the passive), each under its stable idempotency key."""
    got: dict[str, int] = {}

    async def accept(request: web.Request) -> web.Response:
        key = request.headers["Idempotency-Key"]
        got[key] = got.get(key, 0) + 1
        return web.Response(status=204)

    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=503)

    server = web.Application()
    server.router.add_post("/ok", accept)
    server.router.add_post("/down", refuse)
    runner = web.AppRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    a = webhook_node(tmp_path, "a", f"http://127.0.0.1:{port}/down")
    b = webhook_node(tmp_path, "b", f"http://127.0.0.1:{port}/ok")
    try:
        await a.start()
        await a.wait_until(lambda n: n.role is Role.ACTIVE, 5)
        await b.start()
        for k in range(6):
            await a.append(orders(k * 50, 50))
        await b.wait_until(lambda n: host(n).engine_.applied == 300, 5)
        await a.stop()
        await b.wait_until(lambda n: n.role is Role.ACTIVE, 5)
        expected = {f"{i}-0" for i in range(0, 300, 10)}  # amount == offset here
        for _ in range(200):  # up to 10 s for the positive signal: all of them arrived
            if set(got) >= expected:
                break
            await asyncio.sleep(0.05)
        assert set(got) == expected
        assert host(b).metrics["sink_outputs_lost"] == 0
    finally:
        for n in (a, b):
            await n.stop()
        await runner.cleanup()
