"""Lease latency and failover time of walrep's SQL coordination store, next to the limit.

Every figure comes from one invocation, per backend (SQLite file on a local disk,
MariaDB, PostgreSQL), through the engine walrep builds (``walrep.db.create_engine``):

* ``raw CAS``      the limit: ``UPDATE <prefix>lease SET expires_at_ms = expires_at_ms + 1
                   WHERE group_id = :g`` in ``engine.begin()``, nothing else;
* ``renew``        ``SqlStore.renew`` of a held lease;
* ``try_acquire``  two nodes take turns: the holder records the other in-sync and
                   releases (not timed), the other's ``try_acquire`` is timed;
* ``failover``     two real nodes (``walrep.node.runtime.Node``: log, event sync,
                   lease) on separate engines, default timings
                   (``ClusterSection().lease_timing()``): ``a`` is active and ``b`` in
                   sync through replication; then every store call of ``a`` hangs from
                   that moment (``a`` renews nothing, as if it had died: the lease must
                   expire) and the time until ``b`` has won the lease is measured;
* ``switchover``   the same, but ``await a.stop()`` (which releases the lease) instead.

A diagnostic row, ``raw CAS lean``, runs the raw CAS on an engine with walrep's
settings minus ``pool_pre_ping`` and the pool's reset-on-return rollback: what the
limit itself costs in connection-pool round trips.

Each raw CAS sample is taken right before (even iterations) or right after (odd) a
walrep sample on the same engine, so a noisy moment on the shared machine hits both;
a walrep row's ratio is its p50 over the p50 of its own paired raw samples. Latencies
are ``time.perf_counter_ns`` around the awaited call. Tables are prefixed ``wbench_``,
group ids are fresh uuids, and this run's rows are deleted at the end.

Usage: ``.venv/bin/python benchmarks/coordination.py [--backends sqlite,mariadb,postgresql]
[--iterations 2000] [--failovers 10] [--quick] [--save]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import math
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import bench_common
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from walrep.config import ClusterSection
from walrep.db import create_engine, normalize_url, redact
from walrep.node.role import Role
from walrep.node.runtime import Node
from walrep.node.settings import NodeSettings
from walrep.replica.lease import LeaseTiming, Observed
from walrep.replica.shipper import Standby
from walrep.replica.sql_store import SqlStore
from walrep.replica.store import NodeInfo, NodeRow

BACKENDS = ("sqlite", "mariadb", "postgresql")
DEFAULT_URLS = {
    "mariadb": os.environ.get("WALREP_BENCH_MARIADB_URL", "mysql://root@127.0.0.1:3306/test"),
    "postgresql": os.environ.get(
        "WALREP_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    ),
}
TABLE_PREFIX = "wbench_"
HOLD_TTL_MS = 60_000  # latency loops: the lease must not expire while being measured
CALL_TIMEOUT_MS = 5_000  # latency loops: a slow call is a sample, not an error
RESULTS = Path(__file__).resolve().parent / "results"
MEMORY_FS = {"tmpfs", "ramfs"}
NS_PER_MS = 1_000_000
KINDS = ("crash", "switchover")


# --- statistics ----------------------------------------------------------------------------


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class Stats:
    """Summary of durations, in milliseconds."""

    n: int
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @classmethod
    def of(cls, durations_ns: Sequence[int]) -> Stats:
        ordered = sorted(durations_ns)

        def ms(ns: float) -> float:
            return round(ns / NS_PER_MS, 4)

        return cls(
            n=len(ordered),
            min_ms=ms(ordered[0]),
            p50_ms=ms(percentile(ordered, 50)),
            p90_ms=ms(percentile(ordered, 90)),
            p99_ms=ms(percentile(ordered, 99)),
            max_ms=ms(ordered[-1]),
            mean_ms=ms(sum(ordered) / len(ordered)),
        )


@dataclass
class LatencyCase:
    """A walrep call's samples and the raw CAS samples taken next to them."""

    walrep: Stats
    raw: Stats

    @property
    def ratio(self) -> float:
        return self.walrep.p50_ms / self.raw.p50_ms

    def as_dict(self) -> dict[str, Any]:
        return {
            "walrep": asdict(self.walrep),
            "paired_raw_cas": asdict(self.raw),
            "ratio_p50": round(self.ratio, 3),
        }


