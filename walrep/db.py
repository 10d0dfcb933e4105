"""Database plumbing shared by the coordinator and (later) snapshots and sinks.

Datasources become SQLAlchemy 2 asyncio engines:

* SQLite through aiosqlite: the embedded default, one file that two local nodes share.
  Write transactions start with ``BEGIN IMMEDIATE`` (the SQLAlchemy recipe for
  pysqlite-style drivers) so two processes serialize on the database lock instead of
  failing on lock upgrade; WAL journal, ``synchronous=FULL``, a busy timeout.
* MySQL / MariaDB through aiomysql, an asyncio wrapper around PyMySQL's protocol code
  (chosen over PyMySQL in a worker thread: no thread per connection, and cancellation
  of a hung call closes the socket instead of leaving a thread blocked in ``recv``).
* PostgreSQL through asyncpg.

Seed JDBC URLs (``jdbc:mysql://host:3306/db?useSSL=false``) are accepted and mapped.
Every call goes through ``guarded``: a timeout, and driver/OS errors turned into
``CoordinationError`` with the cause attached (``raise ... from e``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from walrep.errors import ConfigError, CoordinationError

T = TypeVar("T")

# Milliseconds since the Unix epoch on the database server's clock.
_NOW_MS_SQL = {
    "sqlite": "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    "mysql": "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)",
    "postgresql": "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
}

_ASYNC_DRIVERS = {
    "sqlite": "aiosqlite",
    "mysql": "aiomysql",
    "mariadb": "aiomysql",
    "postgresql": "asyncpg",
}


def normalize_url(url: str, *, username: str | None = None, password: str | None = None) -> URL:
    """An async SQLAlchemy URL from a SQLAlchemy or seed JDBC URL, credentials merged in."""
    text = url[len("jdbc:") :] if url.startswith("jdbc:") else url
    try:
        parsed = make_url(text)
    except (SQLAlchemyError, ValueError) as e:
        raise ConfigError(f"datasource url {redact(url)!r} is not a database URL: {e}") from e
    backend = parsed.get_backend_name()
    if backend == "postgres":
        backend = "postgresql"
    if backend not in _ASYNC_DRIVERS:
        raise ConfigError(f"datasource url {redact(url)!r}: unsupported database {backend!r}")
    if backend == "mariadb":
        backend = "mysql"
    query = {k: v for k, v in parsed.query.items() if k not in ("useSSL", "autoReconnect")}
    parsed = parsed.set(drivername=f"{backend}+{_ASYNC_DRIVERS[backend]}", query=query)
    if username is not None and parsed.username is None:
        parsed = parsed.set(username=username)
    if password is not None and parsed.password is None:
        parsed = parsed.set(password=password)
    return parsed


def redact(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    parts = urlsplit(url.removeprefix("jdbc:"))
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def create_engine(url: URL, *, connect_timeout_ms: int = 2000, pool_size: int = 4) -> AsyncEngine:
    """An engine with the per-dialect settings above."""
    backend = url.get_backend_name()
    timeout_s = connect_timeout_ms / 1000
    # A server may have restarted since a pooled connection was used: ping it first, so one
    # stale connection does not cost the leader a renew. A local SQLite file cannot go stale.
    kwargs: dict[str, Any] = {"pool_pre_ping": backend != "sqlite"}
    if backend == "sqlite":
        kwargs["connect_args"] = {"timeout": timeout_s}
    elif backend == "mysql":
        kwargs |= {"pool_size": pool_size, "connect_args": {"connect_timeout": timeout_s}}
    elif backend == "postgresql":
        kwargs |= {"pool_size": pool_size, "connect_args": {"timeout": timeout_s}}
    engine = create_async_engine(url, **kwargs)
    if backend == "sqlite":
        _sqlite_immediate_transactions(engine, busy_timeout_ms=connect_timeout_ms)
    return engine


def _sqlite_immediate_transactions(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        sqlite_pragmas(dbapi_connection, busy_timeout_ms)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def sqlite_pragmas(dbapi_connection: Any, busy_timeout_ms: int) -> None:
    """A new SQLite connection: we issue BEGIN ourselves; WAL journal, ``synchronous=FULL``
    (a commit is on disk when it returns), a busy timeout."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    cursor.close()


def now_ms_sql(engine: AsyncEngine) -> sa.ColumnElement[int]:
    """The database clock, as a SQL expression usable in any statement."""
    return sa.literal_column(_NOW_MS_SQL[engine.dialect.name], sa.BigInteger)


def for_update(engine: AsyncEngine) -> bool:
    """Whether ``SELECT ... FOR UPDATE`` applies (SQLite serializes with BEGIN IMMEDIATE)."""
    return engine.dialect.name != "sqlite"


async def guarded(what: str, call: Coroutine[Any, Any, T], timeout_ms: int) -> T:
    """Run one database call with a timeout; driver and OS errors become CoordinationError.

    At the deadline the call is cancelled and *not* waited for: a driver's cleanup of a
    cancelled call (a rollback on a dead socket) can hang as long as the call did, and the
    caller's deadline (the lease) must not depend on it. The cleanup finishes on its own.
    """
    task = asyncio.ensure_future(call)
    done, _ = await asyncio.wait({task}, timeout=timeout_ms / 1000)
    if not done:
        task.cancel()
        task.add_done_callback(_consume_outcome)
        raise CoordinationError(f"{what}: no answer from the database within {timeout_ms} ms")
    try:
        return task.result()
    except CoordinationError:
        raise
    except sa.exc.ProgrammingError as e:  # our SQL or schema is wrong: retrying cannot help
        raise CoordinationError(f"{what}: {e.orig!r}", retriable=False) from e
    except (SQLAlchemyError, OSError, EOFError) as e:
        cause = getattr(e, "orig", None) or e
        raise CoordinationError(f"{what}: database unavailable: {cause!r}") from e


def _consume_outcome(task: asyncio.Future[Any]) -> None:
    """Retrieve the late outcome of an abandoned call so asyncio does not report it."""
    if not task.cancelled():
        task.exception()
