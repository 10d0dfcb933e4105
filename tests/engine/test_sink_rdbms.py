"""The RDBMS sink on real SQLite, MariaDB and PostgreSQL: rows, upserts, fencing, replay,
and a process killed between its upserts and its COMMIT."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.services import require_service
from walrep.engine.sinks.base import SinkBatch
from walrep.engine.sinks.rdbms import RdbmsSink, key_string_length, table_name
from walrep.engine.timeunits import Duration
from walrep.engine.types import AggregationSchema, AggRow, AttrType, Column
from walrep.errors import SinkError, SinkFencedError

BACKENDS = ["sqlite", "mariadb", "postgresql"]
REPO_ROOT = Path(__file__).resolve().parents[2]
S, L, D, INT, B = AttrType.STRING, AttrType.LONG, AttrType.DOUBLE, AttrType.INT, AttrType.BOOL
SEC, MIN = Duration.SECONDS, Duration.MINUTES

# Five string keys: the widest primary key of the flagship app (153 chars a key on MySQL).
USER_AGG = AggregationSchema(
    name="ApiUserPerAppAgg",
    durations=(SEC, MIN),
    group_by=tuple(
        Column(n, S)
        for n in ("apiContext", "apiHostname", "applicationId", "username", "userTenantDomain")
    ),
    columns=(Column("totalRequestCount", L), Column("apiName", S), Column("gatewayType", S)),
)
# Every attribute type, as key and as value.
MIXED_AGG = AggregationSchema(
    name="MixedAgg",
    durations=(SEC,),
    group_by=(Column("shard", INT), Column("region", S), Column("beta", B)),
    columns=(
        Column("hits", L),
        Column("latencySum", D),
        Column("latencyMax", AttrType.FLOAT),
        Column("errors", INT),
        Column("throttled", B),
        Column("label", S),
    ),
)
SCHEMAS = (USER_AGG, MIXED_AGG)
T0 = 1_700_000_000_000


def user_row(duration: Duration, ts: int, user: str, count: int, name: str = "pizza") -> AggRow:
    key = ("/pizza/1.0", "gw1", "app-1", user, "carbon.super")
    return AggRow(USER_AGG.name, duration, ts, key, (count, name, "SYNAPSE"))


def mixed_row(ts: int, shard: int, hits: int, latency: float) -> AggRow:
    key = (shard, "eu-west", shard % 2 == 0)
    values = (hits, latency, latency / 3, -shard, hits > 2, None)
    return AggRow(MIXED_AGG.name, SEC, ts, key, values)


# Batches shared with the crash-writer subprocess (same module, imported there).
FIRST = SinkBatch(
    epoch=1,
    to_offset=10,
    rows=[user_row(SEC, T0, "alice", 3), user_row(MIN, T0, "alice", 3), mixed_row(T0, 1, 3, 1.5)],
)
SECOND = SinkBatch(
    epoch=1,
    to_offset=20,
    rows=[
        user_row(SEC, T0, "alice", 7),  # overwrites a FIRST row
        user_row(SEC, T0 + 1000, "bob", 1),
        user_row(MIN, T0, "alice", 8),
        mixed_row(T0, 2, 5, 0.1 + 0.2),
    ],
)


def sink_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'sink.db'}"
    return require_service(backend)


class Db:
    """One database and one unique table prefix; every sink made here uses both."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"wt{uuid.uuid4().hex[:8]}_"
        self.made: list[RdbmsSink] = []

    def sink(self, **kwargs: Any) -> RdbmsSink:
        sink = RdbmsSink.from_url(self.url, table_prefix=self.prefix, **kwargs)
        self.made.append(sink)
        return sink

    async def drop_and_close(self) -> None:
        cleaner = RdbmsSink.from_url(self.url, table_prefix=self.prefix)
        await cleaner.setup(SCHEMAS)  # knows every table then (creating the missing ones)
        async with cleaner.engine.begin() as conn:
            await conn.run_sync(cleaner.metadata.drop_all, checkfirst=True)
        for sink in [*self.made, cleaner]:
            await sink.close()


@pytest.fixture(params=BACKENDS)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Db]:
    d = Db(sink_url(request.param, tmp_path))
    yield d
    await d.drop_and_close()


async def read_rows(sink: RdbmsSink, schema: AggregationSchema, duration: Duration) -> list[AggRow]:
    table = sink.table_for(schema.name, duration)
    nkey = len(schema.group_by)
    async with sink.engine.connect() as conn:
        result = await conn.execute(sa.select(table).order_by(*table.primary_key.columns))
        return [
            AggRow(schema.name, duration, r[0], tuple(r[1 : 1 + nkey]), tuple(r[1 + nkey :]))
            for r in result
        ]


