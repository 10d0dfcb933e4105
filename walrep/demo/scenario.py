"""The two-node demo: the whole promise on one machine, checked at the end.

Two ``walrep node start`` processes on one SQLite file, the flagship API-M app on both.
A publisher (``walrep.client``, idempotent producer, the nodes' admin URLs) sends seeded
API-M traffic. In order: node1 becomes active and node2 its in-sync standby; a third of
the way in, node1 is SIGKILLed mid-stream; node2 takes over (the timeline: lease won,
each promotion step, ingest open, the publisher's first ack); node1 restarts, comes back
passive and catches up; then (optionally) a planned switchover hands the active role
back to node1 while the publisher goes on. The verdict compares what the publisher was
told is in with what the new active's log and its ``ApiUserPerAppAgg`` aggregation hold
(through the Store Query API): events acknowledged, counted, lost, duplicated.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from walrep.apim.generator import ApimGenerator
from walrep.client import Client
from walrep.demo.procs import Admin, NodeProc, free_port, write_config

APP = "apim_analytics"
COUNT_QUERY = (
    "from ApiUserPerAppAgg within 0L, 4102444800000L per 'years' "
    "select sum(totalRequestCount) as requests"
)
SECRETS = {
    "WALREP_CLUSTER_SECRET": "demo-cluster-secret",
    "WALREP_INGEST_TOKEN": "demo-ingest-token",
    "WALREP_ADMIN_TOKEN": "demo-admin-token",
}
BATCH = 100


@dataclass
class Verdict:
    acked: int = 0  # events the publisher was told are committed
    acked_requests: int = 0  # of which Request events (what ApiUserPerAppAgg counts)
    distinct_offsets: int = 0
    log_end: int = 0  # the final active's log
    counted: int = 0  # sum(totalRequestCount) over ApiUserPerAppAgg
    timeline: list[tuple[str, float]] = field(default_factory=list)  # (phase, ms after kill)
    switchover: dict[str, Any] | None = None

    @property
    def lost(self) -> int:
        return max(0, self.acked_requests - self.counted) + max(0, self.acked - self.log_end)

    @property
    def duplicated(self) -> int:
        extra_offsets = self.acked - self.distinct_offsets
        return max(0, self.counted - self.acked_requests) + max(0, extra_offsets)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.acked > 0


Say = Callable[[str], None]


class Demo:
    """One run (see the module docstring); ``say`` reports each phase as it happens."""

    def __init__(
        self, root: Path, apps_dir: Path, *, events: int, rate: float, switch_back: bool
    ) -> None:
        self.root, self.events, self.rate, self.switch_back = root, events, rate, switch_back
        self.nodes = {
            name: NodeProc(
                name,
                # The production defaults (heartbeat 250 ms, lease TTL 1 s, snapshots
                # every 60 s): the failover the demo shows is the one operators get.
                write_config(
                    root,
                    name,
                    apps_dir,
                    admin_port=free_port(),
                    heartbeat_ms=250,
                    snapshot_interval_s=60,
                ),
                SECRETS,
                log_path=root / f"{name}.log",
            )
            for name in ("node1", "node2")
        }
        self.verdict = Verdict()
        self.offsets: list[int] = []
        self.ack_times: list[float] = []  # monotonic, per acked batch
        self.status: dict[str, Any] = {}  # node name -> its last /status (the live view)
        self._killed = asyncio.Event()  # set by the publisher a third of the way in
        self._first_ack_ms = 0.0
        self._killed_mono: float | None = None
        self._acked_after_kill = asyncio.Event()

    async def run(self, say: Say) -> Verdict:
        one, two = self.nodes["node1"], self.nodes["node2"]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            admin = Admin(http)
            watcher = asyncio.create_task(self._watch(admin))
            try:
                await one.start()
                await admin.until(one, "/active", lambda s, _: s == 200, "node1 active")
                say("node1 is the active")
                await two.start()
                await admin.until(one, "/status", lambda _, b: b["in_sync"], "node2 in sync")
                say("node2 is its in-sync standby")
                kill_after = self.events // 3
                publisher = asyncio.create_task(self._publish(kill_after))
                await self._killed.wait()
                killed_wall, killed_mono = time.time(), time.monotonic()
                self._killed_mono = killed_mono
                assert await one.signal(signal.SIGKILL) == -signal.SIGKILL
                say(f"SIGKILL node1 after {len(self.offsets)} acknowledged events")
                await admin.until(two, "/active", lambda s, _: s == 200, "node2 active")
                say("node2 is the active")
                await self._first_ack_after(killed_mono)
                self._timeline(two, killed_wall, killed_mono)
                await one.start()
                say("node1 restarted")
                await admin.until(two, "/status", lambda _, b: b["in_sync"], "node1 in sync")
                say("node1 is back as the in-sync standby (its unacknowledged tail truncated)")
                if self.switch_back:
                    self.verdict.switchover = result = await self._switchover("node1")
                    if result.get("ok"):
                        say(f"planned switchover back to node1 after {result['new_active_ms']} ms")
                    else:  # nothing is lost by a handover that did not happen: go on
                        say(f"the switchover back to node1 did not complete: {result['message']}")
                await publisher
                say(f"published {self.verdict.acked} events")
                await self._count(admin, say)
                watcher.cancel()
                await self._poll(admin)  # the live view ends on the final state
            finally:
                watcher.cancel()
                for node in self.nodes.values():
                    if node.running:
                        await node.signal(signal.SIGTERM)
        return self.verdict

    async def _publish(self, kill_after: int) -> None:
        urls = [n.admin for n in self.nodes.values()]
        gen = ApimGenerator(7, rate_per_s=max(self.rate, 1000.0))
        pairs = gen.events(self.events)
        started = time.monotonic()
        client = Client(
            admin=urls,
            token=SECRETS["WALREP_INGEST_TOKEN"],
            producer_id="demo-gateway",
            retry_deadline_s=30,
            backoff_initial_ms=20,
            backoff_max_ms=200,
        )
        async with client:
            for i in range(0, len(pairs), BATCH):
                batch = pairs[i : i + BATCH]
                offsets = await client.publish(batch)
                self.offsets += offsets
                acked_at = time.monotonic()
                self.ack_times.append(acked_at)
                if self._killed_mono is not None and acked_at > self._killed_mono:
                    self._acked_after_kill.set()
                v = self.verdict
                v.acked += len(offsets)
                v.acked_requests += sum(1 for stream, _ in batch if stream == "Request")
                if v.acked >= kill_after:
                    self._killed.set()
                if self.rate:
                    await asyncio.sleep(max(0.0, started + v.acked / self.rate - time.monotonic()))
        self.verdict.distinct_offsets = len(set(self.offsets))

    async def _first_ack_after(self, killed_mono: float) -> None:
        async with asyncio.timeout(60):
            await self._acked_after_kill.wait()
        first = next(t for t in self.ack_times if t > killed_mono)
        self._first_ack_ms = (first - killed_mono) * 1000

    def _timeline(self, two: NodeProc, killed_wall: float, killed_mono: float) -> None:
        """Phases after the kill, from node2's own log lines (their wall-clock times)."""

        def after_kill(line: dict[str, Any]) -> float:
            ts = datetime.fromisoformat(str(line["ts"]).replace("Z", "+00:00")).timestamp()
            return (ts - killed_wall) * 1000

        out = self.verdict.timeline
        won = [m for m in two.messages("PASSIVE -> PROMOTING") if after_kill(m) > 0]
        if won:
            out.append(("lease won (the kill detected, the old lease expired)", after_kill(won[0])))
        for m in two.messages("promotion step"):
            if after_kill(m) > 0:
                step = str(m["message"]).split("promotion step ", 1)[1].split(" (")[0]
                out.append((f"promotion step {step}", after_kill(m)))
        opened = [m for m in two.messages("ingest open") if after_kill(m) > 0]
        if opened:
            out.append(("ingest listening on node2", after_kill(opened[0])))
        out.append(("first event acknowledged by node2", self._first_ack_ms))

    async def _switchover(self, to: str) -> dict[str, Any]:
        from walrep.cli.switchover_cmd import switchover

        urls = [n.admin for n in self.nodes.values()]
        return await switchover(urls, to, SECRETS["WALREP_ADMIN_TOKEN"])

    async def _count(self, admin: Admin, say: Say) -> None:
        """The final active's log end, and what its ApiUserPerAppAgg counted."""
        actives = [n for n in self.nodes.values() if (await admin.get(n, "/active"))[0] == 200]
        if len(actives) != 1:
            raise RuntimeError(f"{len(actives)} active nodes at the end")
        active = actives[0]
        acked = self.verdict.acked
        status = await admin.until(
            active, "/status", lambda _, b: b["applied"] >= acked, "every event applied"
        )
        self.verdict.log_end = int(status["log_end"])
        query_url = status["urls"]["query"]
        if query_url is None:
            raise RuntimeError(f"{active.name} does not serve the Store Query API")
        body = {"appName": APP, "query": COUNT_QUERY}
        async with admin.http.post(query_url + "/stores/query", json=body) as r:
            answer = await r.json()
            if r.status != 200:
                raise RuntimeError(f"the count query failed: {r.status} {answer}")
        records = answer["records"]
        self.verdict.counted = int(records[0][0]) if records else 0
        say(f"{active.name} counts {self.verdict.counted} requests in ApiUserPerAppAgg")

    async def _watch(self, admin: Admin) -> None:
        while True:
            await self._poll(admin)
            await asyncio.sleep(0.2)

    async def _poll(self, admin: Admin) -> None:
        for name, node in self.nodes.items():
            if node.admin:
                _, body = await admin.get(node, "/status")
                self.status[name] = body if isinstance(body, dict) else {"role": "down"}
