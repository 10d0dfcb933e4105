"""Engine apply rate from memory, next to orjson decoding, and the cost of a capture.

Cases, each measured in this process on records already in memory (``Record`` objects
holding decoded events, what the engine gets from the log reader):

* ``apim``       the flagship app (conf/apps/apim_analytics.py: 9 aggregations x 6
                 durations, a table, truncation, validation of every event) over API-M
                 traffic (``walrep.apim.generator.ApimGenerator`` when present, else a
                 small local generator), applied in batches of ``--batch`` records;
* ``apim+digest`` the same with a ``DigestPoint`` every 10,000 offsets (the engine's
                 default): what apply pays for it, a capture and the copy-on-write
                 after it (the node hashes the capture in a thread, not measured here);
* ``apim gc-off`` the same with Python's cyclic GC off during the run: what the node
                 gains by tuning the GC (``gc.freeze()`` after loading state, a higher
                 gen-0 threshold), as the engine allocates many small containers;
* ``count``      one ``count`` aggregation (group by apiName, apiVersion) over the same
                 events;
* ``count-small`` the same aggregation over ~150-byte events (``walrep.cli.demo``'s).

Each apply case is paired with ``orjson.loads`` of the same events (the JSON array of
``[stream, attributes]`` the WAL frame holds), timed in the same round: the ratio
apply/decode says how the engine compares with the cheapest thing the log reader must
do anyway. Rates use the CPU time of this process (``time.process_time``: the machine may
be shared), best of ``--repeat`` rounds; wall-clock rates are recorded too.

From the WAL (``count wal``, ``apim wal``): the same events appended to a real ``Wal`` in
a temp directory (default ``LogConfig``: frames of ``--batch`` events, lz4-compressed),
then read back (``wal.read()``: preads, CRC32C, lz4, orjson) and applied in ``--batch``
record chunks: the whole path a passive or a replay takes, in CPU time; paired with
``orjson.loads`` of the same events.

Snapshots (``--keys``): the captured state saved to and loaded from the default store,
``DbSnapshotStore`` on a SQLite file in the temp directory (lz4 + CRC32C chunks; wall
clock, as the node sees it), beside the capture figures below.

Capture: a ``count`` aggregation holding K rows (K distinct keys in one duration,
K = 10k, 100k, 1M): ``begin_capture`` (the pause of the apply loop), the first apply
after it (which copies the bucket it writes: copy-on-write), ``Capture.encode`` (in the
snapshot thread, not pausing apply), and the state size. The apim state after its run
is captured the same way.

Usage: ``.venv/bin/python benchmarks/engine_apply.py [--events 200000] [--batch 1000]
[--rate 10000] [--repeat 3] [--keys 10000,100000,1000000] [--quick] [--save]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from walrep.bench.machine import cpu_model  # noqa: E402
from walrep.db import create_engine, normalize_url  # noqa: E402
from walrep.engine.app import App, count  # noqa: E402
from walrep.engine.canonical import FORMAT_VERSION, digest_of  # noqa: E402
from walrep.engine.core import Engine  # noqa: E402
from walrep.engine.loader import load_apps  # noqa: E402
from walrep.engine.snapshots.db_store import DbSnapshotStore  # noqa: E402
from walrep.engine.types import SnapshotMeta  # noqa: E402
from walrep.log.frame import Event  # noqa: E402
from walrep.log.types import Record  # noqa: E402
from walrep.log.wal import Wal  # noqa: E402

TARGETS = {"apim": 250_000, "count": 1_000_000, "capture_pause_ms_1M": 50.0}
WAL_TARGET_OF_DECODE = 1 / 3  # "count wal": at least a third of the decode rate
Pair = tuple[str, dict[str, Any]]


def apim_events(n: int, rate_per_s: float, seed: int) -> list[Pair]:
    try:
        from walrep.apim.generator import ApimGenerator
    except ImportError:
        return _local_apim_events(n, rate_per_s, seed)
    return [(s, a) for s, a in ApimGenerator(seed, rate_per_s=rate_per_s).events(n)]


def _local_apim_events(n: int, rate_per_s: float, seed: int) -> list[Pair]:
    """A stand-in of the API-M generator: Request events only, Zipf-ish popularity."""
    rng = random.Random(seed)
    apis = [(f"Api{i}", f"/api{i}/1.0.0") for i in range(40)]
    apps = [f"app-{i}" for i in range(300)]
    users = [f"user{i}@carbon.super" for i in range(5000)]
    t = 1_767_225_600_000.0
    out: list[Pair] = []
    for _ in range(n):
        t += rng.expovariate(rate_per_s) * 1000
        name, ctx = apis[min(int(rng.paretovariate(1.2)) - 1, 39)]
        response = int(rng.lognormvariate(4, 0.6))
        attrs: dict[str, Any] = {
            k: f"{k}-v" for k in ("meta_clientType", "applicationConsumerKey", "applicationOwner")
        }
        attrs.update(
            {
                "applicationName": "App",
                "applicationId": rng.choice(apps),
                "apiContext": ctx,
                "apiName": name,
                "apiVersion": "1.0.0",
                "apiResourcePath": "/r",
                "apiResourceTemplate": f"/r{rng.randrange(6)}",
                "apiMethod": "GET",
                "apiCreator": "admin",
                "apiCreatorTenantDomain": "carbon.super",
                "apiTier": "Gold",
                "apiHostname": f"gw{rng.randrange(3)}",
                "username": rng.choice(users),
                "userTenantDomain": "carbon.super",
                "userIp": "10.0.0.1",
                "userAgent": "curl/8.5.0",
                "requestTimestamp": int(t),
                "throttledOut": rng.random() < 0.01,
                "responseTime": response,
                "serviceTime": 5,
                "backendTime": response - 5,
                "responseCacheHit": False,
                "responseSize": 512,
                "protocol": "https",
                "responseCode": 200,
                "destination": f"https://backend/{ctx}",
                "securityLatency": 1,
                "throttlingLatency": 1,
                "requestMedLat": 1,
                "responseMedLat": 1,
                "backendLatency": response - 5,
                "otherLatency": 1,
                "gatewayType": "SYNAPSE",
                "label": "Synapse",
            }
        )
        out.append(("Request", attrs))
    return out


def small_events(n: int) -> list[Pair]:
    from walrep.cli.demo import sample_events

    return [(e.stream, e.attributes) for e in sample_events(n, 1)]


def to_records(pairs: Sequence[Pair]) -> tuple[bytes, list[Record]]:
    """The JSON array a frame holds, and the records decoded from it."""
    raw = orjson.dumps([[s, a] for s, a in pairs])
    decoded = orjson.loads(raw)
    base_ms = 1_767_225_600_000
    return raw, [Record(n, 1, base_ms + n, Event(s, a)) for n, (s, a) in enumerate(decoded)]


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``fn()``."""
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def apply_case(
    name: str,
    apps: Sequence[App],
    raw: bytes,
    records: list[Record],
    batch: int,
    repeat: int,
    digest_interval: int,
    gc_off: bool = False,
) -> dict[str, Any]:
    n = len(records)
    rounds = []
    engine: Engine | None = None
    for _ in range(repeat):
        decode_cpu, decode_wall = timed(lambda: orjson.loads(raw))
        engine = Engine(apps, digest_interval=digest_interval)

        def run(e: Engine = engine) -> None:
            if gc_off:
                gc.disable()
            try:
                for i in range(0, n, batch):
                    e.apply(records[i : i + batch])
                e.flush()  # everything in the buckets: what a read would see
            finally:
                gc.enable()

        cpu, wall = timed(run)
        rounds.append(
            {
                "apply_cpu_s": cpu,
                "apply_wall_s": wall,
                "decode_cpu_s": decode_cpu,
                "decode_wall_s": decode_wall,
            }
        )
    result = rates(name, n, batch, raw, rounds)
    assert engine is not None
    result["state_rows"] = sum(
        len(b.rows)
        for s in engine.schemas()
        for lv in engine.aggregation(s.name).levels
        for b in lv.values()
    )
    result["_engine"] = engine
    return result