async def all_rows(sink: RdbmsSink) -> list[AggRow]:
    out: list[AggRow] = []
    for schema in SCHEMAS:
        for duration in schema.durations:
            out += await read_rows(sink, schema, duration)
    return sorted(out, key=repr)


def expected(*batches: SinkBatch) -> list[AggRow]:
    """The tables after these batches: the last absolute value of each bucket."""
    latest: dict[tuple[object, ...], AggRow] = {}
    for batch in batches:
        for row in batch.rows:
            latest[(row.aggregation, row.duration, row.agg_timestamp_ms, row.key)] = row
    return sorted(latest.values(), key=repr)


def test_key_string_length_fits_mysql_index_limit() -> None:
    assert key_string_length(USER_AGG.group_by) == 153  # 5 * 153 * 4 + 8 <= 3072
    assert key_string_length(MIXED_AGG.group_by) == 255
    assert key_string_length(()) == 255
    assert table_name("p_", "ApiExeTime", Duration.YEARS) == "p_ApiExeTime_YEARS"


async def test_rows_written_equal_rows_given(db: Db) -> None:
    sink = db.sink()
    await sink.setup(SCHEMAS)
    assert await sink.applied_offset() == 0
    await sink.write(FIRST)
    assert await all_rows(sink) == expected(FIRST)
    assert tuple(await sink.progress()) == (10, 1)
    names = {t.name for t in sink.metadata.sorted_tables}
    p = db.prefix
    assert {f"{p}ApiUserPerAppAgg_SECONDS", f"{p}ApiUserPerAppAgg_MINUTES"} <= names
    assert f"{p}sink_progress" in names


async def test_upsert_overwrites_with_absolute_values(db: Db) -> None:
    sink = db.sink()
    await sink.setup(SCHEMAS)
    await sink.write(FIRST)
    await sink.write(SECOND)
    rows = await all_rows(sink)
    assert rows == expected(FIRST, SECOND)
    alice = [
        r
        for r in rows
        if r.aggregation == USER_AGG.name and r.duration is SEC and r.key[3] == "alice"
    ]
    assert [r.values[0] for r in alice] == [7]
    assert await sink.applied_offset() == 20
    # Within one batch the last row of a bucket wins (and PostgreSQL accepts the batch).
    twice = SinkBatch(1, 30, [user_row(SEC, T0, "alice", 8), user_row(SEC, T0, "alice", 9)])
    await sink.write(twice)
    assert (await read_rows(sink, USER_AGG, SEC))[0].values[0] == 9


async def test_keys_compare_exactly_on_every_database(db: Db) -> None:
    sink = db.sink()
    await sink.setup(SCHEMAS)
    users = ["a", "A", "a ", "ä", "😀" * 153]
    await sink.write(SinkBatch(1, 1, [user_row(SEC, T0, u, i) for i, u in enumerate(users)]))
    got = {r.key[3]: r.values[0] for r in await read_rows(sink, USER_AGG, SEC)}
    assert got == {u: i for i, u in enumerate(users)}


async def test_a_large_batch_goes_in_bounded_statements(db: Db) -> None:
    sink = db.sink(statement_params_max=100)  # 10 columns: 10 rows a statement
    await sink.setup(SCHEMAS)
    batch = SinkBatch(2, 5000, [mixed_row(T0 + i * 1000, i, i, float(i)) for i in range(1234)])
    await sink.write(batch)
    assert await all_rows(sink) == expected(batch)


async def test_a_stale_epoch_cannot_write(db: Db) -> None:
    new, old = db.sink(), db.sink()
    await asyncio.gather(new.setup(SCHEMAS), old.setup(SCHEMAS))
    await new.write(SinkBatch(3, 10, [user_row(SEC, T0, "alice", 1)]))
    stale = SinkBatch(2, 50, [user_row(SEC, T0, "alice", 99), user_row(SEC, T0, "mallory", 1)])
    with pytest.raises(SinkFencedError) as e:
        await old.write(stale)
    assert (e.value.seen, e.value.current, e.value.retriable) == (2, 3, False)
    assert await all_rows(new) == [user_row(SEC, T0, "alice", 1)]
    assert tuple(await old.progress()) == (10, 3)


async def test_a_batch_at_or_below_the_applied_offset_is_a_no_op(db: Db) -> None:
    sink = db.sink()
    await sink.setup(SCHEMAS)
    await sink.write(FIRST)
    for to_offset in (FIRST.to_offset, FIRST.to_offset - 1):
        await sink.write(SinkBatch(1, to_offset, [user_row(SEC, T0, "alice", 1000)]))
    assert await all_rows(sink) == expected(FIRST)
    assert tuple(await sink.progress()) == (10, 1)
    # A skipped batch of a higher epoch writes no row but fences the older writer.
    await sink.write(SinkBatch(4, 10, [user_row(SEC, T0, "alice", 1000)]))
    assert await all_rows(sink) == expected(FIRST)
    assert tuple(await sink.progress()) == (10, 4)


