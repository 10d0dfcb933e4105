"""Replicated append throughput and latency of walrep (active + passive), next to the limit.

Every figure comes from one invocation on one disk, over loopback, with the passive (the
follower) in a process of its own: two nodes on one machine. An append counts only once
it is durable on both: written and ``fdatasync``-ed by the leader, shipped, written and
``fdatasync``-ed by the follower, and acknowledged.

* ``raw``      the limit: a minimal leader/follower pair on plain blocking sockets. The
               leader ``os.writev`` + ``os.fdatasync`` its file, sends the same bytes
               (length-prefixed) and reads 8-byte acks; the follower receives, writes
               every complete batch it holds with one ``os.writev``, ``os.fdatasync`` and
               acks the count of batches it has made durable. The bytes of each batch are
               exactly the frame walrep writes for it (built with walrep's codec).
* ``walrep``   ``Node.append(events)`` on the active node (``walrep.node.runtime``: the
               node core, its lease and event sync) with the passive node in the other
               process, coordinating through one SQLite file; default settings: fsync
               policy ALWAYS on both logs, ack policy all, standby in sync before timing
               starts. Encoding included.
* ``encoded``  diagnostic: ``Node.append`` of batches encoded beforehand, to tell the
               cost of encoding from the rest.

Each in two modes: ``1 in flight`` (one batch at a time: the next is sent once the last
is acked) and ``16 in flight`` (raw: a window of 16 batches; walrep: 16 concurrent
appenders each awaiting its own appends), at 1, 100 and 1000 events per batch.

Each case runs in a fresh leader process (this script with ``--child``), which starts its
follower (``--follower``). In each round the raw run of a batch size and mode sits between
the two walrep runs of the same size and mode (``Node.append`` right after it in
even rounds, right before it in odd ones), and their ratios are taken against it. Usage:
``.venv/bin/python benchmarks/replication.py [--seconds 3] [--repeat 3] [--save]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import bench_common

from walrep.cli.demo import sample_events
from walrep.db import create_engine, normalize_url
from walrep.log import EncodedBatch, Event, LogConfig
from walrep.log.frame import HEADER_SIZE, build_frame, encode_batch
from walrep.node.role import Role
from walrep.node.runtime import Node
from walrep.node.settings import NodeSettings
from walrep.replica.shipper import Standby
from walrep.replica.sql_store import SqlStore

BATCH_SIZES = (1, 100, 1000)
WINDOW = 16  # "16 in flight": raw window of batches / walrep concurrent appenders
MODES = {1: "1 in flight", WINDOW: f"{WINDOW} in flight"}
IMPLS = ("raw", "walrep", "encoded")  # "encoded": walrep with batches encoded beforehand
EPOCH = 1
POOL_EVENTS = 20_000  # distinct events, cycled through: 20,000 / 200 / 20 distinct batches
HOST = "127.0.0.1"
GROUP, SECRET = "bench", b"bench-secret"
READ_BYTES = 256 * 1024  # raw follower's recv size (as walrep's passive reads)
IN_SYNC_TIMEOUT_S = 10.0
RESULTS = Path(__file__).resolve().parent / "results"
MEMORY_FS = {"tmpfs", "ramfs"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")

# (impl, window, batch) -> [(figure, op, threshold)]
TARGETS: dict[tuple[str, int, int], list[tuple[str, str, float]]] = {
    ("walrep", 1, 1000): [("events_per_s", ">=", 400_000)],
    ("walrep", WINDOW, 1000): [("events_per_s", ">=", 400_000)],
    ("walrep", 1, 1): [("p50_us", "<=", 800), ("p99_us", "<=", 2000)],
}
LABELS = {
    "raw": "raw pair (fdatasync+TCP)",
    "walrep": "walrep Node.append",
    "encoded": "(diag) walrep pre-encoded",
}


@dataclass
class Run:
    """One timed run of one case (leader and follower)."""

    impl: str
    window: int
    batch: int
    round: int
    ops: int  # batches made durable on both
    events: int
    frame_bytes: int  # bytes of the frames written to each log
    seconds: float
    p50_us: float  # latency of one batch: send (raw) or call (walrep) to ack / return
    p99_us: float
    leader_cpu_us_per_event: float  # user + system CPU of the whole process (all threads)
    follower_cpu_us_per_event: float
    leader_fsyncs: int  # write + fdatasync groups on each side, whole run incl. warm-up
    follower_fsyncs: int
    total_batches: int  # batches durable on both over the whole run incl. warm-up
    follower_messages: int  # walrep: Append messages received by the passive
    checks: str  # "ok", or what went wrong (standby left sync, logs differ, ...)
    load1: float | None = None  # 1-minute load average when the run ended (noise hint)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.frame_bytes / self.seconds / 1e6

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out |= {"events_per_s": round(self.events_per_s, 1), "mb_per_s": round(self.mb_per_s, 3)}
        return {k: v for k, v in out.items() if v is not None}


# --- workload ----------------------------------------------------------------------------


@dataclass
class Workload:
    """Batches of one size: the events, encoded, and the exact frames walrep writes."""

    batch: int
    events: list[list[Event]]
    encoded: list[EncodedBatch]
    frames: list[bytes]


def make_workload(batch: int) -> Workload:
    pool = sample_events(POOL_EVENTS, seed=42)
    events = [pool[i : i + batch] for i in range(0, len(pool) - batch + 1, batch)]
    c = LogConfig()
    encoded = [
        encode_batch(
            b,
            max_event_bytes=c.max_event_bytes,
            max_batch_bytes=c.max_batch_bytes,
            compress_threshold_bytes=c.compress_threshold_bytes,
        )
        for b in events
    ]  # what Wal.encode does with the default config
    frames, offset, now_ms = [], 0, time.time_ns() // 1_000_000
    for e in encoded:
        frames.append(build_frame(e, base_offset=offset, epoch=EPOCH, ingest_time_ms=now_ms))
        assert len(frames[-1]) == HEADER_SIZE + len(e.payload)
        offset += e.count
    return Workload(batch, events, encoded, frames)


# --- measuring -----------------------------------------------------------------------------


def percentile_us(ordered: list[int], p: float) -> float:
    """Nearest-rank percentile of sorted nanoseconds, in microseconds."""
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)] / 1000


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Phase:
    """What one timed phase produced on the leader."""

    latencies: list[int]  # ns, one per batch
    elapsed_ns: int
    batches: int
    events: int
    frame_bytes: int


class Follower:
    """The follower process of one case: started by the leader, on the same disk."""

    def __init__(self, impl: str, root: Path) -> None:
        argv = [sys.executable, __file__, "--follower", impl, "--dir", str(root)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self._stdin: IO[str] = self.proc.stdin
        self._stdout: IO[str] = self.proc.stdout
        line = self._stdout.readline()
        if not line:
            raise RuntimeError(f"{impl} follower exited before listening")
        self.port = int(line)

    def cpu_s(self) -> float:
        """User + system CPU of the follower so far (all threads; clock-tick resolution)."""
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = stat.rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def finish(self) -> dict[str, Any]:
        """Tell it to stop (stdin closed), read its report, reap it."""
        self._stdin.close()
        report: dict[str, Any] = json.loads(self._stdout.read())
        if self.proc.wait(timeout=60) != 0:
            raise RuntimeError(f"follower exited with {self.proc.returncode}")
        return report


# --- the limit: a minimal leader/follower pair ---------------------------------------------


def raw_follower(root: Path) -> dict[str, Any]:
    """Receive length-prefixed frames; write all complete ones, fdatasync, ack the count."""
    fd = os.open(root / "raw-follower.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL)
    with socket.create_server((HOST, 0)) as listener:
        print(listener.getsockname()[1], flush=True)
        conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf, durable, fsyncs = bytearray(), 0, 0
    with conn:
        while data := conn.recv(READ_BYTES):
            buf += data
            spans, pos = [], 0
            while len(buf) - pos >= U32.size:
                size = U32.unpack_from(buf, pos)[0]
                if len(buf) - pos - U32.size < size:
                    break
                spans.append((pos + U32.size, pos + U32.size + size))
                pos += U32.size + size
            if not spans:
                continue
            with memoryview(buf) as view:
                parts = [view[start:end] for start, end in spans]
                want = sum(len(p) for p in parts)
                if os.writev(fd, parts) != want:
                    raise OSError("short write")
                for part in parts:
                    part.release()
            os.fdatasync(fd)
            fsyncs += 1
            durable += len(spans)
            conn.sendall(U64.pack(durable))
            del buf[:pos]
    os.close(fd)
    return {"fsyncs": fsyncs, "batches": durable, "messages": durable, "log_end": durable}


def send_all(sock: socket.socket, buffers: list[bytes]) -> None:
    """``sendmsg`` every byte of ``buffers``, resuming after a partial send."""
    views = [memoryview(b) for b in buffers]
    while views:
        n = sock.sendmsg(views)
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]


class RawLeader:
    """Write + fdatasync + send up to ``window`` batches ahead of the follower's acks.

    Each step takes every batch the window has room for as one group: one ``os.writev``,
    one ``os.fdatasync``, one ``sendmsg``; then it waits for acks. With a window of 1 that
    is: write, fdatasync, send, wait for the ack.
    """

    def __init__(self, w: Workload, window: int, fd: int, sock: socket.socket) -> None:
        self.w, self.window, self.fd, self.sock = w, window, fd, sock
        self.prefixes = [U32.pack(len(f)) for f in w.frames]
        self.next = 0  # batches sent (also the index of the next one, mod the pool)
        self.acked = 0
        self.fsyncs = 0
        self._starts: deque[int] = deque()  # per batch not yet acked: when its group began
        self._ack_buf = b""

    def phase(self, seconds: float) -> Phase:
        clock, frames, prefixes = time.perf_counter_ns, self.w.frames, self.prefixes
        pool = len(frames)
        latencies: list[int] = []
        first, nbytes = self.acked, 0
        start = clock()
        deadline = start + int(seconds * 1e9)
        while True:
            room = self.window - (self.next - self.acked)
            sending = clock() < deadline
            if room > 0 and sending:
                t0 = clock()
                group = [(self.next + k) % pool for k in range(room)]
                want = sum(len(frames[i]) for i in group)
                if os.writev(self.fd, [frames[i] for i in group]) != want:
                    raise OSError("short write")
                os.fdatasync(self.fd)
                self.fsyncs += 1
                send_all(self.sock, [b for i in group for b in (prefixes[i], frames[i])])
                self.next += room
                self._starts.extend([t0] * room)
                nbytes += want
            elif self.next == self.acked:
                break  # past the deadline and everything acked
            self._read_acks(latencies)  # the window is full, or nothing more is sent
        batches = self.acked - first
        return Phase(latencies, clock() - start, batches, batches * self.w.batch, nbytes)

    def _read_acks(self, latencies: list[int]) -> None:
        """Wait for acks; note the latency of every batch they cover."""
        data = self.sock.recv(4096)
        if not data:
            raise ConnectionError("follower closed the connection")
        self._ack_buf += data
        whole = len(self._ack_buf) - len(self._ack_buf) % U64.size
        if not whole:
            return
        acked = U64.unpack_from(self._ack_buf, whole - U64.size)[0]  # cumulative: the last
        self._ack_buf = self._ack_buf[whole:]
        now = time.perf_counter_ns()
        for _ in range(acked - self.acked):
            latencies.append(now - self._starts.popleft())
        self.acked = acked


def run_raw(root: Path, w: Workload, window: int, seconds: float, warmup: float) -> Run:
    follower = Follower("raw", root)
    fd = os.open(root / "raw-leader.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL)
    sock = socket.create_connection((HOST, follower.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    leader = RawLeader(w, window, fd, sock)
    try:
        leader.phase(warmup)
        cpu0, fcpu0 = own_cpu_s(), follower.cpu_s()
        timed = leader.phase(seconds)
        cpu, fcpu = own_cpu_s() - cpu0, follower.cpu_s() - fcpu0
    finally:
        sock.close()
        os.close(fd)
    report = follower.finish()
    checks = "ok" if report["log_end"] == leader.next == leader.acked else f"follower {report}"
    return make_run("raw", w, window, timed, cpu, fcpu, leader.fsyncs, report, checks)


def make_run(
    impl: str,
    w: Workload,
    window: int,
    timed: Phase,
    cpu: float,
    fcpu: float,
    leader_fsyncs: int,
    report: dict[str, Any],
    checks: str,
) -> Run:
    ordered = sorted(timed.latencies)
    events = timed.events
    return Run(
        impl=impl,
        window=window,
        batch=w.batch,
        round=0,
        ops=timed.batches,
        events=events,
        frame_bytes=timed.frame_bytes,
        seconds=timed.elapsed_ns / 1e9,
        p50_us=percentile_us(ordered, 0.50),
        p99_us=percentile_us(ordered, 0.99),
        leader_cpu_us_per_event=round(cpu * 1e6 / events, 3),
        follower_cpu_us_per_event=round(fcpu * 1e6 / events, 3),
        leader_fsyncs=leader_fsyncs,
        follower_fsyncs=report["fsyncs"],
        total_batches=report["batches"],
        follower_messages=report["messages"],
        checks=checks,
    )


# --- walrep: an active Node here, a passive Node in the follower -------------------------------


def bench_node(root: Path, name: str) -> Node:
    """A node with default settings on its own log, coordinating through a SQLite file in
    ``root`` that the leader and the follower process share."""
    url = normalize_url(f"sqlite:///{root / 'cluster.db'}")
    store = SqlStore(create_engine(url), table_prefix="wbench_", call_timeout_ms=750)
    settings = NodeSettings(group=GROUP, node_id=name, secret=SECRET)
    return Node(settings, root / name, store, listen=(HOST, 0), own_store=True)


def problem_metrics(node: Node) -> dict[str, int]:
    """Counters of the node core that say something went wrong."""
    words = ("error", "refused", "timeout", "failure", "lost", "malformed", "overload")
    return {k: v for k, v in node.core_.metrics.items() if v and any(w in k for w in words)}


async def walrep_follower(root: Path) -> dict[str, Any]:
    """A passive Node on its own log; stops when stdin closes, then reports."""
    node = bench_node(root, "p")
    await node.start()
    print(node.address[1] if node.address else 0, flush=True)
    await asyncio.to_thread(sys.stdin.read)
    groups, requests = node.log.group_commit_stats
    end = node.log.durable_end
    metrics = problem_metrics(node)
    await node.stop()
    return {"fsyncs": groups, "messages": requests, "log_end": end, "metrics": metrics}


async def run_walrep(
    root: Path, w: Workload, window: int, seconds: float, warmup: float, *, pre_encoded: bool
) -> Run:
    node = bench_node(root, "a")
    await node.start()
    await node.wait_until(lambda n: n.role is Role.ACTIVE, IN_SYNC_TIMEOUT_S)
    # After the lease is ours, so it can only be passive; in a thread, because the follower's
    # start-up (reading its port) must not block this loop: a store transaction of ours in
    # flight would hold the SQLite lock that the follower's start-up waits for.
    follower = await asyncio.to_thread(Follower, "walrep", root)
    batches, sizes = w.events, [len(f) for f in w.frames]

    def in_sync(n: Node) -> bool:
        term = n.core_.term
        return term is not None and term.shipper.standby_state is Standby.IN_SYNC

    async def appender(k: int, deadline: int, out: Phase) -> None:
        clock, i = time.perf_counter_ns, k
        while (t0 := clock()) < deadline:
            b = i % len(batches)
            await node.append(w.encoded[b] if pre_encoded else batches[b])
            out.latencies.append(clock() - t0)
            out.batches += 1
            out.frame_bytes += sizes[b]
            i += window

    async def phase(duration: float) -> Phase:
        out = Phase([], 0, 0, 0, 0)
        start = time.perf_counter_ns()
        deadline = start + int(duration * 1e9)
        await asyncio.gather(*(appender(k, deadline, out) for k in range(window)))
        out.elapsed_ns = time.perf_counter_ns() - start
        out.events = out.batches * w.batch
        return out

    try:
        await node.wait_until(in_sync, IN_SYNC_TIMEOUT_S)  # appends now wait for the passive
        await phase(warmup)
        cpu0, fcpu0 = own_cpu_s(), follower.cpu_s()
        timed = await phase(seconds)
        cpu, fcpu = own_cpu_s() - cpu0, follower.cpu_s() - fcpu0
        term = node.core_.term
        state = term.shipper.standby_state if term else Standby.OUT_OF_SYNC
        committed, end = node.committed, node.log.log_end
        fsyncs, metrics = node.log.group_commit_stats[0], problem_metrics(node)
    finally:
        await node.stop()
    report = follower.finish()
    problems = [f"standby {state.value}"] if state is not Standby.IN_SYNC else []
    problems += [f"committed {committed} != log end {end}"] if committed != end else []
    if report["log_end"] != end:
        problems.append(f"passive log ends at {report['log_end']}, active at {end}")
    problems += [f"{k}={v}" for k, v in {**metrics, **report["metrics"]}.items()]
    report["batches"] = end  # offsets; turned into batches below
    impl = "encoded" if pre_encoded else "walrep"
    run = make_run(impl, w, window, timed, cpu, fcpu, fsyncs, report, "; ".join(problems))
    run.total_batches = end // w.batch
    run.checks = run.checks or "ok"
    return run


# --- processes -------------------------------------------------------------------------------


def child(impl: str, window: int, batch: int, root: Path, seconds: float, warmup: float) -> Run:
    w = make_workload(batch)
    if impl == "raw":
        return run_raw(root, w, window, seconds, warmup)
    pre_encoded = impl == "encoded"
    return asyncio.run(run_walrep(root, w, window, seconds, warmup, pre_encoded=pre_encoded))


def spawn(
    impl: str, window: int, batch: int, root: Path, seconds: float, warmup: float, rnd: int
) -> Run:
    """Run one case in a fresh leader process (this script with --child) and read its result."""
    argv = [sys.executable, __file__, "--child", impl, str(window), str(batch), "--dir", str(root)]
    argv += ["--seconds", repr(seconds), "--warmup", repr(warmup)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"case {impl} w{window} x{batch} failed:\n{done.stderr}")
    run = Run(**json.loads(done.stdout))
    run.round, run.load1 = rnd, round(os.getloadavg()[0], 2)
    for leftover in root.iterdir():  # the logs and raw files of both processes
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    return run


# --- machine -------------------------------------------------------------------------------


def machine_info(root: Path) -> dict[str, Any]:
    return bench_common.machine_info(root, ["walrep/log", "walrep/replica", "walrep/node"])


# --- report ------------------------------------------------------------------------------


def median_run(runs: list[Run]) -> Run:
    """The run with the median events/s (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r.events_per_s)
    return ordered[(len(ordered) - 1) // 2]


def verdict(impl: str, window: int, batch: int, figures: dict[str, float]) -> str:
    targets = TARGETS.get((impl, window, batch))
    if not targets:
        return ""
    ok, need = True, []
    for figure, op, threshold in targets:
        value = figures[figure]
        ok &= value >= threshold if op == ">=" else value <= threshold
        unit = " ev/s" if figure == "events_per_s" else " µs"
        name = figure.removesuffix("_us") + " " if figure != "events_per_s" else ""
        need.append(f"{name}{op} {threshold:,.0f}{unit}")
    return f"{'PASS' if ok else 'MISS'} ({', '.join(need)})"


def summarize(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per case: the median run's figures, the median paired ratio, the verdict."""
    rows = []
    for window in MODES:
        for batch in BATCH_SIZES:
            for impl in IMPLS:
                mine = [r for r in runs if (r.impl, r.window, r.batch) == (impl, window, batch)]
                if not mine:
                    continue
                ratios = [
                    r.events_per_s / raw.events_per_s
                    for r in mine
                    for raw in runs
                    if impl != "raw"
                    and (raw.impl, raw.window, raw.batch, raw.round)
                    == ("raw", window, batch, r.round)
                ]
                ratio = statistics.median(ratios) if ratios else None
                best = median_run(mine)
                row = best.as_dict() | {
                    "label": LABELS[impl],
                    "mode": MODES[window],
                    "runs": len(mine),
                    "events_per_s_all": [round(r.events_per_s) for r in mine],
                    "p50_us_all": [r.p50_us for r in mine],
                    "p99_us_all": [r.p99_us for r in mine],
                    "ratio_to_raw": None if ratio is None else round(ratio, 3),
                    "ratios_all": [round(x, 3) for x in ratios],
                    "verdict": verdict(impl, window, batch, best.as_dict()),
                }
                rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'case':<29}{'mode':<13}{'batch':>5}{'events/s':>11}{'MB/s':>8}{'p50 µs':>9}"
        f"{'p99 µs':>9}{'vs raw':>7} {'(rounds)':<12}{'CPU µs/ev L+F':>14}  target"
    )
    lines = [head, "-" * (len(head) + 30)]
    for row in rows:
        ratio = "" if row["ratio_to_raw"] is None else f"{row['ratio_to_raw']:.2f}"
        ratios = row["ratios_all"]
        spread = f"({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
        cpu = f"{row['leader_cpu_us_per_event']:.1f}+{row['follower_cpu_us_per_event']:.1f}"
        lines.append(
            f"{row['label']:<29}{row['mode']:<13}{row['batch']:>5}{row['events_per_s']:>11,.0f}"
            f"{row['mb_per_s']:>8.2f}{row['p50_us']:>9,.1f}{row['p99_us']:>9,.1f}{ratio:>7} "
            f"{spread:<12}{cpu:>14}  {row['verdict']}".rstrip()
        )
        if row["checks"] != "ok":
            lines.append(f"{'':<8}CHECK FAILED: {row['checks']}")
    return "\n".join(lines)


