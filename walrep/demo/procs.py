"""Node processes for the demo (and the end-to-end tests): ``walrep node start`` children.

``NodeProc`` starts one node with ``--log-format json``, reads its log lines (one JSON
object each: ``ts``, ``level``, ``logger``, ``message``) into ``lines`` as they come, learns
its admin URL from the start-up line, and sends it signals. ``Admin`` reads and polls
the nodes' admin APIs. Waits are bounded and end with ``TimeoutError`` naming what was
awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from walrep.client import get_json

WAIT_S = 30.0
WALREP = str(Path(sys.executable).parent / "walrep")  # the console script operators run


def free_port() -> int:
    """A port free now on 127.0.0.1 (another process may take it before it is bound)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_line(raw: bytes) -> dict[str, Any]:
    """A log line: one JSON object; anything else (a traceback) is kept as text."""
    try:
        line = json.loads(raw)
    except ValueError:
        return {"message": raw.decode(errors="replace").rstrip(), "level": "raw", "ts": ""}
    if not isinstance(line, dict):
        return {"message": str(line), "level": "raw", "ts": ""}
    return line


def write_config(
    root: Path,
    name: str,
    apps_dir: Path,
    *,
    ingest_port: int = 0,
    admin_port: int = 0,
    heartbeat_ms: int = 100,
    standby: str = "warm",
    snapshot_interval_s: int = 5,
    datasource_url: str | None = None,
    group_id: str = "demo",
    digest_interval: int = 1_000_000,
    extra: str = "",
) -> Path:
    """A node's YAML in ``root``: every port free (0) unless given, one SQLite file (or
    ``datasource_url``) for the coordination store and the snapshots. A
    node restarted on port 0 listens elsewhere: give ``admin_port`` (``free_port()``)
    when something keeps the admin URL across restarts."""
    path = root / f"{name}.yaml"
    url = datasource_url or f"sqlite+aiosqlite:///{root / 'cluster.db'}"
    path.write_text(
        textwrap.dedent(
            f"""\
            node: {{id: {name}, data_dir: "{root / name}"}}
            cluster: {{group_id: {group_id}, heartbeat_interval_ms: {heartbeat_ms},
                      heartbeat_max_retry: 3, event_polling_interval_ms: 50,
                      standby: {standby}}}
            deployment: {{event_sync_server: {{host: 127.0.0.1, port: 0}}}}
            admin: {{port: {admin_port}}}
            ingest: {{http_port: {ingest_port}, tcp_port: 0}}
            query: {{port: 0}}
            engine: {{apps_dir: "{apps_dir}"}}
            state_persistence: {{interval_s: {snapshot_interval_s},
                                digest_interval: {digest_interval}}}
            datasources: [{{name: WALREP_DB, url: "{url}"}}]
            """
        )
        + extra
    )
    return path


@dataclass
class NodeProc:
    """One ``walrep node start`` child process."""

    name: str
    config: Path
    env: Mapping[str, str]
    proc: asyncio.subprocess.Process | None = None
    admin: str = ""
    lines: list[dict[str, Any]] = field(default_factory=list)
    log_path: Path | None = None  # every raw log line is appended here too
    _reader: asyncio.Task[None] | None = None

    def _keep(self, raw: bytes) -> dict[str, Any]:
        if self.log_path is not None:
            with self.log_path.open("ab") as f:
                f.write(raw)
        line = parse_line(raw)
        self.lines.append(line)
        return line

    async def start(self) -> None:
        self.admin = ""
        self.proc = await asyncio.create_subprocess_exec(
            WALREP, "node", "start", "-c", str(self.config), "--log-format", "json",
            env={**os.environ, **self.env}, stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert self.proc.stderr is not None
        head = f"node {self.name} started: "
        async with asyncio.timeout(WAIT_S):
            while not self.admin:
                raw = await self.proc.stderr.readline()
                if not raw:
                    tail = [m["message"] for m in self.lines[-5:]]
                    raise RuntimeError(f"node {self.name} exited before it started: {tail}")
                line = self._keep(raw)
                if str(line["message"]).startswith(head):
                    self.admin = json.loads(line["message"][len(head) :])["admin"]
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while raw := await self.proc.stderr.readline():
            self._keep(raw)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def signal(self, sig: int) -> int:
        """Send ``sig``; the exit status once it is gone (negative: killed by a signal)."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        async with asyncio.timeout(WAIT_S):
            code = await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        return code

    async def kill_if_running(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            await self.proc.wait()

    def messages(self, fragment: str) -> list[dict[str, Any]]:
        return [m for m in self.lines if fragment in str(m.get("message", ""))]


class Admin:
    """GETs against the nodes' admin APIs, and bounded polls for a positive signal."""

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http

    async def get(self, node: NodeProc, path: str) -> tuple[int, Any]:
        return await get_json(self.http, node.admin + path)

    async def until(
        self,
        node: NodeProc,
        path: str,
        ok: Callable[[int, Any], bool],
        what: str,
        timeout_s: float = WAIT_S,
    ) -> Any:
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    status, body = await self.get(node, path)
                    if status and ok(status, body):
                        return body
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise TimeoutError(f"{node.name}: {what} not seen within {timeout_s} s") from None