# --- latency loops -------------------------------------------------------------------------


class RawCas:
    """The limit: one UPDATE of one lease row in one transaction, on walrep's engine."""

    def __init__(self, store: SqlStore, group: str, engine: AsyncEngine | None = None) -> None:
        self.engine = engine or store.engine
        self.group = group
        self.statement = sa.text(
            f"UPDATE {store.lease.name} SET expires_at_ms = expires_at_ms + 1 WHERE group_id = :g"
        )

    async def __call__(self) -> int:
        start = time.perf_counter_ns()
        async with self.engine.begin() as conn:
            result = await conn.execute(self.statement, {"g": self.group})
        elapsed = time.perf_counter_ns() - start
        if result.rowcount != 1:
            raise RuntimeError(f"raw CAS updated {result.rowcount} rows")
        return elapsed


def lean_engine(url: str) -> AsyncEngine:
    """Diagnostic: walrep's engine without the pool's ping and rollback around each checkout."""
    parsed = normalize_url(url)
    engine = create_async_engine(parsed, pool_pre_ping=False, pool_reset_on_return=None)
    if parsed.get_backend_name() == "sqlite":  # the same pragmas and BEGIN as walrep.db

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=2000"):
                cursor.execute(f"PRAGMA {pragma}")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


async def timed_renew(store: SqlStore, group: str, epoch: int) -> int:
    start = time.perf_counter_ns()
    ok = await store.renew(group, "n1", epoch, HOLD_TTL_MS)
    elapsed = time.perf_counter_ns() - start
    if not ok:
        raise RuntimeError("renew of a held lease returned False")
    return elapsed


@dataclass
class Alternation:
    """Two nodes taking the lease in turns; only the taking ``try_acquire`` is timed."""

    store: SqlStore
    group: str
    holder: str = "n2"
    other: str = "n1"
    epoch: int = 0  # 0: nobody holds it yet, n1 becomes the group's first holder

    async def step(self) -> int:
        s, g = self.store, self.group
        if self.epoch > 0:
            if not await s.set_in_sync(g, self.holder, self.epoch, self.other, True, HOLD_TTL_MS):
                raise RuntimeError("set_in_sync by the holder returned False")
            if not await s.release(g, self.holder, self.epoch):
                raise RuntimeError("release by the holder returned False")
        start = time.perf_counter_ns()
        won, seen = await s.try_acquire(g, self.other, self.epoch, HOLD_TTL_MS)
        elapsed = time.perf_counter_ns() - start
        if not won or seen.epoch != self.epoch + 1 or seen.holder != self.other:
            raise RuntimeError(f"{self.other} did not take the released lease: {seen}")
        self.holder, self.other, self.epoch = self.other, self.holder, seen.epoch
        return elapsed


async def paired(
    iterations: int, warmup: int, raw: RawCas, step: Callable[[], Awaitable[int]]
) -> tuple[list[int], list[int]]:
    """(walrep samples, raw samples): raw before walrep on even iterations, after on odd."""
    walrep_ns: list[int] = []
    raw_ns: list[int] = []
    gc.collect()
    for i in range(-warmup, iterations):
        if i % 2 == 0:
            r = await raw()
            w = await step()
        else:
            w = await step()
            r = await raw()
        if i >= 0:
            walrep_ns.append(w)
            raw_ns.append(r)
    return walrep_ns, raw_ns


# --- failover ------------------------------------------------------------------------------