def groups_table(rows: list[dict[str, Any]]) -> str:
    """How many batches each fdatasync carried on each side (whole runs, incl. warm-up)."""
    lines = [
        f"{'case':<29}{'mode':<13}{'batch':>5}  {'batches per fdatasync':>22}  "
        f"{'batches per message':>20}",
        f"{'':<47}{'leader':>9}{'follower':>10}",
    ]
    for row in rows:
        total = row["total_batches"]
        per_message = f"{total / row['follower_messages']:.1f}" if row["impl"] != "raw" else ""
        lines.append(
            f"{row['label']:<29}{row['mode']:<13}{row['batch']:>5}"
            f"{total / row['leader_fsyncs']:>11.1f}{total / row['follower_fsyncs']:>10.1f}"
            f"{per_message:>16}".rstrip()
        )
    return "\n".join(lines)


def target_summary(rows: list[dict[str, Any]]) -> str:
    passing = [
        r["mode"]
        for r in rows
        if r["impl"] == "walrep" and r["batch"] == 1000 and r["verdict"].startswith("PASS")
    ]
    met = f"met with {' and '.join(passing)}" if passing else "MISSED in both modes"
    return f">= 400,000 events/s durable on both with 1000-event batches: {met}"


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help="make the temp dir under this")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per case")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of all cases (median)")
    parser.add_argument("--quick", action="store_true", help="0.3 s per case, 1 round")
    parser.add_argument("--save", action="store_true", help=f"write JSON + text to {RESULTS}")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--warmup", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--child", nargs=3, metavar=("IMPL", "WINDOW", "BATCH"), help=argparse.SUPPRESS
    )
    parser.add_argument("--follower", choices=("raw", "walrep"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.repeat = 0.3, 1
    if args.warmup is None:
        args.warmup = max(0.2, args.seconds / 6)
    return args


def schedule(repeat: int) -> list[tuple[int, str, int, int]]:
    """(round, impl, window, batch) in running order: each raw run between its two walrep
    neighbours, ``Node.append`` right after it in even rounds, before it in odd."""
    jobs: list[tuple[int, str, int, int]] = []
    for rnd in range(repeat):
        order = ("encoded", "raw", "walrep") if rnd % 2 == 0 else ("walrep", "raw", "encoded")
        for window in MODES:
            for batch in reversed(BATCH_SIZES):
                jobs += [(rnd, impl, window, batch) for impl in order]
    return jobs


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.follower:
        if args.follower == "raw":
            report = raw_follower(args.dir)
        else:
            report = asyncio.run(walrep_follower(args.dir))
        print(json.dumps(report))
        return 0
    if args.child:
        impl, window, batch = args.child[0], int(args.child[1]), int(args.child[2])
        assert impl in IMPLS and window in MODES and batch in BATCH_SIZES, args.child
        run = child(impl, window, batch, args.dir, args.seconds, args.warmup)
        print(json.dumps(asdict(run)))
        return 0

    parent = (args.dir or Path.cwd()).resolve()
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="walrep-bench-", dir=parent))
    info = machine_info(root)
    changed = " (walrep has uncommitted changes)" if info["walrep_changes"] else ""
    print(
        f"walrep replication benchmark  {info['date']}  commit {info['walrep_commit']}{changed}\n"
        f"python {info['python']}, {info['cpus_usable']} cpus ({info['cpu_model']}), "
        f"{info['filesystem']} on {info['device']} at {info['mount']}\n"
        f"dir {root}; {args.seconds:g} s per case after {args.warmup:.2f} s warm-up, "
        f"{args.repeat} round(s); leader and follower in separate fresh processes, loopback TCP,"
        f" fdatasync on both before an append counts",
        flush=True,
    )
    if info["filesystem"] in MEMORY_FS:
        print(f"WARNING: {root} is on {info['filesystem']}: fdatasync costs nothing there")

    runs: list[Run] = []
    try:
        for rnd, impl, window, batch in schedule(args.repeat):
            run = spawn(impl, window, batch, root, args.seconds, args.warmup, rnd)
            runs.append(run)
            print(
                f"  round {rnd + 1}/{args.repeat} {impl:>6} {MODES[window]:<12} x{batch:<5}"
                f"{run.events_per_s:>12,.0f} events/s  p50 {run.p50_us:,.0f} µs"
                + ("" if run.checks == "ok" else f"  CHECK: {run.checks}"),
                file=sys.stderr,
                flush=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)

    info["loadavg_end"] = os.getloadavg()
    rows = summarize(runs)
    loads = [r.load1 for r in runs if r.load1 is not None]
    load = f"1-min load average over the runs {min(loads):.2f}-{max(loads):.2f}" if loads else ""
    text = "\n\n".join([table(rows), groups_table(rows), target_summary(rows), load]).rstrip()
    note = (
        "figures: the median round; 'vs raw': median over rounds (min-max in brackets) of walrep\n"
        "events/s / events/s of the raw pair of the same batch size and mode run next to it;\n"
        "CPU µs/ev L+F: CPU time of the leader + follower process per event (all threads)"
    )
    print(f"\n{text}\n\n{note}")
    if args.save or args.json:
        RESULTS.mkdir(exist_ok=True)
        stamp = datetime.now().strftime("%Y-%m-%dT%H%M%S")
        settings = {"seconds": args.seconds, "warmup": args.warmup, "repeat": args.repeat}
        settings |= {"window": WINDOW, "pool_events": POOL_EVENTS}
        document = {
            "benchmark": "replication",
            "command": " ".join([".venv/bin/python", "benchmarks/replication.py", *sys.argv[1:]]),
            "machine": info,
            "settings": settings,
            "targets": {f"{i}/{MODES[w]}/{b}": t for (i, w, b), t in TARGETS.items()},
            "summary": rows,
            "runs": [r.as_dict() for r in runs],
        }
        if args.json:
            args.json.write_text(json.dumps(document, indent=2) + "\n")
        if not args.save:
            return 0
        out = RESULTS / f"replication-{stamp}.json"
        out.write_text(json.dumps(document, indent=2) + "\n")
        header = (
            f"{info['date']}  commit {info['walrep_commit']}{changed}  {info['filesystem']} "
            f"on {info['device']}, {info['cpus_usable']} cpus\n{document['command']}\n"
        )
        (RESULTS / f"replication-{stamp}.txt").write_text(f"{header}\n{text}\n\n{note}\n")
        print(f"saved {out} (+ .txt)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
