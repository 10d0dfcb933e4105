"""``walrep node start`` as operators run it: two real processes, real ports by role.

The admin API answers on both; HTTP ingest listens only on the active (the passive's
ingest port refuses connections); a SIGKILL of the active makes the passive take over,
open ingest and answer a producer's retry with the original offsets; SIGTERM exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.services import require_service
from walrep.demo.procs import WALREP, Admin, NodeProc, free_port, write_config

WAIT_S = 20.0
TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADMIN_TOKEN = "adm1n"

APP = """
from walrep.engine.app import App, count, sum_

app = App("shop", version="1")
app.stream("Order", {"shop": "string", "amount": "long", "ts": "long"}, timestamp="ts")
app.aggregation(
    "OrdersPerShop",
    from_="Order",
    group_by=["shop"],
    aggregates=[count("orders"), sum_("revenue", of="amount")],
    every=("sec", "day"),
)
"""


@dataclass
class Node:
    proc: NodeProc
    ingest_port: int

    @property
    def name(self) -> str:
        return self.proc.name

    @property
    def admin(self) -> str:
        return self.proc.admin

    @property
    def lines(self) -> list[dict[str, Any]]:
        return self.proc.lines

    async def start(self) -> None:
        await self.proc.start()
        for line in self.proc.lines:  # every line is one JSON object
            assert {"ts", "level", "logger", "message"} <= set(line), line

    async def signal(self, sig: int) -> int:
        return await self.proc.signal(sig)


@dataclass
class Pair:
    http: aiohttp.ClientSession
    nodes: dict[str, Node]

    async def get(self, n: Node, path: str) -> tuple[int, Any]:
        return await Admin(self.http).get(n.proc, path)

    async def until(self, n: Node, path: str, ok: Callable[[int, Any], bool]) -> Any:
        """Poll an admin route until ``ok(status, body)``: a positive signal, bounded."""
        return await Admin(self.http).until(n.proc, path, ok, path, WAIT_S)

    async def post(self, url: str, events: list[dict[str, Any]]) -> tuple[int, Any]:
        async with self.http.post(url + "/events", json=events, headers=AUTH) as r:
            return r.status, await r.json()


ENV = {"WALREP_CLUSTER_SECRET": "s3cret", "WALREP_INGEST_TOKEN": TOKEN,
       "WALREP_ADMIN_TOKEN": ADMIN_TOKEN}  # fmt: skip


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path, **config: Any) -> AsyncIterator[Pair]:
    """node1 and node2 on one SQLite file running the shop app (``config``: more
    ``write_config`` options); every process still running at the end is killed."""
    (tmp_path / "apps").mkdir()
    (tmp_path / "apps" / "shop.py").write_text(APP)
    nodes = {}
    for name in ("node1", "node2"):
        port = free_port()
        path = write_config(tmp_path, name, tmp_path / "apps", ingest_port=port, **config)
        nodes[name] = Node(NodeProc(name, path, ENV), port)
    async with aiohttp.ClientSession() as http:
        try:
            yield Pair(http, nodes)
        finally:
            for n in nodes.values():
                await n.proc.kill_if_running()


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    async with two_nodes(tmp_path) as started:
        yield started


def orders(start: int, n: int, producer: str | None = None) -> list[dict[str, Any]]:
    out = []
    for i in range(start, start + n):
        event: dict[str, Any] = {
            "stream": "Order",
            "attributes": {"shop": f"s{i % 3}", "amount": i, "ts": 1_767_225_600_000 + i},
        }
        if producer is not None:
            event |= {"producer_id": producer, "seq": i}
        out.append(event)
    return out


async def one_active(pair: Pair, nodes: list[Node]) -> Node:
    """The active, once exactly one node answers /active with 200 (between a lost lease
    and its next holder there may be none for a moment: wait, bounded)."""
    async with asyncio.timeout(WAIT_S):
        while True:
            active = [n for n in nodes if (await pair.get(n, "/active"))[0] == 200]
            if len(active) == 1:
                return active[0]
            await asyncio.sleep(0.02)


async def cluster_list(n: Node) -> Any:
    """``walrep cluster list --json`` run as an operator runs it, with ``n``'s config."""
    cli = await asyncio.create_subprocess_exec(
        WALREP, "cluster", "list", "--json",
        "-c", str(n.proc.config), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await cli.communicate()
    assert cli.returncode == 0, out
    return json.loads(out)


async def refused(port: int) -> bool:
    with contextlib.suppress(ConnectionRefusedError):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        return False
    return True


async def test_ports_by_role_failover_and_a_clean_stop(pair: Pair) -> None:
    one, two = pair.nodes["node1"], pair.nodes["node2"]
    await one.start()
    await pair.until(one, "/active", lambda s, _: s == 200)
    status = await pair.until(one, "/status", lambda s, b: b["urls"]["ingest_http"] is not None)
    assert status["role"] == "ACTIVE" and status["node_id"] == "node1"
    ingest_one = status["urls"]["ingest_http"]
    await two.start()
    await pair.until(one, "/status", lambda s, b: b["in_sync"])  # the active's view
    batch = orders(0, 5, producer="gw")
    assert await pair.post(ingest_one, batch) == (200, {"offsets": [0, 1, 2, 3, 4]})
    await pair.until(two, "/standby", lambda s, _: s == 200)  # the passive's own view
    async with pair.http.get(one.admin + "/metrics") as r:
        metrics = await r.text()
    assert 'walrep_ingest_events_total{transport="http"} 5.0' in metrics
    assert 'walrep_ingest_request_seconds_count{transport="http"} 1.0' in metrics
    assert "walrep_committed_offset 5.0" in metrics
    assert "walrep_event_loop_lag_seconds_count" in metrics  # the lag watcher runs
    forces = [ln for ln in metrics.splitlines() if ln.startswith("walrep_fsync_seconds_count")]
    assert forces and float(forces[0].split()[-1]) >= 1  # the log's fsyncs, timed
    listed = await cluster_list(one)  # the operator's view: the database and each /status
    assert listed["holder"] == "node1" and listed["maintenance"] is False
    rows = {n["node_id"]: n for n in listed["nodes"]}
    assert (rows["node1"]["role"], rows["node1"]["reachable"]) == ("ACTIVE", True)
    assert rows["node1"]["admin_url"] == one.admin and rows["node1"]["in_sync"] is None
    assert (rows["node2"]["role"], rows["node2"]["in_sync"]) == ("PASSIVE", True)
    assert rows["node2"]["log_end"] == 5 and rows["node2"]["lag_events"] == 0
    passive = (await pair.get(two, "/status"))[1]
    assert passive["role"] == "PASSIVE" and passive["urls"]["ingest_http"] is None
    assert (await pair.get(two, "/active"))[0] == 503
    assert await refused(two.ingest_port)  # not listening at all on the passive

    assert await one.signal(signal.SIGKILL) == -signal.SIGKILL
    await pair.until(two, "/active", lambda s, _: s == 200)
    status = await pair.until(two, "/status", lambda s, b: b["urls"]["ingest_http"] is not None)
    ingest_two = status["urls"]["ingest_http"]
    assert await pair.post(ingest_two, batch) == (200, {"offsets": [0, 1, 2, 3, 4]})  # a retry
    assert await pair.post(ingest_two, orders(5, 2, producer="gw")) == (200, {"offsets": [5, 6]})
    assert (await pair.get(two, "/status"))[1]["committed"] == 7
    steps = [m["message"] for m in two.lines if "promotion step" in m["message"]]
    assert any("catch_up done" in s for s in steps), steps  # each step logged with its time

    assert await two.signal(signal.SIGTERM) == 0  # releases the lease, exits cleanly
    assert any("stopped in" in m["message"] for m in two.lines)


async def test_a_kill_under_load_loses_and_duplicates_nothing(pair: Pair) -> None:
    await kill_under_load(pair)


@pytest.mark.parametrize("backend", ["mariadb", "postgresql"])
async def test_a_kill_under_load_on_a_database_server(tmp_path: Path, backend: str) -> None:
    """The same with the coordination store and the snapshots on MariaDB / PostgreSQL
    (a group of its own: the server's rows outlive the test)."""
    url = require_service(backend)
    group = f"e2e-{uuid.uuid4().hex[:10]}"
    async with two_nodes(tmp_path, datasource_url=url, group_id=group) as pair:
        await kill_under_load(pair)


async def kill_under_load(pair: Pair) -> None:
    """A publisher keeps going through a SIGKILL of the active: every event it was told is
    in has exactly one offset, the offsets have no gap, and the new active's log holds
    exactly those events (its retries were answered, not appended again)."""
    from walrep.client import Client

    one, two = pair.nodes["node1"], pair.nodes["node2"]
    await one.start()
    await pair.until(one, "/active", lambda s, _: s == 200)
    await two.start()
    await pair.until(one, "/status", lambda s, b: b["in_sync"])
    urls = [f"http://127.0.0.1:{n.ingest_port}" for n in (one, two)]
    acked: list[int] = []
    killed = asyncio.Event()

    async def publisher() -> None:
        async with Client(urls, token=TOKEN, producer_id="gw", retry_deadline_s=15) as c:
            for k in range(60):
                acked.extend(await c.publish(orders(k * 20, 20)))
                if k == 20:
                    killed.set()

    task = asyncio.create_task(publisher())
    async with asyncio.timeout(WAIT_S):
        await killed.wait()
    assert await one.signal(signal.SIGKILL) == -signal.SIGKILL
    async with asyncio.timeout(WAIT_S * 2):
        await task
    assert sorted(acked) == list(range(1200)) and len(set(acked)) == len(acked)
    status = await pair.until(two, "/status", lambda s, b: b["role"] == "ACTIVE")
    assert status["log_end"] == status["committed"] == 1200
    await pair.until(two, "/status", lambda s, b: b["applied"] == 1200)


async def test_a_switchover_hands_over_without_loss_or_lease_expiry(pair: Pair) -> None:
    """A planned switchover while a publisher keeps going: refused without the admin
    token, then done (the lease released, not expired: the old active logs the handover
    and follows the new one); the publisher's events all land once."""
    from walrep.cli.switchover_cmd import switchover
    from walrep.client import Client

    one, two = pair.nodes["node1"], pair.nodes["node2"]
    await one.start()
    await pair.until(one, "/active", lambda s, _: s == 200)
    await two.start()
    await pair.until(one, "/status", lambda s, b: b["in_sync"])
    async with pair.http.post(one.admin + "/switchover") as r:
        assert r.status == 401  # no token
    urls = [f"http://127.0.0.1:{n.ingest_port}" for n in (one, two)]
    acked: list[int] = []
    halfway = asyncio.Event()

    async def publisher() -> None:
        async with Client(urls, token=TOKEN, producer_id="gw", retry_deadline_s=15) as c:
            for k in range(40):
                acked.extend(await c.publish(orders(k * 10, 10)))
                if k == 10:
                    halfway.set()

    task = asyncio.create_task(publisher())
    async with asyncio.timeout(WAIT_S):
        await halfway.wait()
    result = await switchover([one.admin, two.admin], "node2", ADMIN_TOKEN)
    assert result["ok"], result
    assert (result["from"], result["to"]) == ("node1", "node2")
    assert result["new_epoch"] == result["old_epoch"] + 1
    async with asyncio.timeout(WAIT_S):
        await task
    assert sorted(acked) == list(range(400))
    status = (await pair.get(two, "/status"))[1]
    assert status["role"] == "ACTIVE" and status["committed"] == 400
    back = (await pair.get(one, "/status"))[1]
    assert back["role"] == "PASSIVE"  # the old active follows the new one
    lines = [m["message"] for m in one.lines]
    assert any("switchover to node2" in m for m in lines), lines[-5:]
    # It holds off taking the lease by itself for three lease lifetimes, then follows.
    if back["follows_again_in_ms"] is not None:
        assert 0 <= back["follows_again_in_ms"] <= 3 * 400  # the test pair's TTL: 400 ms
    await pair.until(one, "/status", lambda s, b: b["follows_again_in_ms"] is None)
    assert (await pair.get(two, "/status"))[1]["follows_again_in_ms"] is None


@pytest.mark.slow
async def test_twenty_kills_in_a_row_with_restarts_lose_and_duplicate_nothing(
    pair: Pair,
) -> None:
    """The active is SIGKILLed 20 times in a row under load, each time restarted once the
    other took over; every acknowledged event has exactly one offset, and both logs end
    at the number of events acknowledged (both applied all of them)."""
    from walrep.client import Client

    nodes = list(pair.nodes.values())
    await nodes[0].start()
    await pair.until(nodes[0], "/active", lambda s, _: s == 200)
    await nodes[1].start()
    urls = [f"http://127.0.0.1:{n.ingest_port}" for n in nodes]
    acked: list[int] = []
    done, progress = asyncio.Event(), asyncio.Event()

    async def publisher() -> None:
        async with Client(urls, token=TOKEN, producer_id="gw", retry_deadline_s=20) as c:
            k = 0
            while not done.is_set():
                acked.extend(await c.publish(orders(k * 10, 10)))
                progress.set()
                k += 1

    task = asyncio.create_task(publisher())
    failovers = []
    for _ in range(20):
        victim = await one_active(pair, nodes)
        other = nodes[1 - nodes.index(victim)]
        await pair.until(victim, "/status", lambda s, b: b["in_sync"])  # a safe kill
        before = len(acked)
        assert await victim.signal(signal.SIGKILL) == -signal.SIGKILL
        await pair.until(other, "/active", lambda s, _: s == 200)
        progress.clear()
        await victim.start()  # comes back passive, truncates, catches up
        async with asyncio.timeout(WAIT_S):
            await progress.wait()  # the publisher goes on through the new active
        failovers.append(len(acked) - before)
    done.set()
    async with asyncio.timeout(WAIT_S):
        await task
    total = len(acked)
    assert sorted(acked) == list(range(total)) and len(failovers) == 20
    for n in nodes:
        await pair.until(n, "/status", lambda s, b: b["log_end"] == total == b["applied"])


async def test_a_standby_that_lacks_events_takes_over_only_when_forced(pair: Pair) -> None:
    """node1 takes events alone and dies; node2, new and empty, does not take the lease
    by itself (it would lose them); `walrep cluster failover` refuses without --force,
    then with it makes node2 the active under a new epoch."""
    from walrep.cli.switchover_cmd import failover

    one, two = pair.nodes["node1"], pair.nodes["node2"]
    await one.start()
    status = await pair.until(one, "/status", lambda s, b: b["urls"]["ingest_http"] is not None)
    assert (await pair.post(status["urls"]["ingest_http"], orders(0, 3)))[0] == 200
    assert await one.signal(signal.SIGKILL) == -signal.SIGKILL
    await two.start()
    await pair.until(two, "/ready", lambda s, _: s == 200)
    urls = [one.admin, two.admin]
    held = await pair.until(two, "/status", lambda s, b: b["held_back"] is not None)
    assert "epoch 1" in held["held_back"] and held["role"] == "PASSIVE"
    refused = await failover(urls, "node2", False, ADMIN_TOKEN)
    assert not refused["ok"] and "with force" in refused["message"], refused
    assert (await pair.get(two, "/status"))[1]["role"] == "PASSIVE"
    forced = await failover(urls, "node2", True, ADMIN_TOKEN)
    assert forced["ok"] and forced["node"] == "node2" and forced["epoch"] >= 2, forced
    await pair.until(two, "/active", lambda s, _: s == 200)


async def test_a_wiped_standby_is_never_promoted_and_the_old_active_takes_back(
    pair: Pair,
) -> None:
    """node2's data directory is wiped while it is down, and node1 takes more events
    alone, then dies too. node2 comes back empty: it does not take the lease (it would
    lose events). node1, restarted, takes the lease back, node2 catches up from it, and
    every acknowledged event is in both logs."""
    import shutil

    one, two = pair.nodes["node1"], pair.nodes["node2"]
    await one.start()
    ingest = (await pair.until(one, "/status", lambda s, b: b["urls"]["ingest_http"] is not None))[
        "urls"
    ]["ingest_http"]
    await two.start()
    await pair.until(one, "/status", lambda s, b: b["in_sync"])
    assert (await pair.post(ingest, orders(0, 50)))[0] == 200
    assert await two.signal(signal.SIGKILL) == -signal.SIGKILL
    shutil.rmtree(two.proc.config.parent / "node2")  # the data directory, lost
    status, body = await pair.post(ingest, orders(50, 50))  # node1 alone (degraded)
    assert (status, body["offsets"][-1]) == (200, 99)
    assert await one.signal(signal.SIGKILL) == -signal.SIGKILL

    await two.start()
    held = await pair.until(two, "/status", lambda s, b: b["held_back"] is not None)
    assert held["role"] == "PASSIVE" and held["log_end"] == 0
    await one.start()  # the only node holding everything committed
    await pair.until(one, "/active", lambda s, _: s == 200)
    await pair.until(two, "/status", lambda s, b: b["log_end"] == 100 and b["applied"] == 100)
    assert (await pair.get(two, "/active"))[0] == 503
    final = (await pair.get(one, "/status"))[1]
    assert final["log_end"] == final["committed"] == 100 and final["epoch"] >= 2


async def test_a_cold_standby_keeps_the_log_and_restores_the_snapshot_when_promoted(
    tmp_path: Path,
) -> None:
    """``cluster.standby: cold`` (the seed's way): the passive persists every event but
    applies none; promoted by a SIGKILL of the active, it restores the newest snapshot,
    replays the log after it, and counts every acknowledged event exactly once."""
    async with two_nodes(tmp_path, standby="cold", snapshot_interval_s=3) as pair:
        one, two = pair.nodes["node1"], pair.nodes["node2"]
        await one.start()
        status = await pair.until(one, "/status", lambda s, b: b["urls"]["ingest_http"])
        ingest = status["urls"]["ingest_http"]
        await two.start()
        await pair.until(one, "/status", lambda s, b: b["in_sync"])
        for k in range(6):
            assert (await pair.post(ingest, orders(k * 50, 50)))[0] == 200
        snapped = await pair.until(
            one, "/status", lambda s, b: (b["last_snapshot"] or {}).get("offset") == 300
        )
        assert snapped["applied"] == 300
        for k in range(6, 10):  # the tail after the snapshot
            assert (await pair.post(ingest, orders(k * 50, 50)))[0] == 200
        passive = await pair.until(two, "/status", lambda s, b: b["durable_end"] == 500)
        assert passive["applied"] == 0  # cold: it holds the log, its engine never ran

        assert await one.signal(signal.SIGKILL) == -signal.SIGKILL
        # Active, and its query port open (the process opens it right after the role).
        status = await pair.until(
            two, "/status", lambda s, b: b["role"] == "ACTIVE" and b["urls"]["query"]
        )
        assert status["applied"] == 500 and status["committed"] == 500
        # Restored at the promotion (node2 started before any snapshot existed): the one
        # at 300, so the tail was replayed; 500 only if the next one (3 s on) beat the kill.
        assert status["last_snapshot"]["offset"] in (300, 500)
        restored = [line for line in two.lines if "engine restored" in line["message"]]
        assert len(restored) == 1, restored
        steps = [s["name"] for s in status["promotion_steps"]]
        assert "catch_up" in steps
        query = (
            "from OrdersPerShop within 0L, 9999999999999L per 'days' "
            "select shop, sum(orders) as n, sum(revenue) as revenue group by shop order by shop"
        )
        body = {"appName": "shop", "query": query}
        async with pair.http.post(status["urls"]["query"] + "/stores/query", json=body) as r:
            assert r.status == 200
            records = (await r.json())["records"]
        expected = [[f"s{s}", sum(1 for i in range(500) if i % 3 == s),
                     sum(i for i in range(500) if i % 3 == s)] for s in range(3)]  # fmt: skip
        assert records == expected