async def test_setup_is_idempotent_and_safe_against_a_racing_peer(db: Db) -> None:
    a, b = db.sink(), db.sink()
    await asyncio.gather(a.setup(SCHEMAS), b.setup(SCHEMAS))
    await a.setup(SCHEMAS)
    await a.write(FIRST)
    c = db.sink()
    await c.setup(SCHEMAS)
    assert await c.applied_offset() == 10
    assert await all_rows(c) == expected(FIRST)


async def test_values_that_do_not_fit_are_refused_and_nothing_is_written(
    db: Db,
) -> None:
    sink = db.sink()
    await sink.setup(SCHEMAS)
    bad_rows = [
        user_row(SEC, T0, "x" * 154, 1),  # key over 153 chars
        mixed_row(T0, 2**31, 1, 1.0),  # INT out of range
        mixed_row(T0, 1, 1, math.nan),  # NaN
        AggRow(USER_AGG.name, Duration.HOURS, T0, USER_AGG.group_by, ()),  # no such table
        AggRow(USER_AGG.name, SEC, T0, ("a", "b", "c", None, "e"), (1, "n", "g")),  # None key
    ]
    for bad in bad_rows:
        with pytest.raises(SinkError) as e:
            await sink.write(SinkBatch(1, 5, [user_row(SEC, T0, "ok", 1), bad]))
        assert not e.value.retriable
    assert await all_rows(sink) == []
    assert await sink.applied_offset() == 0


async def test_an_existing_table_with_other_columns_is_refused(db: Db) -> None:
    await db.sink().setup(SCHEMAS)
    changed = AggregationSchema(
        USER_AGG.name, USER_AGG.durations, USER_AGG.group_by, (Column("other", L),)
    )
    with pytest.raises(
        SinkError, match=r"ApiUserPerAppAgg_(SECONDS|MINUTES) exists with columns"
    ) as e:
        await db.sink().setup([changed])
    assert not e.value.retriable


# --- a crash between the upserts and the COMMIT -------------------------------------------

UPSERTED = "UPSERTED-NOT-COMMITTED"


def crash_writer_main() -> None:
    """Subprocess: write SECOND, announce it on stdout before COMMIT, then wait to be killed."""
    url, prefix = sys.argv[1:3]

    async def hold() -> None:
        print(UPSERTED, flush=True)
        await asyncio.Event().wait()  # until SIGKILL

    async def run() -> None:
        sink = RdbmsSink.from_url(
            url, table_prefix=prefix, before_commit=hold, write_timeout_ms=600_000
        )
        await sink.setup(SCHEMAS)
        await sink.write(SECOND)

    asyncio.run(run())


async def test_a_crash_before_commit_then_resume_writes_the_batch_exactly_once(
    db: Db,
) -> None:
    sink = db.sink()
    await sink.setup(SCHEMAS)
    await sink.write(FIRST)
    code = "from tests.engine.test_sink_rdbms import crash_writer_main; crash_writer_main()"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        db.url,
        db.prefix,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        assert line.decode().strip() == UPSERTED
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL

    fresh = db.sink()
    await fresh.setup(SCHEMAS)
    assert tuple(await fresh.progress()) == (10, 1)  # the killed write left nothing
    assert await all_rows(fresh) == expected(FIRST)
    await fresh.write(SECOND)  # resume after applied offset 10: SECOND again
    await fresh.write(SECOND)  # and a replay of it is a no-op
    assert await all_rows(fresh) == expected(FIRST, SECOND)
    assert await fresh.applied_offset() == 20


# --- unreachable databases ------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
async def test_an_unreachable_database_is_a_retriable_sink_error(
    backend: str, tmp_path: Path
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'no-such-dir' / 'sink.db'}"
    else:
        url = str(make_url(require_service(backend)).set(host="127.0.0.1", port=1))
    sink = RdbmsSink.from_url(url, table_prefix="wt_unreachable_", call_timeout_ms=3000)
    try:
        for call in (sink.setup(SCHEMAS), sink.applied_offset(), sink.write(SinkBatch(1, 10))):
            with pytest.raises(SinkError) as e:
                await call
            assert e.value.retriable
            assert "rdbms sink 'rdbms'" in str(e.value) and "table wt_unreachable_" in str(e.value)
    finally:
        await sink.close()
        # aiosqlite's worker thread of a failed connect may still be handing back its
        # last result: wait for it to end (the positive signal) before this test's loop
        # closes, or it reports "Event loop is closed" in whichever test runs next.
        for thread in threading.enumerate():
            if "_connection_worker_thread" in thread.name:
                await asyncio.to_thread(thread.join, 5)
