"""Recovery time of a node's engine against the log tail since its last snapshot.

A node that restarts opens its log (recovery scan of the segments), restores the newest
snapshot it may use (``EngineHost.open``: load, verify the digest, decode) and applies the
log after it. For each tail length T, a data directory holds a log of ``BASE + T`` API-M
events and a snapshot at ``BASE`` in its file store, as a node leaves them; timed, in a
fresh process each: ``Wal.open``, ``EngineHost.open`` (the node's own restore), and the
apply of the tail read from the log in batches of 4,096 (as the node's ``Apply`` effects
read it). Beside it, in the same process: the engine's in-memory apply of the same tail
(only ``Engine.apply`` timed), the floor of any replay of it.

``python benchmarks/recovery.py [--tails 0,20000,50000,100000] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import REPO, machine_info

from walrep.apim.generator import ApimGenerator
from walrep.engine.canonical import FORMAT_VERSION, digest_of
from walrep.engine.core import Engine
from walrep.engine.loader import load_apps
from walrep.engine.snapshots import FileSnapshotStore
from walrep.engine.types import SnapshotMeta
from walrep.log.wal import Wal
from walrep.node.engine_host import EngineHost
from walrep.node.restore import log_epoch_before

BASE = 20_000
FRAME = 1000
BATCH = 4096
APPS = REPO / "conf" / "apps"


def prepare(data: Path, tail: int) -> None:
    """A log of BASE + tail events and the snapshot at BASE, as a node leaves them."""
    apps = load_apps(APPS)
    wal = Wal.open(data)
    gen = ApimGenerator(5, rate_per_s=10_000.0)
    n = BASE + tail
    for i in range(0, n, FRAME):
        wal.append_sync(
            gen.log_events(min(FRAME, n - i)), epoch=1, ingest_time_ms=1_767_225_600_000 + i // 10
        )
    engine = Engine(apps)
    for batch in _batches(wal, 0, BASE):
        engine.apply(batch)
    state = engine.state_bytes()
    versions = tuple(sorted((a.name, a.version) for a in apps))
    meta = SnapshotMeta(
        BASE,
        1,
        digest_of(state),
        versions,
        FORMAT_VERSION,
        0,
        log_epoch_before(BASE, wal.epochs.epoch_at),
    )
    wal.close()
    store = FileSnapshotStore(data / "snapshots")

    async def save() -> None:
        await store.setup()
        await store.save(meta, state)

    asyncio.run(save())


def _batches(wal: Wal, start: int, end: int) -> list[list[Any]]:
    out: list[list[Any]] = []
    batch: list[Any] = []
    for record in wal.read(start):
        if record.offset >= end:
            break
        batch.append(record)
        if len(batch) == BATCH:
            out.append(batch)
            batch = []
    if batch:
        out.append(batch)
    return out


def child(data: Path, tail: int) -> dict[str, Any]:
    """One recovery, timed by phase, then the in-memory apply of the same tail."""
    apps = load_apps(APPS)
    gc.collect()
    started = time.perf_counter()
    wal = Wal.open(data)
    opened = time.perf_counter()
    host = EngineHost(apps, store=FileSnapshotStore(data / "snapshots"), digest_interval=10**12)
    engine = asyncio.run(host.open(wal, data))
    restored = time.perf_counter()
    assert engine.applied == BASE, engine.applied
    end = BASE + tail
    while engine.applied < end:
        batch = []
        for record in wal.read(engine.applied):
            batch.append(record)
            if len(batch) == BATCH or record.offset == end - 1:
                break
        engine.apply(batch)
    done = time.perf_counter()
    digest = engine.digest()
    # The reference: the same tail, decoded before, only apply timed.
    fresh = asyncio.run(
        EngineHost(apps, store=FileSnapshotStore(data / "snapshots"), digest_interval=10**12).open(
            wal, data
        )
    )
    records = _batches(wal, BASE, end)
    gc.collect()
    apply_s = 0.0
    for batch in records:
        t = time.perf_counter()
        fresh.apply(batch)
        apply_s += time.perf_counter() - t
    assert fresh.digest() == digest
    wal.close()
    return {
        "tail": tail,
        "open_log_s": opened - started,
        "restore_s": restored - opened,
        "replay_s": done - restored,
        "total_s": done - started,
        "tail_apply_in_memory_s": apply_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tails", default="0,20000,50000,100000")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child[0]), int(args.child[1]))))
        return
    tails = [int(t) for t in args.tails.split(",") if t]
    rows = []
    with tempfile.TemporaryDirectory(prefix="walrep-bench-recovery-", dir="/var/tmp") as tmp:
        info = machine_info(Path(tmp), ["walrep/node", "walrep/engine", "walrep/log"])
        for tail in tails:
            data = Path(tmp) / f"tail-{tail}"
            prepare(data, tail)
            done = subprocess.run(
                [sys.executable, __file__, "--child", str(data), str(tail)],
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(done.stdout)
            rows.append(row)
            ratio = row["replay_s"] / row["tail_apply_in_memory_s"] if tail else None
            print(
                f"  tail {tail:>8,}: recovery {row['total_s']:6.2f} s (open log "
                f"{row['open_log_s']:.2f}, restore {row['restore_s']:.2f}, replay "
                f"{row['replay_s']:.2f}); in-memory apply of the tail "
                f"{row['tail_apply_in_memory_s']:.2f} s"
                + (f", replay/apply {ratio:.2f}" if ratio else ""),
                flush=True,
            )
    info["loadavg_end"] = os.getloadavg()
    doc = {"benchmark": "recovery", "machine": info, "base_events": BASE, "results": rows}
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