def wal_case(
    name: str, apps: Sequence[App], raw: bytes, pairs: Sequence[Pair], batch: int, repeat: int
) -> dict[str, Any]:
    """Append ``pairs`` to a Wal, then time read + decode + apply of all of it."""
    n = len(pairs)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="walrep-bench-wal-") as tmp:
        wal = Wal.open(Path(tmp) / "log")
        base_ms = 1_767_225_600_000
        for i in range(0, n, batch):
            chunk = [Event(st, a) for st, a in pairs[i : i + batch]]
            wal.append_sync(chunk, epoch=1, ingest_time_ms=base_ms + i)
        frames = len(wal.segments()) and sum(1 for _ in wal.frames())
        for _ in range(repeat):
            decode_cpu = timed(lambda: orjson.loads(raw))[0]
            engine = Engine(apps, digest_interval=10**12, track_changes=False)

            def run(e: Engine = engine) -> None:
                chunk: list[Record] = []
                for record in wal.read():
                    chunk.append(record)
                    if len(chunk) == batch:
                        e.apply(chunk)
                        chunk = []
                e.apply(chunk)
                e.flush()

            cpu, wall = timed(run)
            assert engine.applied == n, (engine.applied, n)
            rounds.append({"apply_cpu_s": cpu, "apply_wall_s": wall, "decode_cpu_s": decode_cpu})
        wal.close()
    return {**rates(name, n, batch, raw, rounds), "frames": frames}


