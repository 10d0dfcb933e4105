"""``walrep cluster status | history | maintenance``: the coordination database, as seen now.

The commands connect to the node configuration's cluster datasource with the same
store the nodes use (``SqlStore``, the config's ``table_prefix``) and read or change
the group's rows. Every time shown is on the database clock. ``status`` and
``history`` only read (the first call may create the group's lease row, as a node
would); they refuse tables that do not exist instead of creating them.
``maintenance`` creates the tables if needed. No command creates a SQLite file (a
wrong relative path would otherwise give a new, empty database). Exit status: 0 done,
1 the database could not be used, 2 invalid configuration.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import click

from walrep.cli.cluster_list import HEADER, NodeLine, line_json, node_lines
from walrep.cli.config_cmd import ConfigProblem, load_or_fail, redact_url
from walrep.cli.switchover_cmd import failover_cmd, switchover_cmd
from walrep.config import WalrepConfig
from walrep.db import normalize_url
from walrep.errors import ConfigError, CoordinationError
from walrep.node.stores import sql_store
from walrep.replica.group_view import group_document, history_document, iso_utc
from walrep.replica.lease import Observed
from walrep.replica.sql_store import SqlStore
from walrep.replica.store import HistoryRow, NodeRow

EXIT_UNAVAILABLE: Final = 1
DEFAULT_TIMEOUT_MS: Final = 5000
T = TypeVar("T")


class DatabaseProblem(click.ClickException):
    """The coordination database could not be used: exit status 1, no traceback."""

    exit_code = EXIT_UNAVAILABLE


# --- connecting ----------------------------------------------------------------------


@asynccontextmanager
async def open_store(
    config: WalrepConfig, timeout_ms: int, *, create: bool = False
) -> AsyncIterator[SqlStore]:
    """The store on the cluster datasource; ``create`` makes the tables if missing."""
    url = normalize_url(config.datasource(config.cluster.datasource).url)
    if url.get_backend_name() == "sqlite":
        _require_sqlite_file(url.database)
    store = sql_store(config, timeout_ms, pool_size=1)
    try:
        if create:
            await store.setup()
        else:
            await _require_tables(store)
        yield store
    finally:
        await store.close()


def _require_sqlite_file(database: str | None) -> None:
    if not database or database == ":memory:":
        raise CoordinationError("the cluster datasource is an in-memory SQLite database")
    path = Path(database)
    if not path.is_file():
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise CoordinationError(
            f"SQLite database file {database}{where} does not exist: no node has started "
            "with this datasource, or the command runs from another directory",
            retriable=False,
        )


async def _require_tables(store: SqlStore) -> None:
    absent = await store.missing_tables()
    if absent:
        raise CoordinationError(
            f"no walrep coordination tables ({', '.join(absent)}) in the database: no node "
            "has started with this datasource and table_prefix yet",
            retriable=False,
        )


def _run(config: WalrepConfig, work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work``; database and configuration errors become clean exits."""
    try:
        return asyncio.run(_call(work))
    except CoordinationError as e:
        url = redact_url(config.datasource(config.cluster.datasource).url)
        raise DatabaseProblem(f"coordination database {url}: {e}") from e
    except ConfigError as e:
        raise ConfigProblem(str(e)) from e


async def _call(work: Callable[[], Awaitable[T]]) -> T:
    return await work()


# --- formatting ----------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        indent + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in [header, *rows]
    ]


@dataclass(frozen=True, slots=True)
class Status:
    group: str
    datasource: str
    url: str
    lease: Observed
    nodes: list[NodeRow]
    in_sync: dict[str, int]
    lease_ttl_ms: int

    @property
    def expires_in_ms(self) -> int:
        return self.lease.expires_at_ms - self.lease.db_now_ms

    def to_json(self) -> dict[str, Any]:
        doc = group_document(self.group, self.lease, self.nodes, self.in_sync)
        return {
            "group": doc.pop("group"),
            "datasource": {"name": self.datasource, "url": self.url},
        } | doc

    def lines(self) -> list[str]:
        lease = self.lease
        if lease.holder is None:
            holder, expires = "(none: the group has never had a holder)", "-"
        else:
            holder = lease.holder
            left = self.expires_in_ms
            expires = f"{left} ms (database clock)" if left > 0 else f"expired ({-left} ms ago)"
        maintenance = (
            "on (automatic failover paused)" if lease.maintenance else "off (automatic failover)"
        )
        out = [
            f"group:        {self.group}",
            f"datasource:   {self.datasource} ({self.url})",
            f"lease holder: {holder}",
            f"epoch:        {lease.epoch}",
            f"expires in:   {expires}",
            f"maintenance:  {maintenance}",
            "",
            "nodes:",
        ]
        if self.nodes:
            rows = []
            for row in self.nodes:
                info = row.info
                age = f"{row.heartbeat_age_ms} ms"
                if row.heartbeat_age_ms > self.lease_ttl_ms:
                    age += " (stale)"
                address = f"{info.event_sync_host}:{info.event_sync_port}"
                rows.append(
                    [
                        info.node_id,
                        info.role,
                        address,
                        info.admin_url or "-",
                        age,
                        str(info.log_end),
                        str(info.acked),
                    ]
                )
            header = ["NODE", "ROLE", "EVENT-SYNC", "ADMIN URL", "HEARTBEAT AGE"]
            out += _table([*header, "LOG_END", "ACKED"], rows)
        else:
            out.append("  (none has published itself)")
        out += ["", "in-sync standbys:"]
        if self.in_sync:
            for node, epoch in sorted(self.in_sync.items()):
                stale = "" if epoch == lease.epoch else " (stale: older epoch)"
                out.append(f"  {node}  recorded under epoch {epoch}{stale}")
        else:
            out.append("  (none: no standby may take over automatically)")
        return out


