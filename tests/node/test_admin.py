"""The admin HTTP API on real nodes (two on one SQLite file), served over real HTTP."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from tests.node.test_engine_host import host, orders
from tests.node.test_engine_host import node as engine_node
from tests.node.test_lease_nodes import in_sync
from tests.node.test_lease_nodes import node as lease_node
from walrep.db import create_engine, normalize_url
from walrep.demo.procs import free_port
from walrep.log.frame import Event
from walrep.node.admin import URL_KEYS, admin_app, standby_problem
from walrep.node.role import PROMOTION_STEPS, Role
from walrep.node.runtime import Node
from walrep.node.settings import NodeSettings
from walrep.replica.lease import LeaseTiming
from walrep.replica.sql_store import SqlStore

WAIT_S = 10


def node(tmp_path: Path, name: str) -> Node:
    """A node on SQLite in ``tmp_path`` with the production lease timings: these tests
    read the admin API; the 225 ms validity of the lease tests' timings is shorter than
    the pauses of a loaded test process (seen: a CI run lost the lease mid-test)."""
    return lease_node(tmp_path, name, lease=LeaseTiming(), call_timeout_ms=750)


class Admin:
    """One node's admin app, served on 127.0.0.1 (any free port), and a client for it."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def call(self, path: str, method: str = "GET") -> tuple[int, Any, str]:
        """(status, parsed JSON or None, Content-Type)."""
        async with self.session.request(method, self.base + path) as r:
            text = await r.text()
            body = json.loads(text) if r.content_type == "application/json" else None
            return r.status, body, r.headers["Content-Type"]

    async def status(self, path: str) -> int:
        return (await self.call(path))[0]

    async def json(self, path: str) -> Any:
        code, body, _ = await self.call(path)
        assert code == 200, (path, code, body)
        return body

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics: (name, sorted labels) -> value."""
        async with self.session.get(self.base + "/metrics") as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == CONTENT_TYPE_LATEST
            text = await r.text()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


@contextlib.asynccontextmanager
async def served(*nodes: Node) -> AsyncIterator[list[Admin]]:
    """Serve each node's admin app; its ``urls()`` names its own admin URL."""
    runners: list[web.AppRunner] = []
    session = aiohttp.ClientSession()
    try:
        admins = []
        for n in nodes:
            urls: dict[str, str | None] = {"ingest_http": None}
            runner = web.AppRunner(admin_app(n, urls=urls.copy))
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            host_, port = runner.addresses[0][:2]
            urls["admin"] = f"http://{host_}:{port}"
            admins.append(Admin(session, f"http://{host_}:{port}"))
        yield admins
    finally:
        await session.close()
        for runner in runners:
            await runner.cleanup()


def leads(n: Node) -> bool:
    return n.role is Role.ACTIVE and n.core_.holds_lease_at(n.now_ms())


async def start_pair(a: Node, b: Node) -> None:
    """``a`` the active, ``b`` its standby, recorded in sync."""
    await a.start()
    await a.wait_until(leads, WAIT_S)
    await b.start()
    await a.wait_until(in_sync, WAIT_S)


async def test_active_and_standby_answer_by_role_and_flip_when_the_active_stops(
    tmp_path: Path,
) -> None:
    a, b = node(tmp_path, "a"), node(tmp_path, "b")
    try:
        async with served(a, b) as (admin_a, admin_b):
            await start_pair(a, b)
            # Idle (no event yet), b holds everything committed: it is a standby from the
            # active's first heartbeat, before any Append.
            await b.wait_until(lambda n: standby_problem(n) is None, WAIT_S)
            assert await admin_b.status("/standby") == 200
            assert await admin_b.status("/ready") == 200
            # Committed with the standby's ack: b's receiver streams and holds it durably.
            await a.append([Event("s", {"i": 1})])

            assert await admin_a.status("/active") == 200
            assert await admin_b.status("/active") == 503
            assert await admin_b.status("/standby") == 200, standby_problem(b)
            code, body, _ = await admin_a.call("/standby")
            assert code == 503 and body["standby"] is False and "ACTIVE" in body["reason"]
            assert await admin_a.status("/ready") == 200
            assert await admin_b.status("/ready") == 200

            await a.stop()  # releases the lease: b takes over
            await b.wait_until(leads, WAIT_S)
            assert await admin_b.status("/active") == 200
            assert await admin_b.status("/standby") == 503
            code, body, _ = await admin_a.call("/active")
            assert code == 503 and body == {
                "active": False,
                "role": "STOPPED",
                "epoch": a.epoch,
                "reason": "the node is STOPPED",
            }
            assert await admin_a.status("/ready") == 503
            assert await admin_a.json("/health") == {"status": "up"}
    finally:
        for n in (a, b):
            await n.stop()