class RecordingStore(SqlStore):
    """SqlStore that remembers when the last successful renew returned (perf_counter_ns),
    and that can be frozen: every call made while frozen waits until ``thaw``."""

    last_renew_done_ns: int = 0
    _frozen: asyncio.Event | None = None

    def freeze(self) -> None:
        self._frozen = asyncio.Event()

    def thaw(self) -> None:
        if self._frozen is not None:
            self._frozen.set()
            self._frozen = None

    async def _gate(self) -> None:
        if self._frozen is not None:
            await self._frozen.wait()

    async def renew(self, group: str, node: str, epoch: int, ttl_ms: int) -> bool:
        await self._gate()
        ok = await super().renew(group, node, epoch, ttl_ms)
        if ok:
            self.last_renew_done_ns = time.perf_counter_ns()
        return ok

    async def set_in_sync(
        self, group: str, holder: str, epoch: int, standby: str, in_sync: bool, ttl_ms: int
    ) -> bool:
        await self._gate()
        return await super().set_in_sync(group, holder, epoch, standby, in_sync, ttl_ms)

    async def publish_node(self, group: str, info: NodeInfo) -> None:
        await self._gate()
        await super().publish_node(group, info)

    async def try_acquire(
        self, group: str, node: str, expected_epoch: int, ttl_ms: int, *, force: bool = False
    ) -> tuple[bool, Observed]:
        await self._gate()
        return await super().try_acquire(group, node, expected_epoch, ttl_ms, force=force)

    async def nodes(self, group: str) -> list[NodeRow]:
        await self._gate()
        return await super().nodes(group)


@dataclass
class Trial:
    kind: str  # "crash" or "switchover"
    group: str
    settle_ms: float  # how long both ran before the crash / stop (randomizes the phase)
    takeover_ms: float  # crash / stop() called -> b's on_promoted
    lease_left_ms: float | None  # crash: a's lease time left after its last renew (estimate)
    after_expiry_ms: float | None  # crash: takeover - lease_left (b's poll wait + acquire)
    epoch: int
    events: list[str] = field(default_factory=list)


async def trial(
    kind: str,
    store_a: RecordingStore,
    store_b: SqlStore,
    timing: LeaseTiming,
    phase: float,
    root: Path,
) -> Trial:
    """One crash or switchover, ``phase`` (0..1) into a window of two heartbeats."""
    group = f"wbench-fo-{uuid.uuid4().hex[:12]}"
    origin = time.perf_counter_ns()

    def node(name: str, store: SqlStore) -> Node:
        settings = NodeSettings(
            group=group,
            node_id=name,
            secret=b"bench",
            lease=timing,
            call_timeout_ms=timing.valid_for_ms,
        )
        return Node(settings, root / group / name, store)

    a, b = node("a", store_a), node("b", store_b)
    try:
        await a.start()
        await a.wait_until(lambda n: n.role is Role.ACTIVE, 10)
        await b.start()
        await a.wait_until(_standby_in_sync, 10)
        # Let b poll for a while; the phase spreads the crash over a's renew cycle and
        # b's poll cycle (the takeover time is mostly a function of these two phases).
        settle_s = 0.3 + phase * 2 * timing.heartbeat_interval_ms / 1000
        await asyncio.sleep(settle_s)
        if a.role is not Role.ACTIVE or b.role is not Role.PASSIVE:
            raise RuntimeError(f"a must be active before the {kind}: {a.role}, {b.role}")
        start = time.perf_counter_ns()
        if kind == "crash":
            store_a.freeze()  # a renews nothing from now on: the lease has to expire
        else:
            await a.stop()
        await b.wait_until(lambda n: n.role in (Role.PROMOTING, Role.ACTIVE), 10)
        promoted_ns, epoch = time.perf_counter_ns(), b.epoch
    finally:
        store_a.thaw()
        await a.stop()
        await b.stop()
    events = [
        f"{(promoted_ns - origin) / NS_PER_MS:.1f} b promoted {epoch}",
        *(f"b {s.step} {s.duration_ms} ms" for s in b.steps),
    ]
    takeover_ns = promoted_ns - start
    lease_left_ns = store_a.last_renew_done_ns + timing.lease_ttl_ms * NS_PER_MS - start
    return Trial(
        kind=kind,
        group=group,
        settle_ms=round(settle_s * 1000, 1),
        takeover_ms=round(takeover_ns / NS_PER_MS, 2),
        lease_left_ms=round(lease_left_ns / NS_PER_MS, 2) if kind == "crash" else None,
        after_expiry_ms=(
            round((takeover_ns - lease_left_ns) / NS_PER_MS, 2) if kind == "crash" else None
        ),
        epoch=epoch,
        events=events,
    )


def _standby_in_sync(node: Node) -> bool:
    term = node.core_.term
    return term is not None and term.shipper.standby_state is Standby.IN_SYNC


