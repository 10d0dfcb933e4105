"""The coordination store on a relational database (SQLite, MariaDB/MySQL, PostgreSQL).

Tables (``<prefix>`` defaults to ``walrep_``), every row scoped by ``group_id``::

    <prefix>schema_version (id, version)
    <prefix>lease    (group_id, holder, epoch, expires_at_ms, released, maintenance)
    <prefix>nodes    (group_id, node_id, role, event_sync_host, event_sync_port,
                      admin_url, heartbeat_at_ms, log_end, acked)
    <prefix>in_sync  (group_id, node_id, since_epoch)
    <prefix>history  (id, group_id, epoch, at_ms, from_node, to_node, reason)

All times are milliseconds on the database's clock (``db.now_ms_sql``). Every
decision is one transaction that first locks the group's lease row (``FOR UPDATE``;
``BEGIN IMMEDIATE`` on SQLite), so acquire, renew and in-sync changes are serialized
per group; the acquire's UPDATE also repeats the compare-and-set on the epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine

from walrep.db import for_update, now_ms_sql
from walrep.db_tx import Transactions
from walrep.errors import CoordinationError
from walrep.replica.lease import Observed
from walrep.replica.store import HistoryRow, NodeInfo, NodeRow, acquire_reason, decide_acquire

SCHEMA_VERSION = 1
T = TypeVar("T")
_ID = sa.String(128)


class SqlStore:
    def __init__(
        self, engine: AsyncEngine, *, table_prefix: str = "walrep_", call_timeout_ms: int = 1000
    ) -> None:
        self.engine = engine
        self.call_timeout_ms = call_timeout_ms
        self._now = now_ms_sql(engine)
        self._lock_rows = for_update(engine)
        self._runner = Transactions(engine, busy_timeout_ms=call_timeout_ms)
        self._groups: set[str] = set()  # groups whose lease row is known to exist
        md = self.metadata = sa.MetaData()
        p = table_prefix
        self.version = sa.Table(
            f"{p}schema_version",
            md,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("version", sa.Integer),
        )
        self.lease = sa.Table(
            f"{p}lease",
            md,
            sa.Column("group_id", _ID, primary_key=True),
            sa.Column("holder", _ID, nullable=True),
            sa.Column("epoch", sa.BigInteger, nullable=False),
            sa.Column("expires_at_ms", sa.BigInteger, nullable=False),
            sa.Column("released", sa.Boolean, nullable=False),
            sa.Column("maintenance", sa.Boolean, nullable=False),
        )
        self.nodes_t = sa.Table(
            f"{p}nodes",
            md,
            sa.Column("group_id", _ID, primary_key=True),
            sa.Column("node_id", _ID, primary_key=True),
            sa.Column("role", sa.String(32), nullable=False),
            sa.Column("event_sync_host", sa.String(255), nullable=False),
            sa.Column("event_sync_port", sa.Integer, nullable=False),
            sa.Column("admin_url", sa.String(512), nullable=False),
            sa.Column("heartbeat_at_ms", sa.BigInteger, nullable=False),
            sa.Column("log_end", sa.BigInteger, nullable=False),
            sa.Column("acked", sa.BigInteger, nullable=False),
        )
        self.in_sync = sa.Table(
            f"{p}in_sync",
            md,
            sa.Column("group_id", _ID, primary_key=True),
            sa.Column("node_id", _ID, primary_key=True),
            sa.Column("since_epoch", sa.BigInteger, nullable=False),
        )
        self.history_t = sa.Table(
            f"{p}history",
            md,
            sa.Column(
                "id",
                sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                primary_key=True,
                autoincrement=True,
            ),
            sa.Column("group_id", _ID, nullable=False, index=True),
            sa.Column("epoch", sa.BigInteger, nullable=False),
            sa.Column("at_ms", sa.BigInteger, nullable=False),
            sa.Column("from_node", _ID, nullable=True),
            sa.Column("to_node", _ID, nullable=False),
            sa.Column("reason", sa.String(512), nullable=False),
        )

    # --- plumbing ---------------------------------------------------------------------------

    async def _tx(
        self, what: str, body: Callable[[sa.Connection], T], group: str | None = None,
        *, read_only: bool = False,
    ) -> T:  # fmt: skip
        if group is not None:
            await self._ensure_group(group)
        return await self._runner.run(
            what, body, timeout_ms=self.call_timeout_ms, read_only=read_only
        )

    def _lease_row(self, conn: sa.Connection, group: str, *, lock: bool) -> tuple[Observed, bool]:
        """The group's lease row and its released flag; with ``lock``, locked for this
        transaction (``FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE`` already holds the lock)."""
        query = sa.select(self.lease, self._now.label("now")).where(self.lease.c.group_id == group)
        if lock and self._lock_rows:
            query = query.with_for_update()
        m = conn.execute(query).one()._mapping
        seen = Observed(
            m["holder"], m["epoch"], m["expires_at_ms"], m["now"], bool(m["maintenance"])
        )
        return seen, bool(m["released"])

    def _in_sync_epoch(self, conn: sa.Connection, group: str, node: str) -> int | None:
        t = self.in_sync
        query = sa.select(t.c.since_epoch).where(t.c.group_id == group, t.c.node_id == node)
        value = conn.execute(query).scalar_one_or_none()
        return None if value is None else int(value)

    def _locked_lease(self, conn: sa.Connection, group: str) -> Observed:
        return self._lease_row(conn, group, lock=True)[0]

    async def _ensure_group(self, group: str) -> None:
        """Create the group's lease row in its own transaction, before any locking read.

        (A ``SELECT ... FOR UPDATE`` of a missing row takes gap locks on InnoDB; two
        nodes doing that and then inserting deadlock. A plain insert that loses the race
        just fails with a duplicate key.)
        """
        if group in self._groups:
            return

        def insert(conn: sa.Connection) -> None:
            exists = conn.execute(
                sa.select(self.lease.c.epoch).where(self.lease.c.group_id == group)
            ).first()
            if exists is None:
                values = {
                    "group_id": group,
                    "epoch": 0,
                    "expires_at_ms": 0,
                    "released": False,
                    "maintenance": False,
                }
                conn.execute(sa.insert(self.lease).values(holder=None, **values))

        try:
            await self._tx("create the group's lease row", insert)
        except CoordinationError as e:
            if not isinstance(e.__cause__, IntegrityError):
                raise
        self._groups.add(group)

    # --- schema -----------------------------------------------------------------------------

    async def setup(self) -> None:
        """Create the tables and the schema-version row if missing; check the version."""

        def create(conn: sa.Connection) -> None:
            self.metadata.create_all(conn, checkfirst=True)

        for attempt in range(3):  # two nodes starting together may race on CREATE TABLE
            try:
                await self._runner.run(
                    "create coordination tables", create, timeout_ms=self.call_timeout_ms * 5
                )
                break
            except CoordinationError as e:
                if attempt == 2 or not isinstance(
                    e.__cause__, (OperationalError, ProgrammingError, IntegrityError)
                ):
                    raise

        def version(conn: sa.Connection) -> int:
            found = conn.execute(
                sa.select(self.version.c.version).where(self.version.c.id == 1)
            ).first()
            if found is not None:
                return int(found[0])
            try:
                with conn.begin_nested():
                    conn.execute(sa.insert(self.version).values(id=1, version=SCHEMA_VERSION))
            except IntegrityError:
                return int(conn.execute(sa.select(self.version.c.version)).scalar_one())
            return SCHEMA_VERSION

        found = await self._tx("read schema version", version)
        if found != SCHEMA_VERSION:
            raise CoordinationError(
                f"coordination schema version {found} in the database, "
                f"this walrep needs {SCHEMA_VERSION}",
                retriable=False,
            )

    async def missing_tables(self) -> list[str]:
        """The names of this store's tables that the database lacks."""
        names = [table.name for table in self.metadata.sorted_tables]

        def missing(conn: sa.Connection) -> list[str]:
            inspector = sa.inspect(conn)
            return [n for n in names if not inspector.has_table(n)]

        return await self._tx("look for the coordination tables", missing, read_only=True)

    # --- lease ------------------------------------------------------------------------------

    async def db_now_ms(self) -> int:
        def body(conn: sa.Connection) -> int:
            return int(conn.execute(sa.select(self._now)).scalar_one())

        return await self._tx("read database clock", body, read_only=True)

    async def read_lease(self, group: str) -> Observed:
        def body(conn: sa.Connection) -> Observed:
            return self._lease_row(conn, group, lock=False)[0]

        return await self._tx("read lease", body, group, read_only=True)

    async def try_acquire(
        self, group: str, node: str, expected_epoch: int, ttl_ms: int, *, force: bool = False
    ) -> tuple[bool, Observed]:
        """Compare-and-set the lease to ``node`` under ``expected_epoch + 1``.

        A read without locks comes first: while the lease is held (a standby polling), it
        answers "not allowed" without taking the lock the holder's renewals need. Only an
        attempt that may succeed locks the row and decides again, under the lock.
        """

        def look(conn: sa.Connection) -> tuple[bool, Observed]:
            seen = self._lease_row(conn, group, lock=False)[0]
            in_sync_epoch = self._in_sync_epoch(conn, group, node)
            return decide_acquire(seen, node, expected_epoch, in_sync_epoch, force)[0], seen

        def body(conn: sa.Connection) -> tuple[bool, Observed]:
            seen, released = self._lease_row(conn, group, lock=True)
            in_sync_epoch = self._in_sync_epoch(conn, group, node)
            allowed, in_sync = decide_acquire(seen, node, expected_epoch, in_sync_epoch, force)
            if not allowed:
                return False, seen
            updated = conn.execute(
                sa.update(self.lease)
                .where(self.lease.c.group_id == group, self.lease.c.epoch == expected_epoch)
                .values(
                    holder=node,
                    epoch=expected_epoch + 1,
                    expires_at_ms=self._now + ttl_ms,
                    released=False,
                )
            )
            if updated.rowcount != 1:
                return False, self._locked_lease(conn, group)
            reason = acquire_reason(seen.holder, node, released, force, in_sync)[:512]
            conn.execute(
                sa.insert(self.history_t).values(
                    group_id=group,
                    epoch=expected_epoch + 1,
                    at_ms=self._now,
                    from_node=seen.holder,
                    to_node=node,
                    reason=reason,
                )
            )
            return True, self._locked_lease(conn, group)

        allowed, seen = await self._tx("look at the lease", look, group, read_only=True)
        if not allowed:
            return False, seen
        return await self._tx("acquire lease", body, group)

    def _held(self, group: str, node: str, epoch: int) -> sa.ColumnElement[bool]:
        c = self.lease.c
        return sa.and_(c.group_id == group, c.holder == node, c.epoch == epoch)

    async def renew(self, group: str, node: str, epoch: int, ttl_ms: int) -> bool:
        def body(conn: sa.Connection) -> bool:
            return self._extend(conn, group, node, epoch, ttl_ms)

        return await self._tx("renew lease", body, group)

    def _extend(self, conn: sa.Connection, group: str, node: str, epoch: int, ttl_ms: int) -> bool:
        result = conn.execute(
            sa.update(self.lease)
            .where(self._held(group, node, epoch), self.lease.c.expires_at_ms > self._now)
            .values(expires_at_ms=self._now + ttl_ms)
        )
        return bool(result.rowcount == 1)

    async def release(self, group: str, node: str, epoch: int) -> bool:
        def body(conn: sa.Connection) -> bool:
            result = conn.execute(
                sa.update(self.lease)
                .where(self._held(group, node, epoch))
                .values(expires_at_ms=self._now, released=True)
            )
            return bool(result.rowcount == 1)

        return await self._tx("release lease", body, group)

    async def set_in_sync(
        self, group: str, holder: str, epoch: int, standby: str, in_sync: bool, ttl_ms: int
    ) -> bool:
        def body(conn: sa.Connection) -> bool:
            if not self._extend(conn, group, holder, epoch, ttl_ms):  # locks the lease row
                return False
            t = self.in_sync
            conn.execute(sa.delete(t).where(t.c.group_id == group, t.c.node_id == standby))
            if in_sync:
                conn.execute(
                    sa.insert(t).values(group_id=group, node_id=standby, since_epoch=epoch)
                )
            return True

        return await self._tx("record in-sync standby", body, group)

    async def in_sync_nodes(self, group: str) -> dict[str, int]:
        def body(conn: sa.Connection) -> dict[str, int]:
            t = self.in_sync
            rows = conn.execute(
                sa.select(t.c.node_id, t.c.since_epoch).where(t.c.group_id == group)
            )
            return {r.node_id: int(r.since_epoch) for r in rows}

        return await self._tx("read in-sync standbys", body, read_only=True)

    async def set_maintenance(self, group: str, on: bool) -> None:
        def body(conn: sa.Connection) -> None:
            self._locked_lease(conn, group)
            conn.execute(
                sa.update(self.lease).where(self.lease.c.group_id == group).values(maintenance=on)
            )

        await self._tx("set maintenance flag", body, group)

    # --- nodes and history ------------------------------------------------------------------

    async def publish_node(self, group: str, info: NodeInfo) -> None:
        def body(conn: sa.Connection) -> None:
            t = self.nodes_t
            conn.execute(sa.delete(t).where(t.c.group_id == group, t.c.node_id == info.node_id))
            conn.execute(
                sa.insert(t).values(
                    group_id=group,
                    node_id=info.node_id,
                    role=info.role,
                    event_sync_host=info.event_sync_host,
                    event_sync_port=info.event_sync_port,
                    admin_url=info.admin_url,
                    heartbeat_at_ms=self._now,
                    log_end=info.log_end,
                    acked=info.acked,
                )
            )

        await self._tx("publish node", body)

    async def nodes(self, group: str) -> list[NodeRow]:
        def body(conn: sa.Connection) -> list[NodeRow]:
            t = self.nodes_t
            query = (
                sa.select(t, self._now.label("now"))
                .where(t.c.group_id == group)
                .order_by(t.c.node_id)
            )
            out = []
            for r in conn.execute(query):
                info = NodeInfo(
                    r.node_id,
                    r.role,
                    r.event_sync_host,
                    r.event_sync_port,
                    r.admin_url,
                    r.log_end,
                    r.acked,
                )
                out.append(
                    NodeRow(info, int(r.heartbeat_at_ms), int(r.now) - int(r.heartbeat_at_ms))
                )
            return out

        return await self._tx("read nodes", body, read_only=True)

    async def history(self, group: str, limit: int = 100) -> list[HistoryRow]:
        def body(conn: sa.Connection) -> list[HistoryRow]:
            t = self.history_t
            query = sa.select(t).where(t.c.group_id == group).order_by(t.c.id.desc()).limit(limit)
            return [
                HistoryRow(int(r.epoch), int(r.at_ms), r.from_node, r.to_node, r.reason)
                for r in conn.execute(query)
            ]

        return await self._tx("read history", body, read_only=True)

    async def close(self) -> None:
        await self._runner.close()
        await self.engine.dispose()
