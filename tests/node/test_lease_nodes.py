"""Two real nodes on one SQLite file: a graceful hand-over and waiting for the peer."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from tests.services import sql_store
from walrep.log.frame import Event
from walrep.node.role import Role
from walrep.node.runtime import Node
from walrep.node.settings import NodeSettings
from walrep.replica.lease import LeaseTiming
from walrep.replica.shipper import Standby

TIMING = LeaseTiming(
    heartbeat_interval_ms=50, lease_ttl_ms=300, safety_margin_ms=75, poll_interval_ms=20
)


def node(tmp_path: Path, name: str, **settings: object) -> Node:
    """A node on SQLite in ``tmp_path``: the short lease timings ``TIMING`` unless
    ``settings`` say otherwise."""
    values: dict[str, object] = {"lease": TIMING, "call_timeout_ms": 200} | settings
    s = NodeSettings(group="group-1", node_id=name, secret=b"s", **values)  # type: ignore[arg-type]
    return Node(s, tmp_path / name, sql_store("sqlite", tmp_path), own_store=True)


def in_sync(n: Node) -> bool:
    term = n.core_.term
    return term is not None and term.shipper.standby_state is Standby.IN_SYNC


async def test_a_graceful_stop_hands_over_without_waiting_for_the_ttl(tmp_path: Path) -> None:
    a, b = node(tmp_path, "a"), node(tmp_path, "b")
    try:
        await a.start()
        await a.wait_until(lambda n: n.role is Role.ACTIVE, 5)
        await b.start()
        await a.wait_until(in_sync, 5)
        acked = await a.append([Event("s", {"i": 1})])

        handed = time.monotonic()
        await a.stop()  # releases the lease: b need not wait for it to expire
        await b.wait_until(lambda n: n.role is Role.ACTIVE, 5)
        assert time.monotonic() - handed < TIMING.lease_ttl_ms / 1000
        assert b.epoch == 2 and b.log.log_end >= acked.end_offset

        reasons = [row.reason for row in await b.store.history("group-1")]
        assert "released" in reasons[0] and "first holder" in reasons[1], reasons
        assert [s.step for s in b.steps] == [
            "fence_lower_epochs",
            "finish_log",
            "catch_up",
            "open_ingest",
            "ship",
        ]
        # The old active comes back as the passive and is recorded in sync again.
        a = node(tmp_path, "a")
        await a.start()
        await b.wait_until(in_sync, 5)
        assert a.role is Role.PASSIVE
    finally:
        for n in (a, b):
            await n.stop()


async def test_an_active_without_a_peer_says_so_after_the_wait_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = node(tmp_path, "a", peer_wait_timeout_ms=200, peer_retry_sleep_ms=20)
    caplog.set_level(logging.WARNING, logger="walrep.node")
    started = time.monotonic()
    try:
        await a.start()
        await a.wait_until(
            lambda n: any("no passive has published" in r.message for r in caplog.records), 5
        )
        assert time.monotonic() - started >= 0.2
        assert a.role is Role.ACTIVE  # it keeps serving, alone, and keeps looking
        assert (await a.append([Event("s", {"alone": True})])).end_offset == 1
    finally:
        await a.stop()
