"""The RDBMS sink: aggregation rows, exactly once (SQLite, MariaDB/MySQL, PostgreSQL).

Tables (``<prefix>`` defaults to nothing, so the names are Siddhi's)::

    <prefix><Agg>_SECONDS ... <prefix><Agg>_YEARS    one per aggregation and duration
        AGG_TIMESTAMP BIGINT (bucket start, epoch ms), <group-by columns>, <columns>
        PRIMARY KEY (AGG_TIMESTAMP, <group-by columns>)
    <prefix>sink_progress (sink_id, applied_offset, epoch)

Column types (``_sql_type``): string keys ``VARCHAR(L)`` with ``L`` from
``key_string_length`` (255, less where MySQL's 3072-byte index limit needs it), other
strings ``TEXT`` (at most ``TEXT_CHARS_MAX`` characters), int ``INTEGER``, long
``BIGINT``, float and double ``DOUBLE`` (the engine's values are Python floats; a
single-precision column would not give back what was written), bool ``BOOLEAN``. On
MySQL the tables are InnoDB, utf8mb4, with a binary no-pad collation so keys compare
exactly as on the other databases ('a', 'A' and 'a ' are three groups). Every limit is
checked before writing, the same on all three databases.

Exactly once: ``write`` is one transaction that (1) locks the sink's progress row
(``FOR UPDATE``; ``BEGIN IMMEDIATE`` on SQLite), (2) refuses an epoch below the stored
one (``SinkFencedError``, nothing written), (3) skips a batch whose ``to_offset`` is at or
below the applied offset (already in: a replay writes nothing twice), else (4) upserts
the rows' absolute values and sets the progress to ``(to_offset, epoch)``, (5) commits.
Rows and progress are in one transaction, so after any crash the tables hold exactly
the state at ``applied_offset``, and resuming there rewrites nothing twice and misses
nothing.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.exc import DataError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from walrep.db import create_engine, for_update, guarded, normalize_url
from walrep.engine.sinks.base import SinkBatch
from walrep.engine.timeunits import Duration
from walrep.engine.types import AggregationSchema, AggRow, AttrType, Column, Value
from walrep.errors import CoordinationError, SinkError, SinkFencedError

T = TypeVar("T")

AGG_TIMESTAMP = "AGG_TIMESTAMP"
KEY_STRING_LENGTH_MAX = 255
KEY_STRING_LENGTH_MIN = 32  # a schema whose string keys would get less is refused
MYSQL_INDEX_BYTES_MAX = 3072  # InnoDB, DYNAMIC rows, 16 KiB pages (measured on MariaDB)
MYSQL_CHAR_BYTES_MAX = 4  # utf8mb4
TEXT_CHARS_MAX = 65535 // MYSQL_CHAR_BYTES_MAX  # what MySQL's TEXT holds in utf8mb4
IDENTIFIER_CHARS_MAX = 63  # PostgreSQL's limit (MySQL's is 64)
SINK_ID_CHARS_MAX = 128
STATEMENT_PARAMS_MAX = 8000  # well below SQLite's 32766 and asyncpg's 32767 bind params
BATCH_ROWS_MAX = 200_000  # rows of one batch = one transaction
SETUP_ATTEMPTS = 3
SETUP_RETRY_PAUSE_MS = 50
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FIXED_KEY_BYTES = {
    AttrType.INT: 4,
    AttrType.LONG: 8,
    AttrType.FLOAT: 8,
    AttrType.DOUBLE: 8,
    AttrType.BOOL: 1,
}

assert KEY_STRING_LENGTH_MAX * MYSQL_CHAR_BYTES_MAX + 8 <= MYSQL_INDEX_BYTES_MAX


class Progress(NamedTuple):
    """The sink's progress row: the state of ``[0, applied_offset)`` written under ``epoch``."""

    applied_offset: int
    epoch: int


def key_string_length(group_by: Sequence[Column]) -> int:
    """The VARCHAR length of the string key columns of a table with these group-by columns.

    255, or less when MySQL's limit on a primary key (3072 bytes, 4 bytes a character)
    needs it: five string keys get 153. The same length on every database, so a value
    that fits on one fits on all.
    """
    strings = sum(1 for c in group_by if c.type is AttrType.STRING)
    if strings == 0:
        return KEY_STRING_LENGTH_MAX
    fixed_bytes = 8 + sum(_FIXED_KEY_BYTES[c.type] for c in group_by if c.type in _FIXED_KEY_BYTES)
    per_string = (MYSQL_INDEX_BYTES_MAX - fixed_bytes) // (strings * MYSQL_CHAR_BYTES_MAX)
    return min(KEY_STRING_LENGTH_MAX, per_string)


