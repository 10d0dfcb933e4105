"""Replay rate of the API-M app over a log of 1M events, beside its references.

Measured in one run, on one log written by ``Wal`` (frames of 1,000 events, lz4 as the
node writes them, fsync on), each case ``--repeat`` times in turn (medians, with min and
max), every case with the cyclic collector paused as a replay pauses it:

* ``decode``: ``orjson.loads`` of the same events' JSON, a frame's worth per call;
* ``apply``: the engine's in-memory apply rate: the log is read batch by batch (4,096
  records, the same engine settings as a replay) and only ``Engine.apply`` of each
  batch is timed: the ceiling of a replay, with the records as fresh in the caches;
* ``read``: ``LogSource`` alone to the end (segments, CRC, lz4, decode, records): with
  ``apply``, the bound of a replay that reads and applies on one core,
  ``1 / (1/apply + 1/read)``;
* ``replay``: ``walrep replay state``'s run to the end, the progress display on (drawn
  to a terminal console that writes to /dev/null);
* ``state`` and ``verify``: the two commands' whole work: opening the inputs, the run,
  and the digest at the end (``verify``: the chain's entry at 1,000,000, the default
  interval; no snapshots).

Targets (issue 10): ``replay`` at least 90% of ``apply``'s rate; ``verify`` within 2x the
time of ``state``. ``python benchmarks/replay.py [--events N] [--repeat R] [--save]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from bench_common import REPO, machine_info
from rich.console import Console

from walrep.apim.generator import ApimGenerator
from walrep.engine.core import Engine
from walrep.engine.loader import load_apps
from walrep.log.wal import Wal
from walrep.node.engine_host import DIGESTS_FILE
from walrep.replay.inputs import open_inputs
from walrep.replay.progress import display
from walrep.replay.runner import NO_DIGEST_POINTS, Replayer, paused_gc, start_engine
from walrep.replay.verify import verify

FRAME = 1000
BATCH = 4096
CHUNK = 100_000  # events of the decode reference (its rate scales to the whole log)
APPS = REPO / "conf" / "apps"
RESULTS = REPO / "benchmarks" / "results"


def write_log(path: Path, n: int) -> int:
    wal = Wal.open(path)
    gen = ApimGenerator(1, rate_per_s=10_000.0)
    for i in range(0, n, FRAME):
        wal.append_sync(gen.log_events(min(FRAME, n - i)), epoch=1,
                        ingest_time_ms=1_767_225_600_000 + i // 10)  # fmt: skip
    wal.close()
    return sum(p.stat().st_size for p in path.iterdir())


def clock(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    started = time.perf_counter()
    with paused_gc():
        out = fn()
    return time.perf_counter() - started, out


class Cases:
    def __init__(self, data: Path, n: int) -> None:
        self.data, self.n = data, n
        self.apps = load_apps(APPS)
        self.sink = Console(file=open(os.devnull, "w"), force_terminal=True, width=120)  # noqa: SIM115
        self.digest = ""

    def decode(self) -> float:
        raws = [orjson.dumps(b) for b in open_inputs(self.data, apps_path=APPS).source.batches(
            0, min(self.n, CHUNK), max_records=FRAME)]  # fmt: skip
        seconds, _ = clock(lambda: [orjson.loads(r) for r in raws])
        return seconds * self.n / min(self.n, CHUNK)

    def apply(self) -> float:
        """Only ``Engine.apply`` timed, batch by batch, as the log is read: the records
        are as fresh in the caches as in a replay (decoding 100,000 ahead and applying
        them later measured cache misses, not apply: it came out slower than a replay)."""
        source = open_inputs(self.data, apps_path=APPS).source
        engine = Engine(self.apps, digest_interval=NO_DIGEST_POINTS)
        total = 0.0
        gc.collect()
        with paused_gc():
            for batch in source.batches(0, self.n, max_records=BATCH):
                started = time.perf_counter()
                engine.apply(batch)
                total += time.perf_counter() - started
        if not self.digest:
            self.digest = engine.digest()
        return total

    def read(self) -> float:
        source = open_inputs(self.data, apps_path=APPS).source
        seconds, count = clock(lambda: sum(len(b) for b in source.batches(0, self.n)))
        assert count == self.n
        return seconds

    def replay(self) -> float:
        inputs = open_inputs(self.data, apps_path=APPS)
        engine, _ = start_engine(inputs, target=self.n)
        with display("replay", 0, self.n, True, self.sink) as bar:
            seconds, _ = clock(lambda: Replayer(inputs.source).run(engine, progress=bar))
        assert engine.applied == self.n
        return seconds

    def state(self) -> float:
        def run() -> str:
            inputs = open_inputs(self.data, apps_path=APPS)
            engine, _ = start_engine(inputs, target=self.n)
            with display("state", 0, self.n, True, self.sink) as bar:
                Replayer(inputs.source).run(engine, to_offset=self.n, progress=bar)
            return engine.digest()

        seconds, digest = clock(run)
        assert digest == self.digest, (digest, self.digest)
        return seconds

    def verify(self) -> float:
        def run() -> Any:
            inputs = open_inputs(self.data, apps_path=APPS)
            with display("verify", 0, self.n, True, self.sink) as bar:
                return verify(inputs, Replayer(inputs.source, threading.Event()), progress=bar)

        seconds, report = clock(run)
        assert report.ok and report.checked == 1, report
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--save", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    n = args.events
    names = ["decode", "apply", "read", "replay", "state", "verify"]
    with tempfile.TemporaryDirectory(prefix="walrep-bench-replay-", dir="/var/tmp") as tmp:
        data = Path(tmp) / "data"
        info = machine_info(data.parent, ["walrep/replay", "walrep/engine", "walrep/log"])
        log_bytes = write_log(data, n)
        cases = Cases(data, n)
        samples: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(args.repeat):
            for name in names:
                if name == "state":
                    (data / DIGESTS_FILE).write_bytes(
                        orjson.dumps({"offset": n, "digest": cases.digest}) + b"\n"
                    )
                samples[name].append(getattr(cases, name)())
    info["loadavg_end"] = os.getloadavg()
    seconds = {k: statistics.median(v) for k, v in samples.items()}
    rate = {k: n / s for k, s in seconds.items()}
    result = {
        "machine": info,
        "events": n,
        "repeat": args.repeat,
        "log_bytes": log_bytes,
        "seconds": {
            k: {"median": seconds[k], "min": min(v), "max": max(v)} for k, v in samples.items()
        },
        "events_per_s": rate,
        "replay_rate_over_apply": rate["replay"] / rate["apply"],
        "sequential_bound_over_apply": 1 / (1 + rate["apply"] / rate["read"]),
        "verify_time_over_state": seconds["verify"] / seconds["state"],
        "targets": {"replay_rate_over_apply_min": 0.9, "verify_time_over_state_max": 2.0},
    }

    def line(label: str, key: str, note: str = "") -> str:
        lo, hi = min(samples[key]), max(samples[key])
        return (f"  {label:28s}{rate[key]:>10,.0f} ev/s {seconds[key]:7.2f} s"
                f" [{lo:.2f}..{hi:.2f}]{note}")  # fmt: skip

    lines = [
        f"replay of {n:,} API-M events ({log_bytes / 1e6:.0f} MB of log), {info['cpu_model']},"
        f" median of {args.repeat},"
        f" load {info['loadavg_start'][0]:.2f}..{info['loadavg_end'][0]:.2f}",
        line("decode (orjson)", "decode"),
        line("apply (in memory, ceiling)", "apply"),
        line("read only (LogSource)", "read",
             f"  bound 1/(1/apply+1/read) = {result['sequential_bound_over_apply']:.2f} of apply"),
        line("replay (progress on)", "replay",
             f"  = {result['replay_rate_over_apply']:.2f} of apply (target >= 0.90)"),
        line("state (+ open, digest)", "state"),
        line("verify (+ open, digest)", "verify",
             f"  = {result['verify_time_over_state']:.2f}x the time of state (target <= 2)"),
    ]  # fmt: skip
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.save:
        stamp = time.strftime("%Y-%m-%dT%H%M%S")
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"replay-{stamp}.json").write_text(json.dumps(result, indent=2))
        (RESULTS / f"replay-{stamp}.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