def implied(timing: LeaseTiming) -> dict[str, float]:
    """Takeover times the timings imply, before any call latency is added."""
    ttl, hb, poll = timing.lease_ttl_ms, timing.heartbeat_interval_ms, timing.poll_interval_ms
    return {
        # The last renew happened 0..heartbeat before the crash, so the lease has
        # ttl-hb..ttl left; b's next poll comes 0..poll after the expiry.
        "crash_best_ms": ttl - hb,
        "crash_expected_ms": ttl - hb / 2 + poll / 2,
        "crash_worst_ms": ttl + poll,
        # Release expires the lease at once; b's next poll comes 0..poll later.
        "switchover_best_ms": 0,
        "switchover_expected_ms": poll / 2,
        "switchover_worst_ms": poll,
    }


def stats_ms(values: Sequence[float | None]) -> dict[str, float]:
    ordered = sorted(v for v in values if v is not None)
    return {
        "n": len(ordered),
        "min_ms": ordered[0],
        "p50_ms": percentile(ordered, 50),
        "max_ms": ordered[-1],
    }


# --- one backend ---------------------------------------------------------------------------


def backend_url(backend: str, sqlite_dir: Path, args: argparse.Namespace) -> str:
    if backend == "sqlite":
        return f"sqlite:///{sqlite_dir / 'coordination.db'}"
    return str(args.mariadb_url if backend == "mariadb" else args.postgres_url)


def make_store(url: str, cls: type[SqlStore] = SqlStore, **kwargs: int) -> SqlStore:
    """A store on walrep's engine for ``url``; ``kwargs`` as SqlStore takes them."""
    return cls(create_engine(normalize_url(url)), table_prefix=TABLE_PREFIX, **kwargs)


async def server_info(store: SqlStore) -> dict[str, Any]:
    queries = {
        "sqlite": {
            "version": "SELECT sqlite_version()",
            "journal_mode": "PRAGMA journal_mode",
            "synchronous": "PRAGMA synchronous",
        },
        "mysql": {
            "version": "SELECT VERSION()",
            "innodb_flush_log_at_trx_commit": "SELECT @@innodb_flush_log_at_trx_commit",
            "sync_binlog": "SELECT @@sync_binlog",
            "log_bin": "SELECT @@log_bin",
        },
        "postgresql": {
            "version": "SHOW server_version",
            "synchronous_commit": "SHOW synchronous_commit",
            "fsync": "SHOW fsync",
            "wal_sync_method": "SHOW wal_sync_method",
        },
    }[store.engine.dialect.name]
    out: dict[str, Any] = {"driver": store.engine.dialect.driver}
    async with store.engine.connect() as conn:
        for name, query in queries.items():
            out[name] = (await conn.execute(sa.text(query))).scalar_one()
    return out


async def run_backend(
    backend: str, url: str, args: argparse.Namespace, timing: LeaseTiming, rng: random.Random
) -> dict[str, Any]:
    store = make_store(url, call_timeout_ms=CALL_TIMEOUT_MS)
    groups: list[str] = []
    try:
        await store.setup()
        info = await server_info(store)
        print(f"\n[{backend}] {redact(url)}  {info}", file=sys.stderr, flush=True)

        raw_group, renew_group, acquire_group = (
            f"wbench-{what}-{uuid.uuid4().hex[:12]}" for what in ("raw", "renew", "acquire")
        )
        groups += [raw_group, renew_group, acquire_group]
        await store.read_lease(raw_group)  # creates the row the raw CAS updates
        raw = RawCas(store, raw_group)

        won, seen = await store.try_acquire(renew_group, "n1", 0, HOLD_TTL_MS)
        if not won:
            raise RuntimeError(f"first acquire of a fresh group failed: {seen}")
        renew_ns, renew_raw_ns = await paired(
            args.iterations, args.warmup, raw, lambda: timed_renew(store, renew_group, seen.epoch)
        )
        renew = LatencyCase(Stats.of(renew_ns), Stats.of(renew_raw_ns))
        print(f"  renew        {renew.walrep}", file=sys.stderr, flush=True)

        turns = Alternation(store, acquire_group)
        acquire_ns, acquire_raw_ns = await paired(args.iterations, args.warmup, raw, turns.step)
        acquire = LatencyCase(Stats.of(acquire_ns), Stats.of(acquire_raw_ns))
        print(f"  try_acquire  {acquire.walrep}", file=sys.stderr, flush=True)
        raw_all = Stats.of(renew_raw_ns + acquire_raw_ns)

        lean = RawCas(store, raw_group, lean_engine(url))
        try:
            lean_ns, lean_raw_ns = await paired(args.iterations, args.warmup, raw, lean)
        finally:
            await lean.engine.dispose()
        raw_lean = LatencyCase(Stats.of(lean_ns), Stats.of(lean_raw_ns))
        print(f"  raw CAS lean {raw_lean.walrep}", file=sys.stderr, flush=True)
    finally:
        await cleanup(store, groups)
        await store.close()

    trials = await run_failovers(url, args.failovers, timing, rng)
    crash = [t for t in trials if t.kind == "crash"]
    switch = [t for t in trials if t.kind == "switchover"]
    return {
        "url": redact(url),
        "server": info,
        "raw_cas": asdict(raw_all),
        "renew": renew.as_dict(),
        "try_acquire": acquire.as_dict(),
        "raw_cas_lean": raw_lean.as_dict(),
        "failover_crash": {
            "takeover": stats_ms([t.takeover_ms for t in crash]),
            "lease_left_at_crash": stats_ms([t.lease_left_ms for t in crash]),
            "after_expiry": stats_ms([t.after_expiry_ms for t in crash]),
        },
        "switchover": {"takeover": stats_ms([t.takeover_ms for t in switch])},
        "trials": [asdict(t) for t in trials],
    }