async def test_status_reports_offsets_roles_and_the_standby(tmp_path: Path) -> None:
    a, b = node(tmp_path, "a"), node(tmp_path, "b")
    try:
        async with served(a, b) as (admin_a, admin_b):
            await start_pair(a, b)
            before = await admin_a.json("/status")
            result = await a.append([Event("s", {"i": i}) for i in range(3)])
            end = result.end_offset
            assert end == before["committed"] + 3

            status = await admin_a.json("/status")
            assert status["node_id"] == "a" and status["group_id"] == "group-1"
            assert status["role"] == "ACTIVE" and status["epoch"] == a.epoch >= 1
            assert status["lease_valid"] is True
            assert (status["log_start"], status["log_end"]) == (0, end)
            assert status["durable_end"] == end and status["committed"] == end
            assert status["applied"] is None  # no engine
            assert status["lag_events"] == 0  # log_end - committed on the active
            assert status["in_sync"] is True and status["standby"] == "b"
            assert status["last_snapshot"] is None and status["failure"] is None
            steps = status["promotion_steps"]
            assert [s["name"] for s in steps] == list(PROMOTION_STEPS)
            assert all(isinstance(s["duration_ms"], int) and s["epoch"] == a.epoch for s in steps)
            assert list(status["urls"]) == list(URL_KEYS)
            assert status["urls"]["admin"] == admin_a.base
            assert status["urls"]["ingest_http"] is None and status["urls"]["query"] is None

            # The passive learns the committed offset from the next Append or Heartbeat.
            await b.wait_until(lambda n: n.committed == end, WAIT_S)
            passive = await admin_b.json("/status")
            assert passive["role"] == "PASSIVE" and passive["node_id"] == "b"
            assert passive["committed"] == end and passive["durable_end"] == end
            assert passive["in_sync"] is True and passive["standby"] is None
            assert passive["lag_events"] is None and passive["lease_valid"] is False
            assert passive["promotion_steps"] == []
    finally:
        for n in (a, b):
            await n.stop()


async def test_metrics_expose_offsets_roles_and_counters_per_node(tmp_path: Path) -> None:
    a, b = node(tmp_path, "a"), node(tmp_path, "b")
    try:
        async with served(a, b) as (admin_a, admin_b):
            await start_pair(a, b)
            end = (await a.append([Event("s", {"i": i}) for i in range(5)])).end_offset

            m = await admin_a.metrics()
            assert m[("walrep_committed_offset", ())] == end
            assert m[("walrep_log_end_offset", ())] == end
            assert m[("walrep_epoch", ())] == a.epoch
            assert m[("walrep_in_sync", ())] == 1
            assert m[("walrep_role", (("role", "ACTIVE"),))] == 1
            assert m[("walrep_role", (("role", "PASSIVE"),))] == 0
            assert m[("walrep_role_changes_to_active_total", ())] == 1
            assert ("walrep_promotion_step_seconds", (("step", "ship"),)) in m
            assert ("walrep_applied_offset", ()) not in m  # no engine
            # The standby acked everything: nothing it lacks, nothing unprotected.
            assert m[("walrep_replication_lag_events", ())] == 0
            assert m[("walrep_replication_lag_seconds", ())] == 0
            assert m[("walrep_unprotected_offsets", ())] == 0

            # Each app has its own registry: b's scrape reads b.
            await b.wait_until(lambda n: n.committed == end, WAIT_S)
            mb = await admin_b.metrics()
            assert mb[("walrep_role", (("role", "PASSIVE"),))] == 1
            assert mb[("walrep_committed_offset", ())] == end
            assert ("walrep_role_changes_to_active_total", ()) not in mb
            await b.wait_until(lambda n: standby_problem(n) is None, WAIT_S)
            assert (await admin_b.json("/status"))["replication_lag_events"] == 0
            await b.stop()  # no standby: the active has no replication lag to report
            await a.wait_until(lambda n: n.core_.term.link is None, WAIT_S)
            gone = await admin_a.metrics()
            assert ("walrep_replication_lag_events", ()) not in gone
            assert (await admin_a.json("/status"))["replication_lag_events"] is None
    finally:
        for n in (a, b):
            await n.stop()


