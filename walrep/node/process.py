"""The node process ``walrep node start`` runs: a ``Node`` with its engine and its servers.

Ports by role (DESIGN.md, "Ports"; each + ``port_offset``): the admin API and the event
sync listen on both nodes from start to stop; HTTP and TCP ingest and the Store Query
API listen **only while this node is the active** (bound after the role became ACTIVE,
closed as soon as it is not: on the passive a client or load balancer gets "connection
refused").

Order at start: the admin API first (``/health`` answers while the log recovers), then
the node (log recovery, engine restore, event-sync port, the lease), then the role
follower that opens and closes ingest. SIGTERM or SIGINT: ingest closes first (nothing
new is taken), the node stops (it releases the lease so the peer takes over without
waiting for expiry, fails what was waiting, closes the log), then the admin API; exit
status 0. A port that cannot be bound is exit status 1, naming it. SIGKILL at any moment
loses no acknowledged event (an append is answered only once committed).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import sys
import time
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web
from prometheus_client import CollectorRegistry

from walrep.config import WalrepConfig
from walrep.engine.loader import load_apps
from walrep.engine.snapshots import store_from_config
from walrep.errors import WalrepError
from walrep.node.admin import admin_app
from walrep.node.engine_host import EngineHost
from walrep.node.fsync_timing import TimedFileOps
from walrep.node.ingest_http import IngestApi
from walrep.node.ingest_tcp import TcpIngest
from walrep.node.loop_lag import lag_histogram, watch_loop_lag
from walrep.node.query_http import QueryApi
from walrep.node.role import Role
from walrep.node.runtime import Node

log = logging.getLogger("walrep.process")

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
ROLE_WAIT_S: Final = 3600.0  # the role follower re-checks at least this often


def engine_host(config: WalrepConfig) -> EngineHost:
    """The engine of ``config``: its apps, its snapshot store (``state_persistence``)."""
    section = config.state_persistence
    return EngineHost(
        load_apps(config.engine.apps_dir),
        store=store_from_config(config) if section.enabled else None,
        snapshot_interval_s=section.interval_s,
        revisions_to_keep=section.revisions_to_keep,
        digest_interval=section.digest_interval,
    )


class NodeProcess:
    """One node and its servers (see the module docstring). ``await run()`` until a
    signal or ``request_stop()``; returns the exit status."""

    def __init__(self, config: WalrepConfig) -> None:
        self.config = config
        token = config.ingest.token()  # ConfigError before anything is opened
        self.host = engine_host(config)
        self.registry = CollectorRegistry()  # /metrics: the node's collector and ingest's
        self.loop_lag = lag_histogram(self.registry)
        ops = TimedFileOps(self.registry)
        self.node = Node.from_config(config, engine=self.host, file_ops=ops)
        self.ingest = IngestApi(
            self.node,
            self.host.apps,
            token=token,
            max_request_bytes=config.ingest.max_request_bytes,
            max_events_per_request=config.ingest.max_events_per_request,
            registry=self.registry,
        )
        self.admin_url: str | None = None
        self.ingest_url: str | None = None
        self.ingest_tcp_url: str | None = None
        self.query_url: str | None = None
        self.query = QueryApi(self.node, self.host.apps)
        self._query: web.AppRunner | None = None
        self.tcp = TcpIngest(
            self.ingest,
            config.node.id,
            max_in_flight=config.ingest.tcp_max_in_flight,
            max_connections=config.ingest.tcp_max_connections,
        )
        self._admin: web.AppRunner | None = None
        self._ingest: web.AppRunner | None = None
        self._stop = asyncio.Event()
        self._exit = EXIT_OK
        self._switching = False  # a switchover keeps ingest closed while the role is ACTIVE

    def request_stop(self, status: int = EXIT_OK) -> None:
        self._exit = max(self._exit, status)
        self._stop.set()

    def urls(self) -> Mapping[str, str | None]:
        """This node's listening addresses now (None: not listening here)."""
        sync = self.node.address
        return {
            "admin": self.admin_url,
            "ingest_http": self.ingest_url,
            "ingest_tcp": self.ingest_tcp_url,
            "query": self.query_url,
            "event_sync": f"tcp://{sync[0]}:{sync[1]}" if sync else None,
        }

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        background: list[asyncio.Task[None]] = []
        try:
            self._admin, self.admin_url = await self._serve(
                admin_app(
                    self.node,
                    urls=self.urls,
                    switchover=self.switchover,
                    takeover=self.takeover,
                    admin_token=self.config.admin.token(),
                    registry=self.registry,
                ),
                self.config.admin.host,
                self.config.port(self.config.admin.port),
                "admin API",
            )
            # Published with the node's row: `walrep cluster list` asks each node there.
            self.node.settings = dataclasses.replace(
                self.node.settings, admin_url=self.admin_url or ""
            )
            await self.node.start()
            urls = json.dumps(dict(self.urls()))
            log.info("node %s started: %s", self.node.settings.node_id, urls)
            background = [
                asyncio.create_task(self._follow_role(), name="ingest by role"),
                asyncio.create_task(
                    watch_loop_lag(self.loop_lag, self.config.node.id), name="loop lag"
                ),
            ]

            await self._stop.wait()
        except OSError as e:
            log.error("node %s cannot start: %s", self.config.node.id, e)
            self._exit = EXIT_FAILED
        except WalrepError as e:
            log.error("node %s failed: %s", self.config.node.id, e)
            self._exit = EXIT_FAILED
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self._shutdown(background)
        return self._exit

    async def _shutdown(self, background: list[asyncio.Task[None]]) -> None:
        started = time.monotonic()
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close_ingest()
        await self.node.stop()
        if self._admin is not None:
            await self._admin.cleanup()
        log.info(
            "node %s stopped in %d ms",
            self.config.node.id,
            (time.monotonic() - started) * 1000,
        )

    def _wants_ingest(self) -> bool:
        return self.node.role is Role.ACTIVE and not self._switching

    async def _follow_role(self) -> None:
        """Ingest listens exactly while the node is the active (and not handing over)."""
        while True:
            want = self._wants_ingest()
            if want and self._ingest is None:
                try:
                    await self._open_ingest()
                except OSError as e:
                    log.error("node %s cannot open ingest: %s", self.config.node.id, e)
                    self.request_stop(EXIT_FAILED)
                    return
            elif not want and self._ingest is not None:
                await self._close_ingest()
            with contextlib.suppress(TimeoutError):
                await self.node.wait_until(
                    lambda n: self._wants_ingest() != (self._ingest is not None), ROLE_WAIT_S
                )

    async def switchover(self, to: str | None) -> tuple[int, dict[str, Any]]:
        """``POST /switchover``: hand the active role to the in-sync standby, losing
        nothing and without waiting for the lease to expire. In order: ingest closes (no
        new event is taken), the standby catches up with everything written, the lease is
        released (the standby's next poll wins it), this node follows again after three
        lease lifetimes. 409 (and ingest reopens) when this node is not the active, the
        standby is not ``to`` or not in sync, or it does not catch up within
        ``admin.switchover_timeout_ms``."""
        node, me = self.node, self.config.node.id
        term = node.core.term if node.core is not None else None
        standby = term.shipper.standby if term is not None else None
        refusal = None
        if node.role is not Role.ACTIVE or term is None:
            refusal = ("not_active", f"{me} is {node.role.value}, not the active")
        elif to == me:
            refusal = ("already_active", f"{me} is the active already")
        elif to is not None and standby != to:
            refusal = ("unknown_standby", f"the standby is {standby!r}, not {to!r}")
        elif not node.standby_in_sync:
            refusal = ("standby_not_in_sync", f"the standby {standby!r} is not in sync")
        elif self._switching:
            refusal = ("in_progress", "a switchover is in progress")
        if refusal is not None:
            return 409, {"error": refusal[0], "message": refusal[1]}
        assert term is not None
        timeout_s = self.config.admin.switchover_timeout_ms / 1000
        started = time.monotonic()
        self._switching = True
        try:
            await self._close_ingest()
            closed_ms = (time.monotonic() - started) * 1000

            def caught_up(n: Node) -> bool:
                if n.role is not Role.ACTIVE:
                    return True
                end = n.log.log_end
                return n.committed == end and term.shipper.acked >= end

            try:
                await node.wait_until(caught_up, timeout_s)
            except TimeoutError:
                message = f"the standby {standby!r} did not catch up in {timeout_s} s"
                return 409, {"error": "standby_behind", "message": message}
            if node.role is not Role.ACTIVE:
                return 409, {"error": "not_active", "message": f"{me} lost the lease meanwhile"}
            epoch, end = node.epoch, node.log.log_end
            node.release(3 * self.config.cluster.lease_ttl_ms)
            try:
                await node.wait_until(lambda n: n.role is not Role.ACTIVE, timeout_s)
            except TimeoutError:
                message = f"the release of epoch {epoch} was not confirmed in {timeout_s} s"
                return 409, {"error": "release_pending", "message": message}
            released_ms = (time.monotonic() - started) * 1000
            log.info(
                "node %s: switchover to %s: ingest closed in %d ms, lease of epoch %d "
                "released at offset %d after %d ms",
                me,
                standby,
                closed_ms,
                epoch,
                end,
                released_ms,
            )
            return 200, {
                "released_epoch": epoch,
                "log_end": end,
                "to": standby,
                "ingest_closed_ms": round(closed_ms, 1),
                "released_ms": round(released_ms, 1),
            }
        finally:
            self._switching = False

    async def takeover(self, force: bool) -> tuple[int, dict[str, Any]]:
        """``POST /takeover``: make this passive the active. Without ``force`` it is
        refused: a standby takes over by itself when the active's lease expires, if it
        may without loss; when it may not (it is not in sync, its data directory lost
        events), only a forced takeover makes it active, and the lease history records
        it with what may be lost. Use ``switchover`` while the active is alive."""
        node, me = self.node, self.config.node.id
        core = node.core
        if node.role is Role.ACTIVE:
            return 409, {"error": "already_active", "message": f"{me} is the active already"}
        if node.role is not Role.PASSIVE or core is None:
            return 409, {"error": "not_ready", "message": f"{me} is {node.role.value}"}
        if not force:
            why = core.held_back or "it takes the lease by itself once the active's expires"
            message = f"{me} takes over only with force: {why}"
            return 409, {"error": "needs_force", "message": message}
        log.warning("node %s: forced takeover requested by an operator", me)
        node.force_takeover()
        try:
            await node.wait_until(
                lambda n: n.role is Role.ACTIVE, self.config.admin.switchover_timeout_ms / 1000
            )
        except TimeoutError:
            message = f"{me} did not win the lease in time (is the active still renewing it?)"
            return 409, {"error": "takeover_pending", "message": message}
        return 200, {"node": me, "epoch": node.epoch, "log_end": node.log.log_end, "forced": True}

    async def _open_ingest(self) -> None:
        started = time.monotonic()
        section = self.config.ingest
        self._ingest, self.ingest_url = await self._serve(
            self.ingest.app(), section.host, self.config.port(section.http_port), "HTTP ingest"
        )
        try:
            self.ingest_tcp_url = await self.tcp.start(
                section.host, self.config.port(section.tcp_port)
            )
            self._query, self.query_url = await self._serve(
                self.query.app(),
                self.config.query.host,
                self.config.port(self.config.query.port),
                "Store Query API",
            )
        except OSError as e:
            await self._close_ingest()
            raise OSError(e.errno, f"the active's ports on {section.host}: {e.strerror}") from e
        log.info(
            "node %s: ingest open at %s and %s, queries at %s (%d ms)",
            self.config.node.id,
            self.ingest_url,
            self.ingest_tcp_url,
            self.query_url,
            (time.monotonic() - started) * 1000,
        )

    async def _close_ingest(self) -> None:
        runner, self._ingest, self.ingest_url = self._ingest, None, None
        self.ingest_tcp_url = None
        await self.tcp.close()
        query, self._query, self.query_url = self._query, None, None
        if query is not None:
            await query.cleanup()
        if runner is not None:
            await runner.cleanup()
            log.info("node %s: ingest closed", self.config.node.id)

    async def _serve(
        self, app: web.Application, host: str, port: int, what: str
    ) -> tuple[web.AppRunner, str]:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            raise OSError(e.errno, f"{what} on {host}:{port}: {e.strerror}") from e
        bound = runner.addresses[0]
        return runner, f"http://{bound[0]}:{bound[1]}"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts`` (ISO 8601, UTC), ``level``, ``logger``, ``message``."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def configure_logging(fmt: str, level: str) -> None:
    """Structured logs on stderr: ``text`` (one line an event) or ``json``."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