async def run_failovers(
    url: str, count: int, timing: LeaseTiming, rng: random.Random
) -> list[Trial]:
    """``count`` crashes and ``count`` switchovers, alternating, on two engines.

    The phases are stratified (one random point in each 1/count of the window, in random
    order), so that ten trials already cover the whole renew and poll cycles.
    """
    store_a = make_store(url, RecordingStore)  # SqlStore's default call timeout
    store_b = make_store(url)
    assert isinstance(store_a, RecordingStore)
    trials: list[Trial] = []
    root = Path(tempfile.mkdtemp(prefix="walrep-bench-failover-", dir=Path.cwd()))
    try:
        await store_a.setup()
        await store_b.setup()
        phases = {kind: [(i + rng.random()) / count for i in range(count)] for kind in KINDS}
        for kind_phases in phases.values():
            rng.shuffle(kind_phases)
        for i in range(count):
            for kind in KINDS:
                t = await trial(kind, store_a, store_b, timing, phases[kind][i], root)
                trials.append(t)
                extra = (
                    f"  (lease left {t.lease_left_ms:.1f}, then {t.after_expiry_ms:.1f})"
                    if kind == "crash"
                    else ""
                )
                print(
                    f"  {kind:<10} {i + 1}/{count}  {t.takeover_ms:8.1f} ms{extra}",
                    file=sys.stderr,
                    flush=True,
                )
        await asyncio.sleep(0.05)  # a crashed node's last renew may still be finishing
    finally:
        await cleanup(store_a, [t.group for t in trials])
        await store_a.close()
        await store_b.close()
        shutil.rmtree(root, ignore_errors=True)
    return trials


async def cleanup(store: SqlStore, groups: list[str]) -> None:
    """Delete this run's rows (the tables stay: other runs may use them)."""
    if not groups:
        return
    async with store.engine.begin() as conn:
        for table in (store.history_t, store.in_sync, store.nodes_t, store.lease):
            await conn.execute(sa.delete(table).where(table.c.group_id.in_(groups)))


# --- machine and report -------------------------------------------------------------------


def machine_info(sqlite_dir: Path) -> dict[str, Any]:
    packages = ("sqlalchemy", "aiosqlite", "aiomysql", "pymysql", "asyncpg")
    info = bench_common.machine_info(sqlite_dir, ["walrep/replica", "walrep/db.py"])
    info["packages"] = {p: package_version(p) for p in packages}
    return info


def python_command() -> str:
    """The interpreter as typed from the repository root (``.venv/bin/python``)."""
    repo = Path(__file__).resolve().parent.parent
    executable = Path(sys.executable)
    return str(executable.relative_to(repo)) if executable.is_relative_to(repo) else str(executable)


