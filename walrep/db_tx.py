"""Running one transaction whose body is plain (synchronous) SQLAlchemy code.

A body is ``def body(conn: sa.Connection) -> T``, written once for every dialect.
``Transactions.run`` carries it out under the caller's timeout (``walrep.db.guarded``):

* **SQLite**: the whole transaction, BEGIN to COMMIT, runs in one call on a worker thread
  with the standard library's driver. The database lock is never held while the body
  waits for an event loop: with aiosqlite every statement was a round trip through the
  loop, so a node whose loop was busy (saturating ingest, a warm standby applying) held
  the file's write lock for hundreds of milliseconds, and the other node's lease renewal
  waited behind it (seen: 500 ms renewals, the lease lost under load). Read-only bodies
  start a deferred transaction (in WAL mode readers take no lock); the others
  ``BEGIN IMMEDIATE``, so two processes serialize on the lock instead of failing to
  upgrade it. At most ``max_waiting`` calls wait for the workers; one more is refused.
* **MySQL/MariaDB, PostgreSQL**: the body runs on the asyncio engine through
  ``AsyncConnection.run_sync`` (row locks, one connection per transaction).

The SQLite engine here is a twin of the asyncio engine made by ``walrep.db.create_engine``
(same file, same pragmas); the asyncio engine keeps serving the dialect and whatever
else is written against it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from walrep.db import guarded, sqlite_pragmas
from walrep.errors import CoordinationError

T = TypeVar("T")
Body = Callable[[sa.Connection], T]

SQLITE_WORKERS = 2  # SQLite has one writer at a time; a second worker serves reads
READ_ONLY = "walrep_read_only"  # execution option: start a deferred transaction


class Transactions:
    def __init__(self, engine: AsyncEngine, *, busy_timeout_ms: int, max_waiting: int = 8) -> None:
        self.engine = engine
        self.max_waiting = max_waiting
        self._waiting = 0
        self._lock = threading.Lock()
        self._sync: sa.Engine | None = None
        self._pool: ThreadPoolExecutor | None = None
        if engine.dialect.name == "sqlite":
            self._sync = _sqlite_twin(engine, busy_timeout_ms)
            self._pool = ThreadPoolExecutor(SQLITE_WORKERS, thread_name_prefix="walrep-sqlite")

    async def run(self, what: str, body: Body[T], *, timeout_ms: int, read_only: bool = False) -> T:
        """``body`` in one transaction, committed when it returns; ``CoordinationError``
        (retriable unless our SQL is wrong) on a timeout or a database failure."""
        if self._sync is None:
            return await guarded(what, self._on_loop(body), timeout_ms)
        return await guarded(what, self._in_thread(what, body, read_only), timeout_ms)

    async def _on_loop(self, body: Body[T]) -> T:
        async with self.engine.begin() as conn:
            return await conn.run_sync(body)

    async def _in_thread(self, what: str, body: Body[T], read_only: bool) -> T:
        assert self._pool is not None
        with self._lock:
            if self._waiting >= self.max_waiting:
                raise CoordinationError(
                    f"{what}: {self._waiting} calls already wait for the database"
                )
            self._waiting += 1
        try:
            future = asyncio.get_running_loop().run_in_executor(
                self._pool, self._transaction, body, read_only
            )
        except BaseException:
            self._done()
            raise
        future.add_done_callback(lambda _: self._done())
        return await asyncio.shield(future)  # a timeout abandons the call, never the thread

    def _done(self) -> None:
        with self._lock:
            self._waiting -= 1

    def _transaction(self, body: Body[T], read_only: bool) -> T:
        assert self._sync is not None
        with self._sync.connect() as conn:
            if read_only:
                conn.execution_options(**{READ_ONLY: True})
            with conn.begin():
                return body(conn)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._sync is not None:
            self._sync.dispose()


def _sqlite_twin(engine: AsyncEngine, busy_timeout_ms: int) -> sa.Engine:
    url = engine.url.set(drivername="sqlite+pysqlite")
    twin = sa.create_engine(
        url, connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False}
    )

    @event.listens_for(twin, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        sqlite_pragmas(dbapi_connection, busy_timeout_ms)

    @event.listens_for(twin, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return twin
