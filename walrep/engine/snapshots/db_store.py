"""Snapshots in a relational database (SQLite, MariaDB/MySQL, PostgreSQL).

Tables (``<table>`` defaults to ``walrep_snapshots``), every row scoped by ``group_id``
so that groups can share a database::

    <table>_fence   (group_id, epoch, next_snapshot_id)      one row per group
    <table>         (group_id, snapshot_id, snap_epoch, snap_offset, meta_json,
                     chunk_count, blob_bytes, created_ms)     one header row per snapshot
    <table>_chunks  (group_id, snapshot_id, chunk_index, data) the blob, in chunks

A save is a few short transactions, so that no lock is held for the whole write (on
SQLite a write transaction locks the whole file, the coordination store's too): (1) lock
the group's fence row (``FOR UPDATE``; ``BEGIN IMMEDIATE`` on SQLite), compare its
epoch with the snapshot's and refuse a lower one, raise the fence and take the next
snapshot id; (2) insert the chunks, at most ``SAVE_TX_BYTES`` per transaction; (3) lock
the fence row again, refuse (and delete the chunks) if a newer epoch raised it
meanwhile, check that every chunk is there, insert the header row. Readers list header
rows only, so a snapshot is visible once its header is, whole. Chunks without a header
(a save that died between its transactions) are deleted by the next trim, which locks
the fence row first, so a group's saves and trims take turns at each step.

Driver errors become ``SnapshotError`` naming the operation (retriable unless our SQL
is wrong); a stale epoch is ``SnapshotFencedError`` (not retriable).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine

from walrep.db import for_update
from walrep.db_tx import Transactions
from walrep.engine.snapshots import format as fmt
from walrep.engine.snapshots.store import SnapshotId, SnapshotInfo, newest_first_key
from walrep.engine.types import SnapshotMeta
from walrep.errors import (
    CoordinationError,
    SnapshotCorruptError,
    SnapshotError,
    SnapshotFencedError,
    SnapshotNotFoundError,
    SnapshotTooLargeError,
)

T = TypeVar("T")
DEFAULT_TABLE = "walrep_snapshots"
CALL_TIMEOUT_MS_DEFAULT = 60_000
_ID = sa.String(128)
_BLOB = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
_TRIM_BATCH = 500  # snapshot ids per DELETE ... IN (...)
SAVE_TX_BYTES = 2 * 1024 * 1024  # chunk bytes per transaction of a save (bounded lock hold)


def _groups(chunks: Sequence[bytes], max_bytes: int) -> list[tuple[int, list[bytes]]]:
    """``(index of the first, chunks)`` runs of at most ``max_bytes`` (at least one each)."""
    out: list[tuple[int, list[bytes]]] = []
    size = 0
    for index, chunk in enumerate(chunks):
        if not out or size + len(chunk) > max_bytes:
            out.append((index, []))
            size = 0
        out[-1][1].append(chunk)
        size += len(chunk)
    return out


class DbSnapshotStore:
    """The snapshots of one group in ``<table>`` tables; give it an engine of its own."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        group_id: str,
        table: str = DEFAULT_TABLE,
        chunk_bytes: int = fmt.CHUNK_BYTES_DEFAULT,
        max_state_bytes: int = fmt.STATE_BYTES_MAX_DEFAULT,
        call_timeout_ms: int = CALL_TIMEOUT_MS_DEFAULT,
    ) -> None:
        assert fmt.CHUNK_BYTES_MIN <= chunk_bytes <= fmt.CHUNK_BYTES_MAX, chunk_bytes
        self.engine = engine
        self.group_id = group_id
        self.table = table
        self.chunk_bytes = chunk_bytes
        self.max_state_bytes = max_state_bytes
        self.call_timeout_ms = call_timeout_ms
        self._lock_rows = for_update(engine)
        self._runner = Transactions(engine, busy_timeout_ms=call_timeout_ms)
        self._fence_ready = False
        md = self.metadata = sa.MetaData()
        self.fence_t = sa.Table(
            f"{table}_fence",
            md,
            sa.Column("group_id", _ID, primary_key=True),
            sa.Column("epoch", sa.BigInteger, nullable=False),
            sa.Column("next_snapshot_id", sa.BigInteger, nullable=False),
        )
        self.header_t = sa.Table(
            table,
            md,
            sa.Column("group_id", _ID, primary_key=True),
            sa.Column("snapshot_id", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("snap_epoch", sa.BigInteger, nullable=False),
            sa.Column("snap_offset", sa.BigInteger, nullable=False),
            sa.Column("meta_json", _BLOB, nullable=False),
            sa.Column("chunk_count", sa.Integer, nullable=False),
            sa.Column("blob_bytes", sa.BigInteger, nullable=False),
            sa.Column("created_ms", sa.BigInteger, nullable=False),
        )
        self.chunks_t = sa.Table(
            f"{table}_chunks",
            md,
            sa.Column("group_id", _ID, primary_key=True),
            sa.Column("snapshot_id", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("chunk_index", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("data", _BLOB, nullable=False),
        )

    # --- plumbing ---------------------------------------------------------------------------

    async def _tx(
        self, what: str, body: Callable[[sa.Connection], T], *, read_only: bool = False
    ) -> T:
        try:
            return await self._runner.run(
                f"{what} ({self.table})", body, timeout_ms=self.call_timeout_ms, read_only=read_only
            )
        except CoordinationError as e:
            error = SnapshotError(f"snapshot store: {e}")
            error.retriable = e.retriable
            raise error from e

    def _where(self, table: sa.Table, snapshot_id: int | None = None) -> sa.ColumnElement[bool]:
        clause = table.c.group_id == self.group_id
        if snapshot_id is not None:
            clause = sa.and_(clause, table.c.snapshot_id == snapshot_id)
        return clause

    # --- schema -----------------------------------------------------------------------------

    async def setup(self) -> None:
        """Create the tables if missing, then the group's fence row (both race-safe)."""

        def create(conn: sa.Connection) -> None:
            self.metadata.create_all(conn, checkfirst=True)

        for attempt in range(3):  # two nodes starting together may race on CREATE TABLE
            try:
                await self._tx("create snapshot tables", create)
                break
            except SnapshotError as e:
                if attempt == 2 or not isinstance(
                    _driver_error(e), (OperationalError, ProgrammingError, IntegrityError)
                ):
                    raise
        await self._ensure_fence("setup")

    async def _ensure_fence(self, step: str) -> None:
        """Insert the group's fence row in its own transaction, before any locking read.

        (A ``SELECT ... FOR UPDATE`` of a missing row takes gap locks on InnoDB; two nodes
        doing that and then inserting deadlock. A plain insert that loses the race fails
        with a duplicate key, which means the row exists: fine.)
        """
        if self._fence_ready:
            return

        def insert(conn: sa.Connection) -> None:
            found = (conn.execute(sa.select(self.fence_t.c.epoch).where(self._fence))).first()
            if found is None:
                conn.execute(
                    sa.insert(self.fence_t).values(
                        group_id=self.group_id, epoch=0, next_snapshot_id=1
                    )
                )

        try:
            await self._tx(f"{step}: create the group's snapshot fence row", insert)
        except SnapshotError as e:
            if not isinstance(_driver_error(e), IntegrityError):
                raise
        self._fence_ready = True

    @property
    def _fence(self) -> sa.ColumnElement[bool]:
        return self._where(self.fence_t)

    def _lock_fence(self, conn: sa.Connection) -> tuple[int, int]:
        """The group's fence ``(epoch, next snapshot id)``, locked until this transaction ends."""
        query = sa.select(self.fence_t.c.epoch, self.fence_t.c.next_snapshot_id).where(self._fence)
        if self._lock_rows:
            query = query.with_for_update()
        row = (conn.execute(query)).first()
        if row is None:
            raise SnapshotError(f"snapshot store {self.table}: the fence row is missing")
        return int(row.epoch), int(row.next_snapshot_id)

    # --- the protocol -----------------------------------------------------------------------

    async def save(self, meta: SnapshotMeta, state: bytes) -> SnapshotId:
        """Short transactions, so that no lock is held for the whole write (on SQLite the
        lock is the whole file's, and the lease's renewals need it): reserve an id under
        the fence, insert the chunks at most ``SAVE_TX_BYTES`` per transaction, then check
        the fence and the chunks again and insert the header row, which makes the
        snapshot visible. A save refused at the end removes its chunks; chunks of a save
        that never finished are removed by the next trim."""
        chunks = await asyncio.to_thread(
            fmt.encode,
            meta,
            state,
            chunk_bytes=self.chunk_bytes,
            max_state_bytes=self.max_state_bytes,
        )
        meta_json = fmt.meta_to_json(meta)
        blob_bytes = sum(len(c) for c in chunks)
        await self._ensure_fence("save snapshot")

        def reserve(conn: sa.Connection) -> int:
            fence_epoch, snapshot_id = self._lock_fence(conn)
            if meta.epoch < fence_epoch:
                raise SnapshotFencedError(meta.epoch, fence_epoch, f"table {self.table}")
            conn.execute(
                sa.update(self.fence_t)
                .where(self._fence)
                .values(epoch=meta.epoch, next_snapshot_id=snapshot_id + 1)
            )
            return snapshot_id

        snapshot_id = await self._tx("save snapshot: reserve an id", reserve)
        for first, group in _groups(chunks, SAVE_TX_BYTES):

            def insert(conn: sa.Connection, first: int = first, group: list[bytes] = group) -> None:
                for index, chunk in enumerate(group, first):  # one row per statement
                    conn.execute(
                        sa.insert(self.chunks_t).values(
                            group_id=self.group_id,
                            snapshot_id=snapshot_id,
                            chunk_index=index,
                            data=blob_value(self.engine, chunk),
                        )
                    )

            await self._tx(f"save snapshot {snapshot_id}: chunks from {first}", insert)

        def publish(conn: sa.Connection) -> None:
            fence_epoch, _ = self._lock_fence(conn)
            c = self.chunks_t
            if meta.epoch < fence_epoch:  # a newer active wrote meanwhile
                conn.execute(sa.delete(c).where(self._where(c, snapshot_id)))
                raise SnapshotFencedError(meta.epoch, fence_epoch, f"table {self.table}")
            count = conn.execute(
                sa.select(sa.func.count()).select_from(c).where(self._where(c, snapshot_id))
            ).scalar_one()
            if count != len(chunks):
                raise SnapshotError(
                    f"snapshot store {self.table}: {count} of the {len(chunks)} chunks of "
                    f"snapshot {snapshot_id} are there (removed meanwhile); saved again later"
                )
            conn.execute(
                sa.insert(self.header_t).values(
                    group_id=self.group_id,
                    snapshot_id=snapshot_id,
                    snap_epoch=meta.epoch,
                    snap_offset=meta.offset,
                    meta_json=blob_value(self.engine, meta_json),
                    chunk_count=len(chunks),
                    blob_bytes=blob_bytes,
                    created_ms=meta.created_ms,
                )
            )

        await self._tx(f"save snapshot {snapshot_id}: header", publish)
        return SnapshotId(str(snapshot_id))

    async def list(self) -> list[SnapshotInfo]:
        h = self.header_t

        def body(conn: sa.Connection) -> list[Any]:
            query = sa.select(h.c.snapshot_id, h.c.snap_epoch, h.c.snap_offset, h.c.meta_json)
            return list(conn.execute(query.where(self._where(h))))

        rows = await self._tx("list snapshots", body, read_only=True)
        rows.sort(
            key=lambda r: newest_first_key(r.snap_epoch, r.snap_offset, r.snapshot_id),
            reverse=True,
        )
        return [
            SnapshotInfo(
                SnapshotId(str(r.snapshot_id)),
                int(r.snap_epoch),
                int(r.snap_offset),
                _meta_or_none(bytes(r.meta_json)),
            )
            for r in rows
        ]

    async def load(self, snapshot_id: SnapshotId) -> tuple[SnapshotMeta, bytes]:
        number = _parse_id(snapshot_id, self.table)
        limit = fmt.blob_bytes_max(self.max_state_bytes)
        h, c = self.header_t, self.chunks_t

        def body(conn: sa.Connection) -> tuple[Any, list[bytes]]:
            header = (conn.execute(sa.select(h).where(self._where(h, number)))).first()
            if header is None:
                raise SnapshotNotFoundError(f"no snapshot {snapshot_id} in {self.table}")
            if header.blob_bytes > limit:
                raise SnapshotTooLargeError(f"snapshot {snapshot_id}", header.blob_bytes, limit)
            query = (
                sa.select(c.c.chunk_index, c.c.data)
                .where(self._where(c, number))
                .order_by(c.c.chunk_index)
            )
            rows = list(conn.execute(query))
            if [r.chunk_index for r in rows] != list(range(header.chunk_count)):
                # Trimmed under us (READ COMMITTED reads each statement anew)? Then not damage.
                again = conn.execute(sa.select(h.c.snapshot_id).where(self._where(h, number)))
                if again.first() is None:
                    raise SnapshotNotFoundError(f"snapshot {snapshot_id} was trimmed meanwhile")
                found = [r.chunk_index for r in rows]
                raise SnapshotCorruptError(
                    f"snapshot {snapshot_id} in {self.table}: chunks {_ranges(found)} found, "
                    f"its header row says {header.chunk_count}"
                )
            return header, [bytes(r.data) for r in rows]

        header, chunks = await self._tx("load snapshot", body, read_only=True)
        where = f"snapshot {snapshot_id} in {self.table}"
        try:
            meta, state = await asyncio.to_thread(
                fmt.decode, chunks, max_state_bytes=self.max_state_bytes
            )
        except SnapshotCorruptError as e:
            raise SnapshotCorruptError(f"{where}: {e}") from e
        indexed = (int(header.snap_epoch), int(header.snap_offset))
        if _meta_or_none(bytes(header.meta_json)) != meta or indexed != (meta.epoch, meta.offset):
            raise SnapshotCorruptError(f"{where}: the header row does not match the snapshot")
        return meta, state

    async def trim(self, keep: int) -> int:
        assert keep >= 1, keep
        h, c = self.header_t, self.chunks_t
        await self._ensure_fence("trim snapshots")

        def body(conn: sa.Connection) -> int:
            self._lock_fence(conn)  # trims and saves of a group take turns
            query = sa.select(h.c.snapshot_id, h.c.snap_epoch, h.c.snap_offset)
            rows = list(conn.execute(query.where(self._where(h))))
            rows.sort(
                key=lambda r: newest_first_key(r.snap_epoch, r.snap_offset, r.snapshot_id),
                reverse=True,
            )
            doomed = [int(r.snapshot_id) for r in rows[keep:]]
            trimmed = len(doomed)
            # Chunks without a header: a save that never finished (its node died, or it
            # was fenced between its transactions). Saves and trims of a group take turns
            # at the fence; its own active saves, then trims, one after the other.
            headers = sa.select(h.c.snapshot_id).where(self._where(h))
            orphans = (
                sa.select(c.c.snapshot_id)
                .distinct()
                .where(self._where(c), c.c.snapshot_id.not_in(headers))
            )  # read first: MySQL cannot delete from a table its subquery reads
            doomed += [int(r.snapshot_id) for r in conn.execute(orphans)]
            for start in range(0, len(doomed), _TRIM_BATCH):
                batch = doomed[start : start + _TRIM_BATCH]
                for table in (c, h):
                    conn.execute(
                        sa.delete(table).where(self._where(table), table.c.snapshot_id.in_(batch))
                    )
            return trimmed

        return await self._tx("trim snapshots", body)

    async def close(self) -> None:
        await self._runner.close()
        await self.engine.dispose()


def blob_value(engine: AsyncEngine, data: bytes) -> Any:
    """``data`` as a value for a binary column of ``engine``'s database.

    On MySQL/MariaDB it goes as hex text through ``UNHEX``: aiomysql 0.3 cannot send
    ``bytes`` parameters with PyMySQL >= 1.2 (it calls a helper PyMySQL removed), and hex
    is also what PyMySQL itself sends (``_binary X'..'``), so the packet budget of
    ``format`` (twice the chunk) holds either way.
    """
    if engine.dialect.name == "mysql":
        return sa.func.unhex(data.hex())
    return data


def _driver_error(error: SnapshotError) -> BaseException | None:
    """The driver's exception under a translated error (SnapshotError <- Coordination <- it)."""
    cause = error.__cause__
    return cause.__cause__ if cause is not None else None


def _meta_or_none(meta_json: bytes) -> SnapshotMeta | None:
    try:
        return fmt.meta_from_json(meta_json)
    except SnapshotCorruptError:
        return None


def _parse_id(snapshot_id: str, table: str) -> int:
    if not snapshot_id.isdigit() or len(snapshot_id) > 19:
        raise SnapshotNotFoundError(f"{snapshot_id!r} is not a snapshot id of {table}")
    return int(snapshot_id)


def _ranges(indexes: Sequence[int]) -> str:
    """``0-3, 5`` for [0, 1, 2, 3, 5]; ``none`` for []."""
    if not indexes:
        return "none"
    parts: list[str] = []
    start = prev = indexes[0]
    for i in [*indexes[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(parts)