# --- commands ------------------------------------------------------------------------

_config_option = click.option(
    "-c",
    "--config",
    "path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A node's configuration file (its cluster datasource, group and table prefix).",
)
_timeout_option = click.option(
    "--timeout-ms",
    type=click.IntRange(min=1),
    default=DEFAULT_TIMEOUT_MS,
    show_default=True,
    help="Give up on a database call after this long.",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group("cluster")
def cluster_group() -> None:
    """Inspect the HA group in the coordination database, or pause automatic failover."""


@cluster_group.command("status")
@_config_option
@_timeout_option
@_json_option
def status(path: Path, timeout_ms: int, as_json: bool) -> None:
    """The lease (holder, epoch, expiry), maintenance flag, nodes and in-sync standbys."""
    config = load_or_fail(path)
    group = config.cluster.group_id

    async def work() -> Status:
        async with open_store(config, timeout_ms) as store:
            lease = await store.read_lease(group)
            nodes = await store.nodes(group)
            in_sync = await store.in_sync_nodes(group)
        datasource = config.datasource(config.cluster.datasource)
        return Status(
            group,
            datasource.name,
            redact_url(datasource.url),
            lease,
            nodes,
            in_sync,
            config.cluster.lease_ttl_ms,
        )

    result = _run(config, work)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        click.echo("\n".join(result.lines()))


@cluster_group.command("history")
@_config_option
@_timeout_option
@_json_option
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Show at most this many rows.",
)
def history(path: Path, timeout_ms: int, as_json: bool, limit: int) -> None:
    """Lease changes of the group, newest first: epoch, time (UTC), from → to, reason."""
    config = load_or_fail(path)
    group = config.cluster.group_id

    async def work() -> list[HistoryRow]:
        async with open_store(config, timeout_ms) as store:
            return await store.history(group, limit)

    rows = _run(config, work)
    if as_json:
        out = history_document(rows)
        click.echo(json.dumps(out, indent=2))
        return
    if not rows:
        click.echo(f"group {group}: no lease changes recorded")
        return
    table = [
        [str(r.epoch), iso_utc(r.at_ms), f"{r.from_node or '(none)'} → {r.to_node}", r.reason]
        for r in rows
    ]
    click.echo("\n".join(_table(["EPOCH", "TIME (UTC)", "FROM → TO", "REASON"], table, "")))


@cluster_group.command("list")
@_config_option
@_timeout_option
@_json_option
def list_nodes(path: Path, timeout_ms: int, as_json: bool) -> None:
    """One line per node: role, epoch, log end, lag, in sync, last heartbeat.

    From the coordination database and each node's admin API (GET /status); a node
    whose admin API does not answer is listed from its database row, marked unreachable.
    """
    config = load_or_fail(path)
    group = config.cluster.group_id

    async def work() -> tuple[Observed, list[NodeLine]]:
        async with open_store(config, timeout_ms) as store:
            lease = await store.read_lease(group)
            rows = await store.nodes(group)
            in_sync = await store.in_sync_nodes(group)
        ttl_ms = config.cluster.lease_ttl_ms
        return lease, await node_lines(lease, rows, in_sync, ttl_ms, timeout_ms)

    lease, lines = _run(config, work)
    if as_json:
        doc = {
            "group": group,
            "holder": lease.holder,
            "epoch": lease.epoch,
            "maintenance": lease.maintenance,
            "nodes": [line_json(line) for line in lines],
        }
        click.echo(json.dumps(doc, indent=2))
        return
    holder = (
        f"{lease.holder} holds the lease under epoch {lease.epoch}"
        if lease.holder
        else ("no holder yet")
    )
    paused = " (maintenance: automatic failover paused)" if lease.maintenance else ""
    click.echo(f"group {group}: {holder}{paused}")
    if not lines:
        click.echo("  (no node has published itself)")
        return
    click.echo("\n".join(_table(HEADER, [line.cells() for line in lines], "")))


@cluster_group.command("maintenance")
@click.argument("state", type=click.Choice(["on", "off"]))
@_config_option
@_timeout_option
def maintenance(state: str, path: Path, timeout_ms: int) -> None:
    """Pause (on) or resume (off) automatic failover of the group (also: pause, resume).

    While on, no standby takes the lease when it expires; only the current holder may
    keep or re-take it (a forced failover still can). The flag lives in the database,
    so it holds across restarts of the nodes until it is turned off.
    """
    _set_maintenance(path, timeout_ms, state == "on")


@cluster_group.command("pause")
@_config_option
@_timeout_option
def pause(path: Path, timeout_ms: int) -> None:
    """Pause automatic failover (maintenance on) until `walrep cluster resume`."""
    _set_maintenance(path, timeout_ms, True)


@cluster_group.command("resume")
@_config_option
@_timeout_option
def resume(path: Path, timeout_ms: int) -> None:
    """Resume automatic failover (maintenance off)."""
    _set_maintenance(path, timeout_ms, False)


def _set_maintenance(path: Path, timeout_ms: int, on: bool) -> None:
    config = load_or_fail(path)
    group = config.cluster.group_id

    async def work() -> Observed:
        async with open_store(config, timeout_ms, create=True) as store:
            await store.set_maintenance(group, on)
            return await store.read_lease(group)

    lease = _run(config, work)
    holder = f"holder {lease.holder}, epoch {lease.epoch}" if lease.holder else "no holder yet"
    if lease.maintenance:
        click.echo(f"maintenance: on — automatic failover paused for group {group} ({holder})")
    else:
        click.echo(f"maintenance: off — automatic failover active for group {group} ({holder})")


cluster_group.add_command(switchover_cmd)
cluster_group.add_command(failover_cmd)