def fmt(ms: float) -> str:
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def table_rows(results: dict[str, dict[str, Any]], bounds: dict[str, float]) -> list[list[str]]:
    rows = []
    for backend, r in results.items():
        raw = r["raw_cas"]
        rows.append(
            [
                backend,
                "raw CAS UPDATE (limit)",
                str(raw["n"]),
                fmt(raw["p50_ms"]),
                fmt(raw["p99_ms"]),
                "",
                "",
            ]
        )
        for what, label in (
            ("renew", "walrep renew"),
            ("try_acquire", "walrep try_acquire"),
            ("raw_cas_lean", "(diag) raw CAS lean"),
        ):
            case = r[what]
            w, limit = case["walrep"], case["paired_raw_cas"]
            rows.append(
                [
                    backend,
                    label,
                    str(w["n"]),
                    fmt(w["p50_ms"]),
                    fmt(w["p99_ms"]),
                    fmt(limit["p50_ms"]),
                    f"{case['ratio_p50']:.2f}x",
                ]
            )
        for what, label, key in (
            ("failover_crash", "failover: crash -> b promoted", "crash_expected_ms"),
            ("switchover", "switchover: stop -> b promoted", "switchover_expected_ms"),
        ):
            t = r[what]["takeover"]
            rows.append(
                [
                    backend,
                    label,
                    str(t["n"]),
                    fmt(t["p50_ms"]),
                    f"{fmt(t['max_ms'])} max",
                    f"{fmt(bounds[key])} impl",
                    f"{t['p50_ms'] / bounds[key]:.2f}x",
                ]
            )
    return rows


def render(rows: list[list[str]]) -> str:
    head = ["backend", "what", "n", "p50 ms", "p99/max ms", "limit ms", "ratio"]
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    left = {0, 1}

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(head), "-" * len(line(head))]
    previous = rows[0][0] if rows else ""
    for row in rows:
        if row[0] != previous:
            out.append("")
            previous = row[0]
        out.append(line(row))
    return "\n".join(out)


def failover_summary(
    results: dict[str, dict[str, Any]], timing: LeaseTiming, bounds: dict[str, float]
) -> str:
    lines = [
        f"implied by the defaults: heartbeat {timing.heartbeat_interval_ms} ms, "
        f"lease_ttl {timing.lease_ttl_ms} ms, safety margin {timing.safety_margin_ms} ms, "
        f"poll {timing.poll_interval_ms} ms",
        f"  crash:      best ttl-hb = {bounds['crash_best_ms']:g}, expected ttl-hb/2+poll/2 = "
        f"{bounds['crash_expected_ms']:g}, worst ttl+poll = {bounds['crash_worst_ms']:g} ms "
        "(+ one try_acquire call)",
        f"  switchover: best ~0, expected poll/2 = {bounds['switchover_expected_ms']:g}, "
        f"worst poll = {bounds['switchover_worst_ms']:g} ms (+ release + try_acquire calls)",
        "measured (ms):",
    ]
    for backend, r in results.items():
        c, left = r["failover_crash"]["takeover"], r["failover_crash"]["lease_left_at_crash"]
        after, s = r["failover_crash"]["after_expiry"], r["switchover"]["takeover"]
        lines.append(
            f"  {backend:<11} crash min/p50/max {c['min_ms']:.1f} / {c['p50_ms']:.1f} / "
            f"{c['max_ms']:.1f}   (lease left at crash {left['min_ms']:.0f}..{left['max_ms']:.0f}, "
            f"promoted {after['min_ms']:.1f}..{after['max_ms']:.1f} after expiry)   "
            f"switchover p50/max {s['p50_ms']:.1f} / {s['max_ms']:.1f}"
        )
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------