async def test_an_engine_node_reports_applied_and_its_last_snapshot(tmp_path: Path) -> None:
    a = engine_node(tmp_path, "a", interval_s=0.1)
    try:
        async with served(a) as (admin,):
            await a.start()
            await a.wait_until(leads, WAIT_S)
            end = (await a.append(orders(0, 40))).end_offset
            await a.wait_until(
                lambda n: (s := host(n).last_snapshot) is not None and s.offset == end, WAIT_S
            )
            status = await admin.json("/status")
            assert status["applied"] == end and status["lag_events"] == 0
            snap = status["last_snapshot"]
            assert snap["offset"] == end and snap["epoch"] == a.epoch
            assert isinstance(snap["age_ms"], int) and snap["age_ms"] >= 0

            m = await admin.metrics()
            assert m[("walrep_applied_offset", ())] == end
            assert m[("walrep_snapshots_saved_total", ())] >= 1
            assert m[("walrep_snapshot_age_seconds", ())] >= 0
            assert ("walrep_last_capture_pause_seconds", ()) in m
    finally:
        await a.stop()


async def test_unknown_paths_are_404_and_wrong_methods_405_as_json(tmp_path: Path) -> None:
    a = node(tmp_path, "a")
    async with served(a) as (admin,):
        code, body, content_type = await admin.call("/nope")
        assert code == 404 and body["error"] == "not_found" and "/nope" in body["message"]
        assert content_type.startswith("application/json")
        code, body, _ = await admin.call("/status", method="POST")
        assert code == 405 and body["error"] == "method_not_allowed"
        assert "GET" in body["allowed"]
        code, _, _ = await admin.call("/metrics", method="DELETE")
        assert code == 405


async def test_a_node_not_started_answers_health_but_is_not_ready(tmp_path: Path) -> None:
    a = node(tmp_path, "a")
    async with served(a) as (admin,):
        assert await admin.json("/health") == {"status": "up"}
        code, body, _ = await admin.call("/ready")
        assert (code, body) == (503, {"ready": False, "role": "STARTING"})
        assert await admin.status("/active") == 503
        assert await admin.status("/standby") == 503
        status = await admin.json("/status")
        assert status["role"] == "STARTING" and status["node_id"] == "a"
        zeros = ("epoch", "log_start", "log_end", "durable_end", "committed")
        assert {k: status[k] for k in zeros} == dict.fromkeys(zeros, 0)
        assert status["in_sync"] is False and status["standby"] is None
        assert status["applied"] is None and status["promotion_steps"] == []
        m = await admin.metrics()
        assert m[("walrep_role", (("role", "STARTING"),))] == 1
        assert m[("walrep_committed_offset", ())] == 0


async def test_cluster_and_history_read_the_group_from_the_store(tmp_path: Path) -> None:
    a, b = node(tmp_path, "a"), node(tmp_path, "b")
    try:
        async with served(a, b) as (admin_a, admin_b):
            await start_pair(a, b)
            await b.wait_until(lambda n: n.role is Role.PASSIVE, WAIT_S)
            for admin in (admin_a, admin_b):  # the same group on every node
                doc = await admin.json("/cluster")
                assert doc["group"] == "group-1"
                assert doc["lease"]["holder"] == "a" and doc["lease"]["epoch"] == 1
                assert doc["lease"]["expired"] is False and doc["lease"]["maintenance"] is False
                assert doc["in_sync"] == [{"node_id": "b", "epoch": 1, "current": True}]
                published = {r["node_id"] for r in doc["nodes"]}
                assert published <= {"a", "b"} and "a" in published
                history = await admin.json("/history")
                assert history["group"] == "group-1"
                assert [(h["epoch"], h["from_node"], h["to_node"]) for h in history["history"]] == [
                    (1, None, "a")
                ]
                assert history["history"][0]["at"].endswith("Z")
            assert len((await admin_a.json("/history?limit=1"))["history"]) == 1
            for bad in ("0", "1001", "many"):
                code, body, _ = await admin_a.call(f"/history?limit={bad}")
                assert code == 400 and body["error"] == "invalid_limit", body
                assert repr(bad) in body["message"]
    finally:
        for n in (a, b):
            await n.stop()


async def test_cluster_without_a_database_is_503_naming_it(tmp_path: Path) -> None:
    url = normalize_url(f"mysql://root@127.0.0.1:{free_port()}/walrep")
    store = SqlStore(create_engine(url, connect_timeout_ms=500), call_timeout_ms=500)
    settings = NodeSettings(group="group-1", node_id="a", secret=b"s")
    lonely = Node(settings, tmp_path / "a", store, own_store=True)
    async with served(lonely) as (admin,):
        for path in ("/cluster", "/history"):
            code, body, _ = await admin.call(path)
            assert code == 503 and body["error"] == "store_unavailable", body
            assert "database" in body["message"]
        assert await admin.json("/health") == {"status": "up"}  # the node still answers
