"""The database peers: SQLite, MariaDB and PostgreSQL inserting the events walrep appends.

Each peer runs the way its users run it for durable inserts, settings read back from the
server and stated in the results: SQLite in WAL mode with ``synchronous=FULL`` (stdlib
``sqlite3``, a file under ``--dir``), MariaDB/InnoDB (``pymysql``; its
``innodb_flush_log_at_trx_commit`` reported), PostgreSQL (``asyncpg``; ``fsync`` and
``synchronous_commit`` reported). Every batch is one transaction: ``executemany`` of one
row per event (stream, ingest time, the attributes as JSON, encoded in the timing as
walrep encodes), then commit. Beside them, in the same run and on the same disk:
walrep's ``Wal.append`` of the same batches (encoding + write + fdatasync, the log's own
ack). A peer that cannot be reached is reported as skipped, never with a figure.

Cases, each timed for ``--seconds`` after a warm-up of a tenth of that, in turn, repeated
``--repeat`` times (medians): ``walrep append``, ``sqlite``, ``mariadb``, ``postgresql``.
``python benchmarks/sql_peers.py [--seconds 3] [--batch 1000] [--repeat 1] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from bench_common import machine_info

from walrep.apim.generator import ApimGenerator
from walrep.log.frame import Event
from walrep.log.wal import Wal

URLS = {
    "mariadb": os.environ.get("WALREP_BENCH_MARIADB_URL", "mysql://root@127.0.0.1:3306/test"),
    "postgresql": os.environ.get(
        "WALREP_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    ),
}
POOL_BATCHES = 20


Batch = list[Event]


def rows_of(batch: Batch, ingest_ms: int) -> list[tuple[str, int, bytes]]:
    return [(e[0], ingest_ms, orjson.dumps(e[1])) for e in batch]


async def timed(
    step: Callable[[Batch], Awaitable[None]], pool: list[Batch], seconds: float
) -> dict[str, Any]:
    """Batches back to back: warm-up, then ``seconds`` timed; events/s and batch latency."""
    n = 0
    warm_until = time.perf_counter() + seconds / 10
    while time.perf_counter() < warm_until:
        await step(pool[n % len(pool)])
        n += 1
    latencies = []
    started = time.perf_counter()
    while (now := time.perf_counter()) - started < seconds:
        await step(pool[n % len(pool)])
        latencies.append(time.perf_counter() - now)
        n += 1
    elapsed = time.perf_counter() - started
    latencies.sort()
    events = len(latencies) * len(pool[0])
    return {
        "events": events,
        "events_per_s": events / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


async def walrep_case(pool: list[Batch], seconds: float, root: Path) -> dict[str, Any]:
    wal = Wal.open(root / "wal")
    try:

        async def step(batch: Batch) -> None:
            await wal.append(batch, epoch=1)

        result = await timed(step, pool, seconds)
    finally:
        wal.close()
    return {
        "case": "walrep append",
        "settings": "Wal.append: encode, write, fdatasync per batch",
    } | result


async def sqlite_case(pool: list[Batch], seconds: float, root: Path) -> dict[str, Any]:
    db = sqlite3.connect(root / "peer.sqlite", isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        sync = db.execute("PRAGMA synchronous").fetchone()[0]
        db.execute(
            "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, stream TEXT, "
            "ingest_ms INTEGER, body BLOB)"
        )

        async def step(batch: Batch) -> None:
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO events (stream, ingest_ms, body) VALUES (?, ?, ?)", rows_of(batch, 0)
            )
            db.execute("COMMIT")

        result = await timed(step, pool, seconds)
    finally:
        db.close()
    settings = f"sqlite {sqlite3.sqlite_version}, journal_mode={mode}, synchronous={sync} (2=FULL)"
    return {"case": "sqlite", "settings": settings} | result


def _parts(url: str) -> dict[str, Any]:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return {
        "host": u.host or "127.0.0.1",
        "port": u.port,
        "user": u.username,
        "password": u.password or "",
        "database": u.database,
    }


async def mariadb_case(pool: list[Batch], seconds: float) -> dict[str, Any]:
    import pymysql

    p = _parts(URLS["mariadb"])
    try:
        db = pymysql.connect(
            host=p["host"],
            port=p["port"] or 3306,
            user=p["user"],
            password=p["password"],
            database=p["database"],
            autocommit=False,
        )
    except pymysql.err.OperationalError as e:
        return {"case": "mariadb", "skipped": f"not reachable at {p['host']}:{p['port']}: {e}"}
    table = f"wbench_{uuid.uuid4().hex[:8]}"
    try:
        with db.cursor() as c:
            c.execute("SELECT VERSION(), @@innodb_flush_log_at_trx_commit, @@sync_binlog")
            version, flush, sync_binlog = c.fetchone()
            c.execute(
                f"CREATE TABLE {table} (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
                "stream VARCHAR(64), ingest_ms BIGINT, body LONGBLOB) ENGINE=InnoDB"
            )

        async def step(batch: Batch) -> None:
            with db.cursor() as c:
                c.executemany(
                    f"INSERT INTO {table} (stream, ingest_ms, body) VALUES (%s, %s, %s)",
                    rows_of(batch, 0),
                )
            db.commit()

        result = await timed(step, pool, seconds)
    finally:
        with db.cursor() as c:
            c.execute(f"DROP TABLE IF EXISTS {table}")
        db.close()
    settings = (
        f"MariaDB {version}, InnoDB, innodb_flush_log_at_trx_commit={flush}, "
        f"sync_binlog={sync_binlog}, pymysql executemany"
    )
    return {"case": "mariadb", "settings": settings} | result


async def postgres_case(pool: list[Batch], seconds: float) -> dict[str, Any]:
    import asyncpg

    p = _parts(URLS["postgresql"])
    try:
        db = await asyncpg.connect(
            host=p["host"],
            port=p["port"] or 5432,
            user=p["user"],
            password=p["password"] or None,
            database=p["database"],
        )
    except (OSError, asyncpg.PostgresError) as e:
        return {"case": "postgresql", "skipped": f"not reachable at {p['host']}:{p['port']}: {e}"}
    table = f"wbench_{uuid.uuid4().hex[:8]}"
    try:
        version = await db.fetchval("SHOW server_version")
        fsync = await db.fetchval("SHOW fsync")
        commit = await db.fetchval("SHOW synchronous_commit")
        await db.execute(
            f"CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, stream TEXT, "
            "ingest_ms BIGINT, body BYTEA)"
        )

        async def step(batch: Batch) -> None:
            async with db.transaction():
                await db.executemany(
                    f"INSERT INTO {table} (stream, ingest_ms, body) VALUES ($1, $2, $3)",
                    rows_of(batch, 0),
                )

        result = await timed(step, pool, seconds)
    finally:
        await db.execute(f"DROP TABLE IF EXISTS {table}")
        await db.close()
    settings = (
        f"PostgreSQL {version}, fsync={fsync}, synchronous_commit={commit}, asyncpg executemany"
    )
    return {"case": "postgresql", "settings": settings} | result


async def run(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    gen = ApimGenerator(1)
    pool = [gen.log_events(args.batch) for _ in range(POOL_BATCHES)]
    rounds: dict[str, list[dict[str, Any]]] = {}
    for _ in range(args.repeat):
        for case in ("walrep append", "sqlite", "mariadb", "postgresql"):
            if case == "walrep append":
                row = await walrep_case(pool, args.seconds, root)
            elif case == "sqlite":
                row = await sqlite_case(pool, args.seconds, root)
            elif case == "mariadb":
                row = await mariadb_case(pool, args.seconds)
            else:
                row = await postgres_case(pool, args.seconds)
            rounds.setdefault(case, []).append(row)
    out = []
    mine = statistics.median(r["events_per_s"] for r in rounds["walrep append"])
    for rows in rounds.values():
        if "skipped" in rows[0]:
            out.append(rows[0])
            continue
        rate = statistics.median(r["events_per_s"] for r in rows)
        out.append(
            {
                **rows[0],
                "events_per_s": rate,
                "events_per_s_all": [r["events_per_s"] for r in rows],
                "p50_ms": statistics.median(r["p50_ms"] for r in rows),
                "walrep_over_this": mine / rate,
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="walrep-bench-sql-", dir=args.dir) as tmp:
        info = machine_info(Path(tmp), ["walrep/log"])
        rows = asyncio.run(run(args, Path(tmp)))
    info["loadavg_end"] = os.getloadavg()
    doc = {
        "benchmark": "sql_peers",
        "machine": info,
        "batch": args.batch,
        "seconds": args.seconds,
        "repeat": args.repeat,
        "results": rows,
    }
    for r in rows:
        if "skipped" in r:
            print(f"  {r['case']:14s} skipped: {r['skipped']}")
        else:
            print(
                f"  {r['case']:14s} {r['events_per_s']:>10,.0f} events/s  p50 {r['p50_ms']:6.2f} ms"
                f"  walrep/this {r['walrep_over_this']:.2f}  ({r['settings']})"
            )
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
