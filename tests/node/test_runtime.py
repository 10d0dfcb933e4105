"""The asyncio executor (``walrep.node.runtime.Node``) on real logs and loopback TCP."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from walrep.log.frame import Event
from walrep.node.role import Role
from walrep.node.runtime import Node
from walrep.node.settings import NodeSettings
from walrep.replica.lease import LeaseTiming
from walrep.replica.shipper import ShipperConfig
from walrep.replica.store import MemoryStore

FRAMES = 5000


async def test_a_catch_up_of_thousands_of_frames_does_not_recurse(tmp_path: Path) -> None:
    """One Append per frame and a window of 4096: a catch-up is thousands of read and
    send effects from one input. The executor runs them from one queue; the old shell
    recursed (run -> read -> run) and hit Python's recursion limit."""
    store = MemoryStore(lambda: time.time_ns() // 1_000_000)
    shipper = ShipperConfig(window_batches=4096, window_bytes=64 * 1024 * 1024, read_bytes_max=1)
    # A long lease: 4,096 appends at once keep a loaded machine's loop busy for a while,
    # and this test is about the effect queue, not the lease.
    lease = LeaseTiming(heartbeat_interval_ms=250, lease_ttl_ms=10_000, safety_margin_ms=250)
    a = Node(
        NodeSettings(group="g", node_id="a", secret=b"s", shipper=shipper, lease=lease),
        tmp_path / "a",
        store,
    )
    b = Node(NodeSettings(group="g", node_id="b", secret=b"s", lease=lease), tmp_path / "b", store)
    try:
        await a.start()
        await a.wait_until(lambda n: n.role is Role.ACTIVE, 10)
        # Alone, the active commits on its own durability: one frame per append.
        await asyncio.gather(*(a.append([Event("s", {"i": i})]) for i in range(FRAMES)))
        assert len(list(a.log.frames())) == FRAMES
        await b.start()
        await a.wait_until(lambda n: n.standby_in_sync, 30)
        assert b.log.log_end == FRAMES
        assert [f.data for f in b.log.frames()] == [f.data for f in a.log.frames()]
    finally:
        await b.stop()
        await a.stop()


async def test_stop_before_start_wins(tmp_path: Path) -> None:
    store = MemoryStore(lambda: time.time_ns() // 1_000_000)
    node = Node(NodeSettings(group="g", node_id="a", secret=b"s"), tmp_path / "a", store)
    await node.stop()
    await node.start()
    assert node.role is Role.STARTING and node.core is None
    lease = await store.read_lease("g")
    assert (lease.holder, lease.epoch) == (None, 0)
