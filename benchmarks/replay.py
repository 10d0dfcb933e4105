"""Replay rate of the API-M app over a log of 1M events, beside its two references.

Measured in one run, on one log written by ``Wal`` (frames of 1,000 events, lz4 as the
node writes them, fsync on):

* ``decode``: orjson decode of the same events (their JSON bytes, one ``orjson.loads``
  per frame's worth): the floor of reading anything;
* ``apply``: the engine's in-memory apply rate (records already decoded, in memory,
  batches of 4,096, the same engine settings and collector pause as a replay): the
  ceiling of a replay; also with the collector on, as the node applies;
* ``replay``: ``walrep replay state``'s run to the end (read the segments, check every
  CRC, decompress, decode, apply) with the progress display on (drawn to a terminal
  console that writes to /dev/null); ``state`` is that plus opening the inputs and the
  final digest (which ``apply`` pays too, timed apart as ``digest``);
* ``verify``: ``walrep replay verify`` over the same log with the node's digest chain at
  the default interval (an entry at 1,000,000) and no snapshots.

Targets (issue 10): ``replay`` at least 90% of ``apply``'s rate; ``verify`` within 2x the
time of ``state``. ``python benchmarks/replay.py [--events N] [--save]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import threading
import time
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
RESULTS = REPO / "benchmarks" / "results"


def write_log(path: Path, n: int) -> list[bytes]:
    """The log, and each frame's events as JSON bytes (the decode reference's input)."""
    wal = Wal.open(path)
    gen = ApimGenerator(1, rate_per_s=10_000.0)
    raws = []
    for i in range(0, n, FRAME):
        events = gen.log_events(min(FRAME, n - i))
        raws.append(orjson.dumps(events))
        wal.append_sync(events, epoch=1, ingest_time_ms=1_767_225_600_000 + i // 10)
    wal.close()
    return raws


def timed(fn: Any) -> tuple[float, Any]:
    gc.collect()
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    n = args.events
    apps = load_apps(REPO / "conf" / "apps")
    with tempfile.TemporaryDirectory(prefix="walrep-bench-replay-", dir="/var/tmp") as tmp:
        data = Path(tmp) / "data"
        info = machine_info(data.parent, ["walrep/replay", "walrep/engine", "walrep/log"])
        raws = write_log(data, n)
        wal = Wal.open(data)
        records = list(wal.read())
        wal.close()
        log_bytes = sum(p.stat().st_size for p in data.iterdir())

        gc.freeze()  # the references' inputs stay in memory: the collector skips them
        decode_s, _ = timed(lambda: [orjson.loads(r) for r in raws])

        def apply() -> Engine:
            engine = Engine(apps, digest_interval=NO_DIGEST_POINTS)
            for i in range(0, n, BATCH):
                engine.apply(records[i : i + BATCH])
            engine.flush()
            return engine

        apply_gc_s, engine = timed(apply)  # as the node applies: the collector on
        del engine
        with paused_gc():  # as a replay applies (``walrep.replay.runner``)
            apply_s, engine = timed(apply)
        digest_s, digest = timed(engine.digest)
        del engine
        gc.unfreeze()
        records.clear()
        raws.clear()
        (data / DIGESTS_FILE).write_bytes(orjson.dumps({"offset": n, "digest": digest}) + b"\n")

        sink = Console(file=open(os.devnull, "w"), force_terminal=True, width=120)  # noqa: SIM115

        def state() -> float:
            inputs = open_inputs(data, apps_path=REPO / "conf" / "apps")
            engine, _ = start_engine(inputs, target=n)
            with display("state", 0, n, True, sink) as bar:
                run_s, _ = timed(
                    lambda: Replayer(inputs.source).run(engine, to_offset=n, progress=bar)
                )
            assert engine.digest() == digest
            return run_s

        state_s, run_s = timed(state)

        def check() -> Any:
            inputs = open_inputs(data, apps_path=REPO / "conf" / "apps")
            with display("verify", 0, n, True, sink) as bar:
                return verify(inputs, Replayer(inputs.source, threading.Event()), progress=bar)

        verify_s, report = timed(check)
        assert report.ok and report.checked == 1, report
    rate = {
        "decode": n / decode_s,
        "apply": n / apply_s,
        "apply_gc_on": n / apply_gc_s,
        "replay": n / run_s,
        "state": n / state_s,
        "verify": n / verify_s,
    }
    result = {
        "machine": info,
        "events": n,
        "log_bytes": log_bytes,
        "seconds": {
            "decode": decode_s,
            "apply": apply_s,
            "digest": digest_s,
            "state": state_s,
            "verify": verify_s,
        },
        "events_per_s": rate,
        "replay_rate_over_apply": rate["replay"] / rate["apply"],
        "state_over_apply_plus_digest": (apply_s + digest_s) / state_s,
        "verify_time_over_state": verify_s / state_s,
        "targets": {"replay_rate_over_apply_min": 0.9, "verify_time_over_state_max": 2.0},
    }
    lines = [
        f"replay of {n:,} API-M events ({log_bytes / 1e6:.0f} MB of log), "
        f"{info['cpu_model']}, load {info['loadavg_start'][0]:.2f}",
        f"  decode (orjson, reference)  {rate['decode']:>12,.0f} ev/s  {decode_s:7.2f} s",
        f"  apply (in memory, ceiling)  {rate['apply']:>12,.0f} ev/s  {apply_s:7.2f} s"
        f"  (+ digest {digest_s:.2f} s)",
        f"  apply, collector on (node)  {rate['apply_gc_on']:>12,.0f} ev/s  {apply_gc_s:7.2f} s",
        f"  replay (read+check+apply)   {rate['replay']:>12,.0f} ev/s  {run_s:7.2f} s"
        f"  = {result['replay_rate_over_apply']:.2f} of apply's rate (target >= 0.90),"
        " progress on",
        f"  replay state (+ digest)     {rate['state']:>12,.0f} ev/s  {state_s:7.2f} s"
        f"  = {result['state_over_apply_plus_digest']:.2f} of apply + digest's rate",
        f"  replay verify               {rate['verify']:>12,.0f} ev/s  {verify_s:7.2f} s"
        f"  = {result['verify_time_over_state']:.2f}x the time of state (target <= 2)",
    ]
    print("\n".join(lines))
    if args.save:
        stamp = time.strftime("%Y-%m-%dT%H%M%S")
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"replay-{stamp}.json").write_text(json.dumps(result, indent=2))
        (RESULTS / f"replay-{stamp}.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
