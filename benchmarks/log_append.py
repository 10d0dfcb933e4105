"""Append throughput and latency of walrep's write-ahead log, next to the disk's limit.

Every figure comes from one invocation on one disk. The limit ("raw") is a plain loop of
``os.write`` + ``os.fdatasync`` per batch on a file opened ``O_WRONLY|O_CREAT|O_APPEND``,
writing the exact frames walrep writes for that batch (built beforehand with walrep's
codec). Each walrep case is paired with a raw run of the same batch size, run just
before it (even rounds) or just after it (odd rounds); its ratio is taken against that
neighbour, so a noisy moment on the shared machine hits both.

Cases, per batch size (1, 100, 1000 events):

* ``raw``         os.write + fdatasync per pre-built frame (the limit);
* ``encoded``     ``await wal.append_encoded(batch, epoch=1)``, batches encoded beforehand;
* ``append``      ``await wal.append(events, epoch=1)``, encoding included;
* ``encode``      ``wal.encode(events)`` alone (CPU only, no IO);

and ``concurrent``: 64 asyncio tasks each awaiting ``wal.append([event], epoch=1)`` in a
loop (group commit), paired with the raw 1-event loop.

Each case runs in a fresh interpreter (this script with ``--child``), so the allocator
state one case leaves behind cannot speed up or slow down the next (it does: see
benchmarks/README.md). Usage:
``.venv/bin/python benchmarks/log_append.py [--seconds 3] [--repeat 3] [--save]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import bench_common

from walrep.cli.demo import sample_events
from walrep.log import EncodedBatch, Event, LogConfig, Wal
from walrep.log.frame import HEADER_SIZE, build_frame, encode_batch

BATCH_SIZES = (1, 100, 1000)
CONCURRENCY = 64
EPOCH = 1
POOL_EVENTS = 20_000  # distinct events, cycled through: 20,000 / 200 / 20 distinct batches
RESULTS = Path(__file__).resolve().parent / "results"
MEMORY_FS = {"tmpfs", "ramfs"}
CASES = ("raw", "encoded", "append", "encode", "concurrent")

# (case, batch) -> (kind, threshold); "ratio" is events/s over the paired raw run's.
TARGETS: dict[tuple[str, int], tuple[str, float]] = {
    ("encoded", 1000): ("ratio", 0.70),
    ("append", 1000): ("ratio", 0.40),
    ("concurrent", 1): ("events/s", 30_000),
}
LABELS = {
    "raw": "raw os.write+fdatasync",
    "encoded": "walrep append_encoded",
    "append": "walrep append (+encode)",
    "encode": "encode only (wal.encode)",
    "concurrent": f"walrep {CONCURRENCY} tasks x 1 event",
}


@dataclass
class Run:
    """One timed run of one case."""

    case: str
    batch: int
    round: int
    ops: int  # appends (or batches written / encoded)
    events: int
    frame_bytes: int  # bytes of the frames written (for encode: that would be written)
    seconds: float
    p50_us: float  # latency of one operation
    p99_us: float
    cpu_us_per_event: float  # user + system CPU of the whole process (all threads)
    minor_faults_per_op: float
    fsyncs: int | None = None  # concurrent: groups written (one write + one fdatasync each)
    paired_with: str | None = None  # raw runs: the walrep case they are the neighbour of
    load1: float | None = None  # 1-minute load average when the run ended (noise hint)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.frame_bytes / self.seconds / 1e6

    @property
    def mean_group(self) -> float | None:
        return self.events / self.fsyncs if self.fsyncs else None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out |= {"events_per_s": round(self.events_per_s, 1), "mb_per_s": round(self.mb_per_s, 3)}
        if self.fsyncs:
            out["mean_group"] = round(self.events / self.fsyncs, 2)
        return {k: v for k, v in out.items() if v is not None}


# --- workload ----------------------------------------------------------------------------


@dataclass
class Workload:
    """Batches of one size, in every form the cases need."""

    batch: int
    events: list[list[Event]]
    encoded: list[EncodedBatch]
    frames: list[bytes]  # exactly what walrep writes for each batch

    def bytes_for(self, ops: int) -> int:
        """Frame bytes of ``ops`` batches taken in order, cycling through the pool."""
        sizes = [len(f) for f in self.frames]
        return sum(sizes) * (ops // len(sizes)) + sum(sizes[: ops % len(sizes)])


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
    for b in encoded:
        frames.append(build_frame(b, base_offset=offset, epoch=EPOCH, ingest_time_ms=now_ms))
        offset += b.count
    assert all(len(f) == HEADER_SIZE + len(b.payload) for f, b in zip(frames, encoded, strict=True))
    return Workload(batch, events, encoded, frames)


# --- timing --------------------------------------------------------------------------------


def time_sync(op: Callable[[int], object], items: int, seconds: float) -> tuple[list[int], int]:
    """Call ``op(i)`` for i = 0, 1, ... (mod ``items``) for ``seconds``: latencies, elapsed."""
    latencies: list[int] = []
    clock = time.perf_counter_ns
    start = clock()
    deadline = start + int(seconds * 1e9)
    i, end = 0, start
    while end < deadline:
        t0 = clock()
        op(i % items)
        end = clock()
        latencies.append(end - t0)
        i += 1
    return latencies, end - start


async def time_async(
    op: Callable[[int], Awaitable[object]], items: int, seconds: float
) -> tuple[list[int], int]:
    """``time_sync`` for an awaited operation, one at a time."""
    latencies: list[int] = []
    clock = time.perf_counter_ns
    start = clock()
    deadline = start + int(seconds * 1e9)
    i, end = 0, start
    while end < deadline:
        t0 = clock()
        await op(i % items)
        end = clock()
        latencies.append(end - t0)
        i += 1
    return latencies, end - start


def percentile_us(ordered: list[int], p: float) -> float:
    """Nearest-rank percentile of sorted nanoseconds, in microseconds."""
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)] / 1000


class Meter:
    """CPU time and minor page faults of this process between start() and stop()."""

    def start(self) -> None:
        self._usage = resource.getrusage(resource.RUSAGE_SELF)

    def stop(self) -> tuple[float, int]:
        end = resource.getrusage(resource.RUSAGE_SELF)
        cpu = end.ru_utime + end.ru_stime - self._usage.ru_utime - self._usage.ru_stime
        return cpu, end.ru_minflt - self._usage.ru_minflt


def make_run(
    case: str, w: Workload, latencies: list[int], elapsed_ns: int, usage: tuple[float, int]
) -> Run:
    ordered = sorted(latencies)
    ops, cpu, faults = len(ordered), usage[0], usage[1]
    events = ops * w.batch
    return Run(
        case,
        w.batch,
        0,
        ops,
        events,
        w.bytes_for(ops),
        elapsed_ns / 1e9,
        percentile_us(ordered, 0.50),
        percentile_us(ordered, 0.99),
        round(cpu * 1e6 / events, 3),
        round(faults / ops, 3),
    )


# --- cases (each runs in its own process) ------------------------------------------------


def run_raw(root: Path, w: Workload, seconds: float, warmup: float) -> Run:
    path = root / f"raw-{w.batch}.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o644)
    frames, meter = w.frames, Meter()

    def op(i: int) -> None:
        frame = frames[i]
        if os.write(fd, frame) != len(frame):
            raise OSError(f"short write to {path}")
        os.fdatasync(fd)

    try:
        time_sync(op, len(frames), warmup)
        meter.start()
        latencies, elapsed = time_sync(op, len(frames), seconds)
        usage = meter.stop()
    finally:
        os.close(fd)
        path.unlink()
    return make_run("raw", w, latencies, elapsed, usage)


def run_encode(root: Path, w: Workload, seconds: float, warmup: float) -> Run:
    wal = Wal.open(root / f"encode-{w.batch}", LogConfig())
    batches, meter = w.events, Meter()
    try:
        time_sync(lambda i: wal.encode(batches[i]), len(batches), warmup)
        meter.start()
        latencies, elapsed = time_sync(lambda i: wal.encode(batches[i]), len(batches), seconds)
        usage = meter.stop()
    finally:
        wal.close()
    return make_run("encode", w, latencies, elapsed, usage)


async def run_sequential(root: Path, w: Workload, case: str, seconds: float, warmup: float) -> Run:
    wal = Wal.open(root / f"wal-{case}-{w.batch}", LogConfig())
    batches, encoded, meter = w.events, w.encoded, Meter()
    op: Callable[[int], Awaitable[object]]
    if case == "encoded":
        op = lambda i: wal.append_encoded(encoded[i], epoch=EPOCH)  # noqa: E731
    else:
        op = lambda i: wal.append(batches[i], epoch=EPOCH)  # noqa: E731
    try:
        await time_async(op, len(batches), warmup)  # also records epoch 1 (once, durably)
        meter.start()
        latencies, elapsed = await time_async(op, len(batches), seconds)
        usage = meter.stop()
    finally:
        await wal.aclose()
    return make_run(case, w, latencies, elapsed, usage)


async def run_concurrent(root: Path, w: Workload, seconds: float, warmup: float) -> Run:
    wal = Wal.open(root / "wal-concurrent-1", LogConfig())
    # Appends per write+fdatasync, from the log's own group-commit counters.
    events = [b[0] for b in w.events]

    async def appender(k: int, deadline: int, latencies: list[int]) -> None:
        clock, i = time.perf_counter_ns, k
        while (t0 := clock()) < deadline:
            await wal.append([events[i % len(events)]], epoch=EPOCH)
            latencies.append(clock() - t0)
            i += CONCURRENCY

    async def phase(duration: float) -> tuple[list[int], int]:
        latencies: list[int] = []
        start = time.perf_counter_ns()
        deadline = start + int(duration * 1e9)
        await asyncio.gather(*(appender(k, deadline, latencies) for k in range(CONCURRENCY)))
        return latencies, time.perf_counter_ns() - start

    meter = Meter()
    try:
        await phase(warmup)
        groups_before, _ = wal.group_commit_stats
        meter.start()
        latencies, elapsed = await phase(seconds)
        usage = meter.stop()
        groups_after, _ = wal.group_commit_stats
    finally:
        await wal.aclose()
    run = make_run("concurrent", w, latencies, elapsed, usage)
    run.fsyncs = groups_after - groups_before
    return run


def child(case: str, batch: int, root: Path, seconds: float, warmup: float) -> Run:
    w = make_workload(batch)
    if case == "raw":
        return run_raw(root, w, seconds, warmup)
    if case == "encode":
        return run_encode(root, w, seconds, warmup)
    if case == "concurrent":
        return asyncio.run(run_concurrent(root, w, seconds, warmup))
    return asyncio.run(run_sequential(root, w, case, seconds, warmup))


def spawn(case: str, batch: int, root: Path, seconds: float, warmup: float, rnd: int) -> Run:
    """Run one case in a fresh interpreter (this script with --child) and read its result."""
    argv = [sys.executable, __file__, "--child", case, str(batch), "--dir", str(root)]
    argv += ["--seconds", repr(seconds), "--warmup", repr(warmup)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"case {case} x{batch} failed:\n{done.stderr}")
    run = Run(**json.loads(done.stdout))
    run.round, run.load1 = rnd, round(os.getloadavg()[0], 2)
    for leftover in root.iterdir():  # the child's log directory or raw file
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    return run


# --- machine -------------------------------------------------------------------------------


def machine_info(root: Path) -> dict[str, Any]:
    return bench_common.machine_info(root, ["walrep/log"])


# --- report ------------------------------------------------------------------------------


def median_run(runs: list[Run]) -> Run:
    """The run with the median events/s (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r.events_per_s)
    return ordered[(len(ordered) - 1) // 2]


def verdict(case: str, batch: int, ratio: float | None, events_per_s: float) -> str:
    target = TARGETS.get((case, batch))
    if target is None:
        return ""
    kind, threshold = target
    value = ratio if kind == "ratio" else events_per_s
    ok = value is not None and value >= threshold
    need = f">= {threshold:.0%} of raw" if kind == "ratio" else f">= {threshold:,.0f} ev/s"
    return f"{'PASS' if ok else 'MISS'} ({need})"


def summarize(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per case: the median run's figures, the median paired ratio, the verdict."""
    rows = []
    order = [(b, c) for b in BATCH_SIZES for c in ("raw", "encoded", "append", "encode")]
    for batch, case in [*order, (1, "concurrent")]:
        mine = [r for r in runs if r.case == case and r.batch == batch]
        if not mine:
            continue
        ratios = [
            r.events_per_s / raw.events_per_s
            for r in mine
            for raw in runs
            if raw.paired_with == case and raw.batch == batch and raw.round == r.round
        ]
        ratio = statistics.median(ratios) if ratios else None
        best = median_run(mine)
        row = best.as_dict() | {
            "label": LABELS[case],
            "runs": len(mine),
            "events_per_s_all": [round(r.events_per_s) for r in mine],
            "ratio_to_raw": None if ratio is None else round(ratio, 3),
            "ratios_all": [round(x, 3) for x in ratios],
            "verdict": verdict(case, batch, ratio, best.events_per_s),
        }
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'case':<28}{'batch':>6}{'events/s':>12}{'MB/s':>9}{'p50 µs':>10}{'p99 µs':>10}"
        f"{'vs raw':>8} {'(rounds)':<12} target"
    )
    lines = [head, "-" * (len(head) + 20)]
    for row in rows:
        ratio = "" if row["ratio_to_raw"] is None else f"{row['ratio_to_raw']:.2f}"
        ratios = row["ratios_all"]
        spread = f"({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
        mb = "" if row["case"] == "encode" else f"{row['mb_per_s']:.2f}"
        lines.append(
            f"{row['label']:<28}{row['batch']:>6}{row['events_per_s']:>12,.0f}{mb:>9}"
            f"{row['p50_us']:>10,.1f}{row['p99_us']:>10,.1f}{ratio:>8} {spread:<12} "
            f"{row['verdict']}".rstrip()
        )
        if row.get("mean_group"):
            lines.append(
                f"{'':<36}mean group {row['mean_group']:.1f} appends per write+fdatasync, "
                f"{row['cpu_us_per_event']:.1f} µs CPU per event"
            )
    return "\n".join(lines)


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
    parser.add_argument("--child", nargs=2, metavar=("CASE", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.repeat = 0.3, 1
    if args.warmup is None:
        args.warmup = max(0.1, args.seconds / 6)
    return args


def schedule(repeat: int) -> list[tuple[int, str, int, str | None]]:
    """(round, case, batch, paired_with) in running order; raw runs next to their case."""
    jobs: list[tuple[int, str, int, str | None]] = []
    for rnd in range(repeat):
        for batch in reversed(BATCH_SIZES):
            jobs.append((rnd, "encode", batch, None))
            cases = ["encoded", "append"] + (["concurrent"] if batch == 1 else [])
            for case in cases:
                pair = [(rnd, case, batch, None), (rnd, "raw", batch, case)]
                jobs += pair[::-1] if rnd % 2 == 0 else pair
    return jobs


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        case, batch = args.child[0], int(args.child[1])
        assert case in CASES, case
        run = child(case, batch, args.dir, args.seconds, args.warmup)
        print(json.dumps(asdict(run)))
        return 0

    parent = (args.dir or Path.cwd()).resolve()
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="walrep-bench-", dir=parent))
    info = machine_info(root)
    changed = " (walrep/log has uncommitted changes)" if info["walrep_changes"] else ""
    print(
        f"walrep log append benchmark  {info['date']}  commit {info['walrep_commit']}{changed}\n"
        f"python {info['python']}, {info['cpus_usable']} cpus ({info['cpu_model']}), "
        f"{info['filesystem']} on {info['device']} at {info['mount']}\n"
        f"dir {root}; {args.seconds:g} s per case after {args.warmup:.2f} s warm-up, "
        f"{args.repeat} round(s), fsync policy ALWAYS, each case in a fresh process",
        flush=True,
    )
    if info["filesystem"] in MEMORY_FS:
        print(f"WARNING: {root} is on {info['filesystem']}: fdatasync costs nothing there")

    runs: list[Run] = []
    try:
        for rnd, case, batch, paired_with in schedule(args.repeat):
            run = spawn(case, batch, root, args.seconds, args.warmup, rnd)
            run.paired_with = paired_with
            runs.append(run)
            print(
                f"  round {rnd + 1}/{args.repeat} {case:>10} x{batch:<5}"
                f"{run.events_per_s:>12,.0f} events/s",
                file=sys.stderr,
                flush=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)

    info["loadavg_end"] = os.getloadavg()
    rows = summarize(runs)
    text = table(rows)
    note = (
        "figures: the median round; 'vs raw': median over rounds (min-max in brackets) of\n"
        "walrep events/s / events/s of the raw run of the same batch size run next to it"
    )
    print(f"\n{text}\n\n{note}")
    if args.save or args.json:
        RESULTS.mkdir(exist_ok=True)
        stamp = datetime.now().strftime("%Y-%m-%dT%H%M%S")
        settings = {"seconds": args.seconds, "warmup": args.warmup, "repeat": args.repeat}
        settings |= {"concurrency": CONCURRENCY, "pool_events": POOL_EVENTS}
        document = {
            "benchmark": "log_append",
            "machine": info,
            "settings": settings,
            "targets": {f"{c}/{b}": t for (c, b), t in TARGETS.items()},
            "summary": rows,
            "runs": [r.as_dict() for r in runs],
        }
        if args.json:
            args.json.write_text(json.dumps(document, indent=2) + "\n")
        if not args.save:
            return 0
        out = RESULTS / f"log_append-{stamp}.json"
        out.write_text(json.dumps(document, indent=2) + "\n")
        header = f"{info['date']}  commit {info['walrep_commit']}  {info['filesystem']}\n"
        (RESULTS / f"log_append-{stamp}.txt").write_text(f"{header}\n{text}\n\n{note}\n")
        print(f"saved {out} (+ .txt)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