def table_name(prefix: str, aggregation: str, duration: Duration) -> str:
    """Siddhi's name of one aggregation's table: ``<prefix><Agg>_<SECONDS..YEARS>``."""
    return f"{prefix}{aggregation}_{duration.table_suffix}"


class _Table(NamedTuple):
    table: sa.Table
    schema: AggregationSchema
    key_length: int


class RdbmsSink:
    """Exactly-once sink of aggregation rows; outputs are not written here (see module)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        sink_id: str = "rdbms",
        table_prefix: str = "",
        call_timeout_ms: int = 5000,
        write_timeout_ms: int = 30_000,
        statement_params_max: int = STATEMENT_PARAMS_MAX,
        batch_rows_max: int = BATCH_ROWS_MAX,
        before_commit: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``before_commit`` is a test hook: awaited after the upserts and the progress
        update, before COMMIT (a crash test kills the process while it waits)."""
        if not 0 < len(sink_id) <= SINK_ID_CHARS_MAX:
            raise SinkError(f"sink id {sink_id!r}: 1 to {SINK_ID_CHARS_MAX} chars", retriable=False)
        if table_prefix and not _NAME.match(table_prefix):
            raise SinkError(f"table prefix {table_prefix!r} is not an identifier", retriable=False)
        assert statement_params_max > 0 and batch_rows_max > 0
        self.engine = engine
        self.sink_id = sink_id
        self.table_prefix = table_prefix
        self.call_timeout_ms = call_timeout_ms
        self.write_timeout_ms = write_timeout_ms
        self.statement_params_max = statement_params_max
        self.batch_rows_max = batch_rows_max
        self._before_commit = before_commit
        self._lock_rows = for_update(engine)
        self.metadata = sa.MetaData()
        self.progress_table = sa.Table(
            f"{table_prefix}sink_progress",
            self.metadata,
            sa.Column("sink_id", sa.String(SINK_ID_CHARS_MAX), primary_key=True),
            sa.Column("applied_offset", sa.BigInteger, nullable=False),
            sa.Column("epoch", sa.BigInteger, nullable=False),
            **_mysql_table_options("utf8mb4_bin"),
        )
        self._tables: dict[tuple[str, Duration], _Table] = {}
        self._progress_row_exists = False

    @classmethod
    def from_url(
        cls, url: str, *, connect_timeout_ms: int = 2000, pool_size: int = 2, **kwargs: Any
    ) -> RdbmsSink:
        """A sink on its own engine (SQLAlchemy or seed JDBC URL); ``close`` disposes it."""
        engine = create_engine(
            normalize_url(url), connect_timeout_ms=connect_timeout_ms, pool_size=pool_size
        )
        return cls(engine, **kwargs)

    def table_for(self, aggregation: str, duration: Duration) -> sa.Table:
        """The table of one aggregation and duration (after ``setup``)."""
        return self._tables[(aggregation, duration)].table

    # --- setup ------------------------------------------------------------------------------

    async def setup(self, schemas: Sequence[AggregationSchema]) -> None:
        """Create the missing tables (idempotent, safe against a peer doing the same at
        once), check that existing ones have the expected columns, create the progress row.
        """
        for attempt in range(1, SETUP_ATTEMPTS + 1):
            try:
                await self._setup_once(schemas)
                return
            except SinkError as e:
                # Two nodes starting together race on CREATE TABLE (a duplicate table or
                # type) or, on a new SQLite file, on switching it to WAL ("locked").
                cause = e.__cause__.__cause__ if e.__cause__ is not None else None
                racing = (OperationalError, ProgrammingError, IntegrityError)
                if attempt == SETUP_ATTEMPTS or not isinstance(cause, racing):
                    raise
                await asyncio.sleep(SETUP_RETRY_PAUSE_MS * attempt / 1000)

    async def _setup_once(self, schemas: Sequence[AggregationSchema]) -> None:
        collation = await self._guard(
            "connect", self.progress_table.name, self._key_collation(), self.call_timeout_ms
        )
        for schema in schemas:
            self._add_schema(schema, collation)
        tables = ", ".join(t.name for t in self.metadata.sorted_tables)
        await self._guard(
            "create sink tables",
            tables,
            self._run(lambda c: c.run_sync(self.metadata.create_all, checkfirst=True)),
            self.call_timeout_ms * 5,
        )
        await self._guard(
            "check sink tables",
            tables,
            self._run(lambda c: c.run_sync(self._check_columns)),
            self.call_timeout_ms * 5,
        )
        await self._ensure_progress_row()

    async def _key_collation(self) -> str | None:
        async with self.engine.connect() as conn:
            if conn.dialect.name != "mysql":
                return None
            # Binary and no-pad, as keys compare on PostgreSQL and SQLite.
            mariadb = bool(getattr(conn.dialect, "is_mariadb", False))
            return "utf8mb4_nopad_bin" if mariadb else "utf8mb4_0900_bin"

    def _add_schema(self, schema: AggregationSchema, collation: str | None) -> None:
        names = [
            AGG_TIMESTAMP,
            *(c.name for c in schema.group_by),
            *(c.name for c in schema.columns),
        ]
        bad = [n for n in [schema.name, *names] if not _NAME.match(n)]
        if bad or len(set(names)) != len(names):
            raise SinkError(
                f"aggregation {schema.name!r}: names must be distinct identifiers "
                f"(not {bad or names})",
                retriable=False,
            )
        key_length = key_string_length(schema.group_by)
        if key_length < KEY_STRING_LENGTH_MIN:
            raise SinkError(
                f"aggregation {schema.name!r}: {len(schema.group_by)} group-by columns leave "
                f"{key_length} characters a string key (at least {KEY_STRING_LENGTH_MIN})",
                retriable=False,
            )
        for duration in schema.durations:
            name = table_name(self.table_prefix, schema.name, duration)
            if len(name) > IDENTIFIER_CHARS_MAX:
                raise SinkError(f"table name {name!r} over {IDENTIFIER_CHARS_MAX}", retriable=False)
            if (schema.name, duration) in self._tables:
                continue
            columns = [sa.Column(AGG_TIMESTAMP, sa.BigInteger, primary_key=True)]
            columns += [
                sa.Column(c.name, _sql_type(c.type, key_length, collation), primary_key=True)
                for c in schema.group_by
            ]
            columns += [
                sa.Column(c.name, _sql_type(c.type, None, None), nullable=True)
                for c in schema.columns
            ]
            table = sa.Table(name, self.metadata, *columns, **_mysql_table_options(collation))
            self._tables[(schema.name, duration)] = _Table(table, schema, key_length)

    def _check_columns(self, conn: sa.Connection) -> None:
        inspector = sa.inspect(conn)
        for table in self.metadata.sorted_tables:
            found = [c["name"] for c in inspector.get_columns(table.name)]
            if found != [c.name for c in table.columns]:
                raise SinkError(
                    f"table {table.name} exists with columns {found}, the aggregation needs "
                    f"{[c.name for c in table.columns]} (drop or rename it, or use another "
                    "table prefix)",
                    retriable=False,
                )

    async def _ensure_progress_row(self) -> None:
        """Insert the progress row in its own transaction, before any locking read of it.

        (A ``SELECT ... FOR UPDATE`` of a missing row takes gap locks on InnoDB; two nodes
        doing that and then inserting deadlock. An insert that loses the race just fails
        with a duplicate key, which is fine: the row exists.)
        """
        if self._progress_row_exists:
            return
        t = self.progress_table

        async def insert(conn: AsyncConnection) -> None:
            query = sa.select(t.c.epoch).where(t.c.sink_id == self.sink_id)
            if (await conn.execute(query)).first() is None:
                await conn.execute(
                    sa.insert(t).values(sink_id=self.sink_id, applied_offset=0, epoch=0)
                )

        try:
            await self._guard(
                "create progress row", t.name, self._run(insert), self.call_timeout_ms
            )
        except SinkError as e:
            if e.__cause__ is None or not isinstance(e.__cause__.__cause__, IntegrityError):
                raise
        self._progress_row_exists = True

    # --- reads ------------------------------------------------------------------------------

    async def progress(self) -> Progress:
        """The committed progress row ((0, 0) before the first write)."""
        t = self.progress_table

        async def read(conn: AsyncConnection) -> Progress:
            query = sa.select(t.c.applied_offset, t.c.epoch).where(t.c.sink_id == self.sink_id)
            row = (await conn.execute(query)).first()
            return Progress(0, 0) if row is None else Progress(int(row[0]), int(row[1]))

        return await self._guard("read progress", t.name, self._run(read), self.call_timeout_ms)

    async def applied_offset(self) -> int:
        return (await self.progress()).applied_offset

    # --- write ------------------------------------------------------------------------------

    async def write(self, batch: SinkBatch) -> None:
        """Rows and progress in one fenced transaction (the module's steps 1 to 5).

        Raises ``SinkFencedError`` for a stale epoch, ``SinkError`` (not retriable) for rows
        that do not fit the tables, ``SinkError`` (retriable) when the database fails; in
        every error case nothing of the batch is committed.
        """
        prepared = self._prepare(batch.rows)
        await self._ensure_progress_row()
        where = [self.progress_table.name]

        async def body(conn: AsyncConnection) -> None:
            stored = await self._locked_progress(conn)
            if batch.epoch < stored.epoch:
                raise SinkFencedError(self.sink_id, batch.epoch, stored.epoch)
            if batch.to_offset <= stored.applied_offset:
                if batch.epoch > stored.epoch:  # no rows, but fence the older writer from now on
                    await self._set_progress(conn, Progress(stored.applied_offset, batch.epoch))
                return
            for table, rows in prepared:
                where[0] = table.name
                for chunk in self._chunks(table, rows):
                    await conn.execute(self._upsert(table, chunk))
            where[0] = self.progress_table.name
            await self._set_progress(conn, Progress(batch.to_offset, batch.epoch))
            if self._before_commit is not None:
                await self._before_commit()

        what = f"write batch to offset {batch.to_offset} (epoch {batch.epoch})"
        await self._guard(what, where, self._run(body), self.write_timeout_ms)

    async def _locked_progress(self, conn: AsyncConnection) -> Progress:
        t = self.progress_table
        query = sa.select(t.c.applied_offset, t.c.epoch).where(t.c.sink_id == self.sink_id)
        if self._lock_rows:
            query = query.with_for_update()
        row = (await conn.execute(query)).one()
        return Progress(int(row[0]), int(row[1]))

    async def _set_progress(self, conn: AsyncConnection, progress: Progress) -> None:
        t = self.progress_table
        await conn.execute(
            sa.update(t)
            .where(t.c.sink_id == self.sink_id)
            .values(applied_offset=progress.applied_offset, epoch=progress.epoch)
        )

    def _prepare(self, rows: Sequence[AggRow]) -> list[tuple[sa.Table, list[dict[str, Value]]]]:
        """Validated row dicts per table, in schema then duration order; within a batch the
        last row of a bucket wins (one statement may not upsert a key twice on PostgreSQL)."""
        if len(rows) > self.batch_rows_max:
            raise SinkError(
                f"rdbms sink {self.sink_id!r}: batch of {len(rows)} rows, over the limit of "
                f"{self.batch_rows_max}",
                retriable=False,
            )
        per_table: dict[tuple[str, Duration], dict[tuple[Value, ...], dict[str, Value]]] = {}
        for row in rows:
            found = self._tables.get((row.aggregation, row.duration))
            if found is None:
                raise SinkError(
                    f"rdbms sink {self.sink_id!r}: no table for aggregation {row.aggregation!r} "
                    f"per {row.duration.value} (not in the schemas given to setup)",
                    retriable=False,
                )
            record = _row_dict(found, row)
            per_table.setdefault((row.aggregation, row.duration), {})[
                (row.agg_timestamp_ms, *row.key)
            ] = record
        return [
            (self._tables[k].table, list(per_table[k].values()))
            for k in self._tables
            if k in per_table
        ]

    def _chunks(
        self, table: sa.Table, rows: list[dict[str, Value]]
    ) -> Iterator[list[dict[str, Value]]]:
        step = max(1, self.statement_params_max // len(table.columns))
        for i in range(0, len(rows), step):
            yield rows[i : i + step]

    def _upsert(self, table: sa.Table, rows: list[dict[str, Value]]) -> sa.Executable:
        """INSERT of absolute values that overwrites an existing bucket (dialect upsert)."""
        key = [c.name for c in table.primary_key.columns]
        values = [c.name for c in table.columns if not c.primary_key]
        dialect = self.engine.dialect.name
        if dialect == "mysql":
            my = mysql.insert(table).values(rows)
            return my.on_duplicate_key_update(
                {c: my.inserted[c] for c in values or [AGG_TIMESTAMP]}
            )
        if dialect == "postgresql":
            pg = postgresql.insert(table).values(rows)
            if not values:
                return pg.on_conflict_do_nothing(index_elements=key)
            return pg.on_conflict_do_update(
                index_elements=key, set_={c: pg.excluded[c] for c in values}
            )
        lite = sqlite.insert(table).values(rows)
        if not values:
            return lite.on_conflict_do_nothing(index_elements=key)
        return lite.on_conflict_do_update(
            index_elements=key, set_={c: lite.excluded[c] for c in values}
        )

    # --- plumbing ---------------------------------------------------------------------------

    async def _run(self, body: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        async with self.engine.begin() as conn:
            return await body(conn)

    async def _guard(
        self, what: str, where: str | list[str], call: Coroutine[Any, Any, T], timeout_ms: int
    ) -> T:
        """``walrep.db.guarded``, its errors as SinkError naming the operation and the table
        (``where[0]`` when a list: the table the transaction was at when it failed)."""
        try:
            return await guarded(what, call, timeout_ms)
        except CoordinationError as e:
            table = where if isinstance(where, str) else where[0]
            # A value the database refuses is refused again on a retry.
            retriable = e.retriable and not isinstance(e.__cause__, (DataError, IntegrityError))
            detail = str(e).removeprefix(f"{what}: ")
            raise SinkError(
                f"rdbms sink {self.sink_id!r}: {what}, table {table}: {detail}",
                retriable=retriable,
            ) from e

    async def close(self) -> None:
        """Dispose of the engine (pooled connections)."""
        await self.engine.dispose()


def _mysql_table_options(collation: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}
    if collation is not None:
        options["mysql_collate"] = collation
    return options


def _sql_type(
    attr: AttrType, key_length: int | None, collation: str | None
) -> sa.types.TypeEngine[Any]:
    """The column type of an attribute; ``key_length`` is set for group-by columns."""
    if attr is AttrType.STRING:
        if key_length is not None:
            return sa.String(key_length, collation=collation)
        return sa.Text()
    types: dict[AttrType, sa.types.TypeEngine[Any]] = {
        AttrType.INT: sa.Integer(),
        AttrType.LONG: sa.BigInteger(),
        AttrType.FLOAT: sa.Double(),
        AttrType.DOUBLE: sa.Double(),
        AttrType.BOOL: sa.Boolean(),
    }
    return types[attr]


def _row_dict(found: _Table, row: AggRow) -> dict[str, Value]:
    schema = found.schema
    if len(row.key) != len(schema.group_by) or len(row.values) != len(schema.columns):
        raise SinkError(
            f"row of {schema.name} has {len(row.key)} key and {len(row.values)} values, the "
            f"schema {len(schema.group_by)} and {len(schema.columns)}",
            retriable=False,
        )
    record: dict[str, Value] = {AGG_TIMESTAMP: row.agg_timestamp_ms}
    _check(found.table.name, AGG_TIMESTAMP, AttrType.LONG, row.agg_timestamp_ms, None)
    for column, value in zip(schema.group_by, row.key, strict=True):
        if value is None:
            raise SinkError(
                f"{found.table.name}.{column.name}: a group-by value is None", retriable=False
            )
        _check(found.table.name, column.name, column.type, value, found.key_length)
        record[column.name] = value
    for column, value in zip(schema.columns, row.values, strict=True):
        if value is not None:
            _check(found.table.name, column.name, column.type, value, TEXT_CHARS_MAX)
        record[column.name] = value
    return record


def _check(table: str, column: str, attr: AttrType, value: Value, chars_max: int | None) -> None:
    """Refuse a value the column cannot hold, alike on every database."""
    ok: bool
    if attr is AttrType.STRING:
        ok = isinstance(value, str) and (chars_max is None or len(value) <= chars_max)
    elif attr is AttrType.BOOL:
        ok = isinstance(value, bool)
    elif attr in (AttrType.INT, AttrType.LONG):
        low, high = (INT32_MIN, INT32_MAX) if attr is AttrType.INT else (INT64_MIN, INT64_MAX)
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    elif isinstance(value, bool) or not isinstance(value, int | float):
        ok = False
    else:  # finite: MySQL has no NaN or infinity, and a sum should never be one
        ok = math.isfinite(value)
    if not ok:
        shown = repr(value) if not isinstance(value, str) else f"a string of {len(value)} chars"
        limit = f" (at most {chars_max} chars)" if attr is AttrType.STRING else ""
        raise SinkError(f"{table}.{column}: {shown} is not a {attr.value}{limit}", retriable=False)