def rates(
    name: str, n: int, batch: int, raw: bytes, rounds: list[dict[str, float]]
) -> dict[str, Any]:
    """The figures of a case: its best round's apply rate beside the best decode rate."""
    best = min(rounds, key=lambda r: r["apply_cpu_s"])
    decode = min(r["decode_cpu_s"] for r in rounds)
    return {
        "case": name,
        "events": n,
        "batch": batch,
        "bytes_per_event": round(len(raw) / n),
        "apply_events_per_s": n / best["apply_cpu_s"],
        "apply_events_per_s_wall": n / best["apply_wall_s"],
        "decode_events_per_s": n / decode,
        "ratio_apply_to_decode": decode / best["apply_cpu_s"],
        "rounds": rounds,
    }


def snapshot_case(engine: Engine, apps: Sequence[App], label: str) -> dict[str, Any]:
    """Save the engine's state to a SQLite ``DbSnapshotStore`` and load it back."""
    state = engine.begin_capture().encode()
    meta = SnapshotMeta(
        engine.applied, 1, digest_of(state), engine.app_versions(), FORMAT_VERSION, 0, 1
    )

    async def save_and_load(url: str) -> tuple[float, float]:
        store = DbSnapshotStore(create_engine(url), group_id="bench")
        try:
            await store.setup()
            t0 = time.perf_counter()
            sid = await store.save(meta, state)
            t1 = time.perf_counter()
            got_meta, got = await store.load(sid)
            t2 = time.perf_counter()
            assert got == state and got_meta.digest == meta.digest
            return t1 - t0, t2 - t1
        finally:
            await store.close()

    with tempfile.TemporaryDirectory(prefix="walrep-bench-snap-") as tmp:
        url = normalize_url(f"sqlite:///{Path(tmp) / 'snapshots.db'}")
        save_s, load_s = asyncio.run(save_and_load(url))
    restore_s = timed(lambda: Engine.restore(apps, state, digest_interval=10**12))[1]
    return {
        "case": label,
        "state_mb": len(state) / 1e6,
        "save_s": save_s,
        "load_s": load_s,
        "restore_s": restore_s,
    }


def capture_case(engine: Engine, label: str, touch: list[Record] | None) -> dict[str, Any]:
    pause_wall = timed(engine.begin_capture)[1]  # pending already flushed
    capture = engine.begin_capture()
    cow = None
    if touch:
        # the bucket is written (and copied: copy-on-write) when the pending deltas merge
        cow = timed(lambda: (engine.apply(touch), engine.flush()))[1]
    encoded: list[bytes] = []
    encode_wall = timed(lambda: encoded.append(capture.encode()))[1]
    return {
        "case": label,
        "begin_capture_ms": pause_wall * 1000,
        "first_apply_after_capture_ms": None if cow is None else cow * 1000,
        "encode_s": encode_wall,
        "state_mb": len(encoded[0]) / 1e6,
    }


