"""Two real coordinators on one shared SQLite file: failover, switchover, peer details."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.services import sql_store
from walrep.replica.coordinator import Coordinator
from walrep.replica.lease import LeaseTiming
from walrep.replica.store import NodeInfo

TIMING = LeaseTiming(
    heartbeat_interval_ms=50, lease_ttl_ms=300, safety_margin_ms=75, poll_interval_ms=20
)


class Pair:
    def __init__(self, tmp_path: Path) -> None:
        self.promoted: dict[str, asyncio.Event] = {"a": asyncio.Event(), "b": asyncio.Event()}
        self.events: list[tuple[float, str, str]] = []
        self.nodes = {n: self._make(n, tmp_path) for n in ("a", "b")}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def _make(self, node: str, tmp_path: Path) -> Coordinator:
        def promoted(epoch: int) -> None:
            self.events.append((time.monotonic(), node, f"promoted {epoch}"))
            self.promoted[node].set()

        return Coordinator(
            sql_store("sqlite", tmp_path),
            "group-1",
            node,
            TIMING,
            on_promoted=promoted,
            on_fenced=lambda epoch, why: self.events.append(
                (time.monotonic(), node, f"fenced {epoch}")
            ),
            node_info=lambda: NodeInfo(node, "node", "127.0.0.1", 9893 if node == "a" else 9894),
        )

    async def start(self, node: str) -> None:
        await self.nodes[node].store.setup()
        self.tasks[node] = asyncio.create_task(self.nodes[node].run())

    async def close(self) -> None:
        for node, c in self.nodes.items():
            if node in self.tasks:
                await c.stop()
                await self.tasks[node]
            await c.store.close()


async def test_crash_failover_and_graceful_switchover(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    a, b = pair.nodes["a"], pair.nodes["b"]
    try:
        await pair.start("a")
        await asyncio.wait_for(pair.promoted["a"].wait(), 5)
        await pair.start("b")
        peer = await a.wait_for_passive(timeout_ms=5000, retry_sleep_ms=20)
        assert peer is not None and (peer.info.node_id, peer.info.event_sync_port) == ("b", 9894)
        assert await a.set_in_sync("b", True)

        # Crash of a: its task dies without releasing; b waits for the TTL, then promotes.
        crashed = time.monotonic()
        pair.tasks.pop("a").cancel()
        await asyncio.wait_for(pair.promoted["b"].wait(), 5)
        took = time.monotonic() - crashed
        assert (TIMING.lease_ttl_ms - TIMING.heartbeat_interval_ms) / 1000 <= took < 2.0
        assert b.holds_lease() and b.epoch == 2

        # a comes back as a follower; b records it in-sync, then hands over gracefully.
        pair.promoted["a"].clear()
        pair.tasks["a"] = asyncio.create_task(a.run())
        assert await b.set_in_sync("a", True)
        handed = time.monotonic()
        await b.stop(release=True)
        await pair.tasks.pop("b")
        await asyncio.wait_for(pair.promoted["a"].wait(), 5)
        assert time.monotonic() - handed < TIMING.lease_ttl_ms / 1000, (
            "a released lease needs no TTL wait"
        )
        assert a.epoch == 3

        reasons = [row.reason for row in await a.store.history("group-1")]
        assert "released" in reasons[0] and "expired" in reasons[1] and "first holder" in reasons[2]
        assert [e[2] for e in pair.events if e[2].startswith("promoted")] == [
            "promoted 1",
            "promoted 2",
            "promoted 3",
        ]
    finally:
        await pair.close()


async def test_wait_for_passive_gives_up_after_its_timeout(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    try:
        await pair.start("a")
        started = time.monotonic()
        assert await pair.nodes["a"].wait_for_passive(timeout_ms=200, retry_sleep_ms=20) is None
        # The deadline is kept in whole milliseconds: allow the 1 ms it truncates.
        assert 0.199 <= time.monotonic() - started < 2.0
    finally:
        await pair.close()
