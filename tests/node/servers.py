"""Shared by the tests of the node's HTTP APIs: a node running the shop app, and an
aiohttp application served on 127.0.0.1, any free port."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from tests.node.test_engine_host import shop_app
from tests.services import sql_store
from walrep.node.engine_host import EngineHost
from walrep.node.runtime import Node
from walrep.node.settings import NodeSettings


def shop_node(tmp_path: Path, name: str, *, engine: bool = True) -> Node:
    """A node on SQLite in ``tmp_path`` whose engine (no snapshots) runs the shop app.

    Its lease has the production timings: these tests are about the HTTP APIs, not the
    lease, and the 225 ms validity of the lease tests' timings is shorter than the pauses
    a loaded test process sees (one CI run lost the lease mid-test that way).
    """
    s = NodeSettings(group="group-1", node_id=name, secret=b"s")
    host = EngineHost([shop_app()], digest_interval=10**9) if engine else None
    return Node(s, tmp_path / name, sql_store("sqlite", tmp_path), own_store=True, engine=host)


@dataclass
class Served:
    url: str  # the base URL + ``path``
    runner: web.AppRunner


async def serve(app: web.Application, path: str = "") -> Served:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return Served(f"http://{host}:{port}{path}", runner)