def keys_engine(k: int) -> tuple[Engine, list[Record], App]:
    """A count aggregation holding ``k`` rows in one duration (one day bucket)."""
    app = App("keys", version="bench")
    app.stream("K", {"key": "string", "ts": "long"}, timestamp="ts")
    app.aggregation(
        "Keys", from_="K", group_by=["key"], aggregates=[count("n")], every=("day", "day")
    )
    engine = Engine([app], digest_interval=10**12, track_changes=False)
    ts = 1_767_225_600_000
    chunk = 100_000
    for start in range(0, k, chunk):
        recs = [
            Record(n, 1, 0, Event("K", {"key": f"k{n:08d}", "ts": ts}))
            for n in range(start, min(k, start + chunk))
        ]
        engine.apply(recs)
    engine.flush()
    touch = [Record(k, 1, 0, Event("K", {"key": "k00000000", "ts": ts}))]
    return engine, touch, app


def machine() -> dict[str, Any]:
    cpu = cpu_model()
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_start": os.getloadavg(),
        "orjson": orjson.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument(
        "--rate", type=float, default=10_000.0, help="events per second of event time"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keys", default="10000,100000,1000000")
    parser.add_argument("--quick", action="store_true", help="20k events, 1 round, keys 10k,100k")
    parser.add_argument("--save", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    if args.quick:
        args.events, args.repeat, args.keys = 20_000, 1, "10000,100000"
    info = machine()
    apim = load_apps(REPO / "conf" / "apps")
    pairs = apim_events(args.events, args.rate, seed=1)
    raw, records = to_records(pairs)
    requests = [p for p in pairs if p[0] == "Request"]
    raw_req, rec_req = to_records(requests)
    small_raw, small_rec = to_records(small_events(args.events))

    (flagship,) = [a for a in apim if a.name == "apim_analytics"]
    request = flagship.streams["Request"].definition
    counting = App("count", version="bench")
    counting.stream(
        "Request", {c.name: c.type for c in request.attributes}, timestamp="requestTimestamp"
    )
    counting.aggregation(
        "ReqPerApi", from_="Request", group_by=["apiName", "apiVersion"], aggregates=[count("n")]
    )
    small = App("count_small", version="bench")
    small.stream(
        small_rec[0].event.stream,
        {
            "api": "string",
            "version": "string",
            "tenant": "string",
            "application": "string",
            "status": "int",
            "latency_ms": "double",
            "ts": "long",
        },
        timestamp="ts",
    )
    small.aggregation(
        "ReqPerApiSmall",
        from_=small_rec[0].event.stream,
        group_by=["api", "version"],
        aggregates=[count("n")],
    )

    results = []
    apim_result = apply_case("apim", apim, raw, records, args.batch, args.repeat, 10**12)
    results.append(apim_result)
    digest_n = min(len(records), 50_000)
    results.append(
        apply_case(
            "apim+digest",
            apim,
            orjson.dumps([[s, a] for s, a in pairs[:digest_n]]),
            records[:digest_n],
            args.batch,
            1,
            10_000,
        )
    )
    results.append(
        apply_case("apim gc-off", apim, raw, records, args.batch, args.repeat, 10**12, gc_off=True)
    )
    results.append(
        apply_case("count", [counting], raw_req, rec_req, args.batch, args.repeat, 10**12)
    )
    results.append(
        apply_case("count-small", [small], small_raw, small_rec, args.batch, args.repeat, 10**12)
    )
    results.append(wal_case("count wal", [counting], raw_req, requests, args.batch, args.repeat))
    results.append(wal_case("apim wal", apim, raw, pairs, args.batch, 1))

    captures = []
    snapshots = []
    apim_engine: Engine = apim_result["_engine"]
    touch = [Record(apim_engine.applied, 1, 0, records[-1].event)]
    captures.append(
        capture_case(
            apim_engine,
            f"apim after {len(records)} events ({apim_result['state_rows']} rows)",
            touch,
        )
    )
    # Captures first: a capture's first encode (a later one reuses unchanged buckets' bytes).
    snapshots.append(snapshot_case(apim_engine, apim, f"apim ({apim_result['state_rows']} rows)"))
    for k in (int(x) for x in args.keys.split(",") if x):
        engine, touch, app = keys_engine(k)
        captures.append(capture_case(engine, f"{k} rows", touch))
        snapshots.append(snapshot_case(engine, [app], f"{k} rows"))
        del engine
        gc.collect()

    for r in results:
        r.pop("_engine", None)
    info["loadavg_end"] = os.getloadavg()
    lines = [
        f"engine apply, {info['cpu_model']}, Python {info['python']}, "
        f"load {info['loadavg_start'][0]:.2f}",
        f"{'case':13s} {'events':>8s} {'B/ev':>5s} {'apply ev/s':>12s} {'(wall)':>10s} "
        f"{'decode ev/s':>12s} {'apply/decode':>12s}  target",
    ]
    for r in results:
        target = TARGETS.get(r["case"])
        verdict = (
            ""
            if target is None
            else f"{target:,} {'PASS' if r['apply_events_per_s'] >= target else 'MISS'}"
        )
        if r["case"] == "count wal":
            ok = r["ratio_apply_to_decode"] >= WAL_TARGET_OF_DECODE
            verdict = f">= 1/3 of decode {'PASS' if ok else 'MISS'}"
        lines.append(
            f"{r['case']:13s} {r['events']:8d} {r['bytes_per_event']:5d} "
            f"{r['apply_events_per_s']:12,.0f} {r['apply_events_per_s_wall']:10,.0f} "
            f"{r['decode_events_per_s']:12,.0f} {r['ratio_apply_to_decode']:12.2f}  {verdict}"
        )
    lines.append("")
    lines.append(
        f"{'capture':44s} {'pause ms':>9s} {'1st apply ms':>12s} {'encode s':>9s} {'MB':>8s}"
    )
    for c in captures:
        first = (
            ""
            if c["first_apply_after_capture_ms"] is None
            else f"{c['first_apply_after_capture_ms']:.1f}"
        )
        lines.append(
            f"{c['case']:44s} {c['begin_capture_ms']:9.2f} {first:>12s} "
            f"{c['encode_s']:9.2f} {c['state_mb']:8.1f}"
        )
    lines.append("")
    lines.append(
        f"{'snapshot (SQLite DbSnapshotStore)':44s} {'MB':>8s} {'save s':>8s} {'load s':>8s} "
        f"{'restore s':>9s}"
    )
    for snap in snapshots:
        lines.append(
            f"{snap['case']:44s} {snap['state_mb']:8.1f} {snap['save_s']:8.2f} "
            f"{snap['load_s']:8.2f} {snap['restore_s']:9.2f}"
        )
    pause_1m = [c["begin_capture_ms"] for c in captures if c["case"] == "1000000 rows"]
    if pause_1m:
        ok = pause_1m[0] <= TARGETS["capture_pause_ms_1M"]
        lines.append(
            f"capture pause at 1M keys {pause_1m[0]:.2f} ms: "
            f"<= {TARGETS['capture_pause_ms_1M']:.0f} ms {'PASS' if ok else 'MISS'}"
        )
    text = "\n".join(lines)
    print(text)
    if args.save or args.json:
        stamp = datetime.now().strftime("%Y-%m-%dT%H%M%S")
        out = REPO / "benchmarks" / "results" / f"engine_apply-{stamp}"
        doc = {
            "benchmark": "engine_apply",
            "command": " ".join(sys.argv),
            "machine": info,
            "targets": TARGETS,
            "apply": results,
            "capture": captures,
            "snapshots": snapshots,
        }
        if args.json:
            args.json.write_text(json.dumps(doc, indent=2))
        if not args.save:
            return
        out.with_suffix(".json").write_text(json.dumps(doc, indent=2))
        out.with_suffix(".txt").write_text(text + "\n")
        print(f"saved {out}.json and .txt")


if __name__ == "__main__":
    main()