class LogCapture(logging.Handler):
    """Keeps walrep's warnings for the results instead of printing them mid-run."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not message.endswith(": released"):  # every graceful stop logs its own fence
            self.messages.append(f"{record.levelname} {record.name}: {message}")

    def install(self) -> None:
        logger = logging.getLogger("walrep")
        logger.addHandler(self)
        logger.setLevel(logging.WARNING)
        logger.propagate = False


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help=f"comma-separated, from {', '.join(BACKENDS)} (default: all)",
    )
    parser.add_argument("--iterations", type=int, help="timed calls per case (default 2000)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls (default 10%%)")
    parser.add_argument("--failovers", type=int, help="crashes and switchovers each (default 10)")
    parser.add_argument("--quick", action="store_true", help="defaults 200 iterations, 3 failovers")
    parser.add_argument("--save", action="store_true", help=f"write JSON to {RESULTS}")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="SQLite file dir")
    parser.add_argument("--mariadb-url", default=DEFAULT_URLS["mariadb"])
    parser.add_argument("--postgres-url", default=DEFAULT_URLS["postgresql"])
    parser.add_argument("--seed", type=int, default=1, help="seed of the crash/stop phases")
    args = parser.parse_args(argv)
    iterations, failovers = (200, 3) if args.quick else (2000, 10)
    args.iterations = args.iterations or iterations
    args.failovers = args.failovers or failovers
    if args.warmup is None:
        args.warmup = max(20, args.iterations // 10)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(args.backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    return args


async def run(args: argparse.Namespace, sqlite_dir: Path) -> dict[str, dict[str, Any]]:
    timing = ClusterSection().lease_timing()
    rng = random.Random(args.seed)
    capture = LogCapture()
    capture.install()
    results: dict[str, dict[str, Any]] = {}
    for backend in args.backends:
        url = backend_url(backend, sqlite_dir, args)
        seen = len(capture.messages)
        results[backend] = await run_backend(backend, url, args, timing, rng)
        results[backend]["walrep_warnings"] = capture.messages[seen:]
        if capture.messages[seen:]:
            print(
                f"  {len(capture.messages) - seen} walrep warning(s), first: "
                f"{capture.messages[seen]}",
                file=sys.stderr,
                flush=True,
            )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    sqlite_dir = Path(tempfile.mkdtemp(prefix="walrep-coord-", dir=args.dir))
    info = machine_info(sqlite_dir)
    timing = ClusterSection().lease_timing()
    bounds = implied(timing)
    changed = " (walrep/replica or db.py has uncommitted changes)" if info["walrep_changes"] else ""
    print(
        f"walrep coordination benchmark  {info['date']}  commit {info['walrep_commit']}{changed}\n"
        f"python {info['python']}, {info['cpus_usable']} cpus ({info['cpu_model']}); "
        f"SQLite in {sqlite_dir} ({info['filesystem']} on {info['device']})\n"
        f"{args.iterations} timed calls per case after {args.warmup} warm-up; "
        f"{args.failovers} crashes + {args.failovers} switchovers per backend; {timing}",
        flush=True,
    )
    if info["filesystem"] in MEMORY_FS:
        print(f"WARNING: {sqlite_dir} is on {info['filesystem']}: SQLite commits are free")
    try:
        results = asyncio.run(run(args, sqlite_dir))
    finally:
        shutil.rmtree(sqlite_dir, ignore_errors=True)
    info["loadavg_end"] = os.getloadavg()

    rows = table_rows(results, bounds)
    text = render(rows)
    note = (
        "p50/p99 of latencies; failover rows show p50 and max. limit: p50 of the raw CAS "
        "samples paired with that row (failover rows: the takeover time the default timings "
        "imply on average). ratio: p50 / limit."
    )
    print(f"\n{text}\n\n{note}\n\n{failover_summary(results, timing, bounds)}")
    if args.save or args.json:
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"coordination-{datetime.now().strftime('%Y-%m-%d')}.json"
        document = {
            "benchmark": "coordination",
            "command": " ".join([python_command(), *sys.argv]),
            "machine": info,
            "settings": {
                "iterations": args.iterations,
                "warmup": args.warmup,
                "failovers": args.failovers,
                "seed": args.seed,
                "table_prefix": TABLE_PREFIX,
                "timing": asdict(timing),
            },
            "implied": bounds,
            "table": [
                dict(
                    zip(
                        ["backend", "what", "n", "p50", "p99_or_max", "limit", "ratio"],
                        row,
                        strict=True,
                    )
                )
                for row in rows
            ],
            "backends": results,
        }
        if args.json:
            args.json.write_text(json.dumps(document, indent=2) + "\n")
        if args.save:
            out.write_text(json.dumps(document, indent=2) + "\n")
            print(f"saved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
