"""``walrep node start`` as operators run it: two real processes, real ports by role.

The admin API answers on both; HTTP ingest listens only on the active (the passive's
ingest port refuses connections); a SIGKILL of the active makes the passive take over,
open ingest and answer a producer's retry with the original offsets; SIGTERM exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

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


WALREP = str(Path(sys.executable).parent / "walrep")  # the console script operators run


def parse(raw: bytes) -> dict[str, Any]:
    """A log line: one JSON object (anything else, say a traceback, is kept as text)."""
    try:
        line = json.loads(raw)
    except ValueError:
        return {"message": raw.decode(errors="replace"), "level": "raw"}
    assert isinstance(line, dict) and {"ts", "level", "logger", "message"} <= set(line), line
    return line


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(root: Path, name: str, ingest_port: int) -> Path:
    path = root / f"{name}.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            node: {{id: {name}, data_dir: {root / name}}}
            cluster: {{group_id: g1, heartbeat_interval_ms: 100, heartbeat_max_retry: 3,
                      event_polling_interval_ms: 50}}
            deployment: {{event_sync_server: {{host: 127.0.0.1, port: 0}}}}
            admin: {{port: 0}}
            ingest: {{http_port: {ingest_port}}}
            engine: {{apps_dir: {root / "apps"}}}
            state_persistence: {{interval_s: 1}}
            datasources: [{{name: WALREP_DB, url: "sqlite+aiosqlite:///{root / "cluster.db"}"}}]
            """
        )
    )
    return path


@dataclass
class NodeProc:
    name: str
    config: Path
    ingest_port: int
    proc: asyncio.subprocess.Process | None = None
    admin: str = ""
    lines: list[dict[str, Any]] = field(default_factory=list)

    async def start(self) -> None:
        env = {
            **os.environ,
            "WALREP_CLUSTER_SECRET": "s3cret",
            "WALREP_INGEST_TOKEN": TOKEN,
            "WALREP_ADMIN_TOKEN": ADMIN_TOKEN,
        }
        self.proc = await asyncio.create_subprocess_exec(
            WALREP, "node", "start", "-c", str(self.config),
            "--log-format", "json", env=env, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stderr is not None
        async with asyncio.timeout(WAIT_S):
            while not self.admin:
                raw = await self.proc.stderr.readline()
                assert raw, f"{self.name} exited: {self.lines[-5:]}"
                line = parse(raw)
                self.lines.append(line)
                head = f"node {self.name} started: "
                if line["message"].startswith(head):
                    self.admin = json.loads(line["message"][len(head) :])["admin"]
        asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while raw := await self.proc.stderr.readline():
            self.lines.append(parse(raw))

    async def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        async with asyncio.timeout(WAIT_S):
            return await self.proc.wait()


@dataclass
class Pair:
    http: aiohttp.ClientSession
    nodes: dict[str, NodeProc]

    async def get(self, n: NodeProc, path: str) -> tuple[int, Any]:
        async with self.http.get(n.admin + path) as r:
            return r.status, await r.json(content_type=None)

    async def until(self, n: NodeProc, path: str, ok: Callable[[int, Any], bool]) -> Any:
        """Poll an admin route until ``ok(status, body)``: a positive signal, bounded."""
        async with asyncio.timeout(WAIT_S):
            while True:
                status, body = await self.get(n, path)
                if ok(status, body):
                    return body
                await asyncio.sleep(0.05)

    async def post(self, url: str, events: list[dict[str, Any]]) -> tuple[int, Any]:
        async with self.http.post(url + "/events", json=events, headers=AUTH) as r:
            return r.status, await r.json()


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    (tmp_path / "apps").mkdir()
    (tmp_path / "apps" / "shop.py").write_text(APP)
    nodes = {}
    for name in ("node1", "node2"):
        port = free_port()
        nodes[name] = NodeProc(name, write_config(tmp_path, name, port), port)
    async with aiohttp.ClientSession() as http:
        try:
            yield Pair(http, nodes)
        finally:
            for n in nodes.values():
                if n.proc is not None and n.proc.returncode is None:
                    n.proc.kill()
                    await n.proc.wait()


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
