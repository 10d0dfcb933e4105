"""End to end through two real node processes and the API-M app, the client in this one.

Two ``walrep node start`` processes (``walrep.demo.procs``) on one SQLite file, fsync on
both logs, the flagship app on both (the standby applies too), the default cluster and
snapshot settings. Cases, each timed after a warm-up, events from the seeded API-M
generator:

* ``http x500``   ``walrep.client`` over HTTP, batches of 500, one request at a time;
* ``tcp x500``    TCP ingest, batches of 500, 8 requests in flight;
* ``tcp x1``      TCP ingest, single events, 64 in flight (latency per event: send to
                  answer, so p50/p99 are ack latencies under that load);
* ``tcp x1 open loop R/s``  single events offered at a fixed rate whatever the answers
                  do; latency from the moment each was due (no coordinated omission);
* ``switchover``  a planned switchover (``walrep cluster switchover``'s code) while a
                  publisher sends single events back to back: the longest time between
                  two acknowledgements around it, over ``--switchovers`` runs;
* ``failover``    a SIGKILL of the active while a publisher sends batches of 100: the
                  time from the kill to the first batch the new active acknowledged,
                  over ``--failovers`` runs, with its phases from the new active's log
                  (lease won, promoted, ingest open, first ack);
* ``nats ...``    the peer, NATS JetStream on this machine, the same events
                  (``benchmarks/nats_peer.py``; its fsync setting stated there).

The reference beside them is the engine's own apply rate of the same app in this
machine (``engine_apply.py``: about 66,000 events/s on one core on 2026-12-01), the
ceiling of a node that applies every event it takes. Usage: ``.venv/bin/python
benchmarks/node_e2e.py [--seconds 5] [--failovers 20] [--switchovers 5] [--rate 1000]
[--save]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import statistics
import struct
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from walrep.apim.generator import ApimGenerator  # noqa: E402
from walrep.cli.switchover_cmd import switchover  # noqa: E402
from walrep.client import Client, PublishError  # noqa: E402
from walrep.demo.procs import Admin, NodeProc, free_port, write_config  # noqa: E402
from walrep.node.ingest_tcp import MAGIC  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nats_peer import nats_cases  # noqa: E402

ENV = {"WALREP_CLUSTER_SECRET": "b", "WALREP_INGEST_TOKEN": "t", "WALREP_ADMIN_TOKEN": "a"}
HEAD = struct.Struct("<II")


def events(n: int, seed: int) -> list[dict[str, Any]]:
    return [{"stream": s, "attributes": a} for s, a in ApimGenerator(seed).events(n)]


async def http_case(admin: list[str], pool: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    async with Client(admin=admin, token="t", max_batch_events=500) as client:
        await client.publish(pool[:500])  # warm-up
        sent, start, i = 0, time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            batch = pool[i : i + 500] or pool[:500]
            i = (i + 500) % len(pool)
            sent += len(await client.publish(batch))
        elapsed = time.perf_counter() - start
    return {"case": "http x500", "events": sent, "events_per_s": sent / elapsed}


async def tcp_case(
    tcp_url: str, pool: list[dict[str, Any]], seconds: float, batch: int, window: int
) -> dict[str, Any]:
    host, port = tcp_url.removeprefix("tcp://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(MAGIC + struct.pack("<H", 1) + b"t")
    await _answer(reader)
    payloads = [orjson.dumps(pool[i : i + batch]) for i in range(0, len(pool) - batch + 1, batch)]
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    acked = 0
    next_id = 1
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        while len(sent_at) < window and time.perf_counter() < deadline:
            payload = payloads[next_id % len(payloads)]
            writer.write(HEAD.pack(len(payload) + 4, next_id) + payload)
            sent_at[next_id] = time.perf_counter()
            next_id += 1
        if not sent_at:
            break
        try:
            request_id, doc = await _answer(reader)
        except (ConnectionError, asyncio.IncompleteReadError) as e:  # the node closed ingest
            request_id, doc = next(iter(sent_at)), {"message": f"connection lost: {e!r}"}
        latencies.append(time.perf_counter() - sent_at.pop(request_id))
        if "offsets" not in doc:  # a finding, not a crash: recorded with what came before
            elapsed = time.perf_counter() - start
            writer.close()
            return {
                "case": f"tcp x{batch}",
                "in_flight": window,
                "events": acked,
                "events_per_s": acked / elapsed,
                "p50_ms": float("nan"),
                "p99_ms": float("nan"),
                "failed": f"after {acked} events in {elapsed:.1f} s: {doc.get('message')}",
            }
        acked += len(doc["offsets"])
    elapsed = time.perf_counter() - start
    writer.close()
    ordered = sorted(latencies)
    return {
        "case": f"tcp x{batch}",
        "in_flight": window,
        "events": acked,
        "events_per_s": acked / elapsed,
        "p50_ms": ordered[len(ordered) // 2] * 1000,
        "p99_ms": ordered[int(len(ordered) * 0.99)] * 1000,
    }


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
    length, request_id = HEAD.unpack(await reader.readexactly(HEAD.size))
    return request_id, orjson.loads(await reader.readexactly(length - 4))


def _follows(_: int, status: dict[str, Any]) -> bool:
    return status["follows_again_in_ms"] is None


def _caught_up(_: int, status: dict[str, Any]) -> bool:
    return status["applied"] is not None and status["applied"] >= status["committed"]


def _log_time(node: NodeProc, fragment: str, after: float) -> float | None:
    """Wall-clock time (s) of the node's first log line after ``after`` containing
    ``fragment`` (the nodes log ISO timestamps in ms; same machine, same clock)."""
    for line in node.lines:
        at = datetime.fromisoformat(line["ts"].replace("Z", "+00:00")).timestamp()
        if at >= after and fragment in line["message"]:
            return at
    return None


async def failover_case(
    nodes: list[NodeProc], admin: Admin, pool: list[dict[str, Any]], runs: int
) -> dict[str, Any]:
    """SIGKILL of the active while a publisher waits to send; phases from the new
    active's log: lease won (detection + acquire), promoted (the promotion steps),
    ingest open, then the first batch the client had acknowledged."""
    urls = [n.admin for n in nodes]
    phases: dict[str, list[float]] = {
        "lease_won": [], "promoted": [], "ingest_open": [], "first_ack": []
    }  # fmt: skip
    totals: list[float] = []
    failures: list[str] = []
    for _ in range(runs):
        await _active_status(admin, nodes)  # after a case that moved the lease: settled
        for n in nodes:  # not within a switchover's hold-off (a settled pair)
            await admin.until(n, "/status", _follows, "following again", 30)
        actives = [n for n in nodes if (await admin.get(n, "/active"))[0] == 200]
        victim = actives[0]
        other = nodes[1 - nodes.index(victim)]
        await admin.until(victim, "/status", lambda _, b: b["in_sync"], "standby in sync")
        async with Client(admin=urls, token="t", retry_deadline_s=30, backoff_initial_ms=5,
                          backoff_max_ms=50) as client:  # fmt: skip
            await client.publish(pool[:100])
            # Steady state: the warm standby has applied what is committed (a node just
            # restarted replays its log first; a kill before then measures that replay).
            await admin.until(other, "/status", _caught_up, "standby caught up", 120)
            killed = time.time()
            victim.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
            try:
                await client.publish(pool[100:200])  # retried until the new active answers
            except PublishError as e:  # a finding: recorded, the run ends here
                failures.append(f"after the SIGKILL of {victim.name}: {e}")
                await victim.proc.wait()  # type: ignore[union-attr]
                break
            acked = time.time()
        await victim.proc.wait()  # type: ignore[union-attr]
        await admin.until(other, "/active", lambda s, _: s == 200, "new active")
        won = _log_time(other, "won the lease", killed)
        promoted = _log_time(other, "PROMOTING -> ACTIVE", killed)
        opened = _log_time(other, "ingest open at", killed)
        if None in (won, promoted, opened):
            failures.append(f"{other.name}: a promotion log line is missing")
        else:
            assert won is not None and promoted is not None and opened is not None
            phases["lease_won"].append((won - killed) * 1000)
            phases["promoted"].append((promoted - won) * 1000)
            phases["ingest_open"].append((opened - promoted) * 1000)
            phases["first_ack"].append((acked - opened) * 1000)
        totals.append((acked - killed) * 1000)
        await victim.start()
    ordered = sorted(totals)
    return {
        "case": "failover (SIGKILL to first ack)",
        "runs": len(totals),
        "median_ms": statistics.median(totals) if totals else float("nan"),
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        if ordered
        else float("nan"),
        "min_ms": min(totals, default=float("nan")),
        "max_ms": max(totals, default=float("nan")),
        "all_ms": [round(t, 1) for t in totals],
        "phases_median_ms": {k: round(statistics.median(v), 1) for k, v in phases.items() if v},
        "failures": failures,
    }


async def open_loop_case(
    tcp_url: str, pool: list[dict[str, Any]], seconds: float, rate_per_s: float
) -> dict[str, Any]:
    """Single events over TCP at a fixed offered rate, whatever the answers do (open
    loop): each latency runs from the moment the event was *due*, so a stall counts for
    every event that waited behind it (no coordinated omission). At most 1,024 in flight;
    an event due while that many wait is sent late, and its lateness counts. Latencies go
    into an HDR histogram (1 us to 60 s, 3 significant digits: bounded memory), and per
    100 ms of due time the count and the worst latency (the latency-over-time plot)."""
    from hdrh.histogram import HdrHistogram

    host, port = tcp_url.removeprefix("tcp://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(MAGIC + struct.pack("<H", 1) + b"t")
    await _answer(reader)
    payloads = [orjson.dumps([e]) for e in pool]
    due: dict[int, float] = {}
    histogram = HdrHistogram(1, 60_000_000, 3)
    windows: dict[int, list[float]] = {}  # 100 ms window of due time -> [count, max ms]
    answered = 0
    failed: list[str] = []
    total = int(seconds * rate_per_s)
    start = time.perf_counter()

    room = asyncio.Condition()  # at most 1,024 in flight

    async def answers() -> None:
        nonlocal answered
        while answered < total:
            request_id, doc = await _answer(reader)
            at = due.pop(request_id)
            latency_s = time.perf_counter() - at
            histogram.record_value(max(1, int(latency_s * 1e6)))
            window = windows.setdefault(int((at - start) * 10), [0, 0.0])
            window[0] += 1
            window[1] = max(window[1], latency_s * 1000)
            answered += 1
            if "offsets" not in doc:
                failed.append(str(doc.get("message")))
            async with room:
                room.notify()

    receiving = asyncio.create_task(answers())
    for i in range(total):
        at = start + i / rate_per_s
        if (delay := at - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        async with room:
            await room.wait_for(lambda: len(due) < 1024)
        payload = payloads[i % len(payloads)]
        due[i + 1] = at
        writer.write(HEAD.pack(len(payload) + 4, i + 1) + payload)
    await asyncio.wait_for(receiving, 60)
    writer.close()
    ms = {f"p{q:g}_ms": histogram.get_value_at_percentile(q) / 1000 for q in (50, 90, 99, 99.9)}
    return {
        "case": f"tcp x1 open loop {rate_per_s:,.0f}/s",
        "offered_per_s": rate_per_s,
        "events": answered - len(failed),
        "events_per_s": (answered - len(failed)) / (time.perf_counter() - start),
        **ms,
        "max_ms": histogram.get_max_value() / 1000,
        "histogram": "HDR, 1 us..60 s, 3 significant digits",
        "over_time": [[k / 10, c, round(m, 3)] for k, (c, m) in sorted(windows.items())],
        "failed": failed[:3] or None,
    }


async def _publish_singles(
    urls: list[str],
    pool: list[dict[str, Any]],
    acks: list[float],
    acked: asyncio.Condition,
    stop: asyncio.Event,
) -> None:
    """One event per request, back to back, until ``stop``; each ack's time in ``acks``."""
    async with Client(admin=urls, token="t", retry_deadline_s=30,
                      backoff_initial_ms=1, backoff_max_ms=10) as client:  # fmt: skip
        i = 0
        while not stop.is_set():
            await client.publish([pool[i % len(pool)]])
            acks.append(time.perf_counter())
            i += 1
            async with acked:
                acked.notify_all()


async def switchover_case(
    nodes: list[NodeProc], admin: Admin, pool: list[dict[str, Any]], runs: int
) -> dict[str, Any]:
    """A planned switchover while a publisher sends single events back to back: the
    unavailability is the longest time between two acknowledgements around it."""
    urls = [n.admin for n in nodes]
    gaps_ms: list[float] = []
    failures: list[str] = []
    for _ in range(runs):
        await _active_status(admin, nodes)
        for n in nodes:  # the one that handed over last follows again (a settled pair)
            await admin.until(n, "/status", _follows, "following again", 30)
        acks: list[float] = []
        stop = asyncio.Event()
        acked = asyncio.Condition()
        task = asyncio.create_task(_publish_singles(urls, pool, acks, acked, stop))
        async with acked:
            await acked.wait_for(lambda a=acks: len(a) >= 50)  # it runs
        begun = time.perf_counter()
        result = await switchover(urls, None, "a")
        ended = time.perf_counter()
        count = len(acks)
        async with acked:
            await acked.wait_for(lambda a=acks, n=count: len(a) >= n + 50)  # on the new one
        stop.set()
        await task
        if not result.get("ok"):
            failures.append(str(result.get("message")))
            continue
        window = [a for a in acks if begun - 0.5 <= a <= ended + 2.0]
        gaps_ms.append(max(b - a for a, b in itertools.pairwise(window)) * 1000)
    return {
        "case": "switchover (longest gap between acks)",
        "runs": len(gaps_ms),
        "median_ms": statistics.median(gaps_ms) if gaps_ms else float("nan"),
        "min_ms": min(gaps_ms, default=float("nan")),
        "max_ms": max(gaps_ms, default=float("nan")),
        "all_ms": [round(g, 1) for g in gaps_ms],
        "failures": failures,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="walrep-bench-node-", dir=args.dir))
    print(f"nodes' data and logs in {root}", file=sys.stderr)
    nodes = [
        NodeProc(
            name,
            write_config(
                root,
                name,
                REPO / "conf" / "apps",
                heartbeat_ms=250,  # the defaults: lease TTL 1 s, snapshots every 60 s
                snapshot_interval_s=60,
                admin_port=free_port(),
            ),
            ENV,
            log_path=root / f"{name}.log",
        )
        for name in ("node1", "node2")
    ]
    pool = events(20_000, 3)
    results = []
    async with aiohttp.ClientSession() as http:
        admin = Admin(http)
        try:
            await nodes[0].start()
            await admin.until(nodes[0], "/active", lambda s, _: s == 200, "node1 active")
            await nodes[1].start()
            status = await admin.until(nodes[0], "/status", lambda _, b: b["in_sync"], "sync")
            rss: list[list[Any]] = []
            rss_stop = asyncio.Event()
            sampler = asyncio.create_task(sample_rss(nodes, rss, rss_stop))
            results.append(await http_case([n.admin for n in nodes], pool, args.seconds))
            for batch, window in ((500, 8), (1, 64)):
                status = await _active_status(admin, nodes)
                result = await tcp_case(
                    status["urls"]["ingest_tcp"], pool, args.seconds, batch, window
                )
                results.append(result)
            status = await _active_status(admin, nodes)
            results.append(
                await open_loop_case(status["urls"]["ingest_tcp"], pool, args.seconds, args.rate)
            )
            rss_stop.set()
            await sampler
            results.append(memory_result(nodes, rss))
            results.append(await switchover_case(nodes, admin, pool, args.switchovers))
            results.append(await failover_case(nodes, admin, pool, args.failovers))
        finally:
            for n in nodes:
                if n.running:
                    await n.signal(signal.SIGTERM)
    return {
        "benchmark": "node_e2e",
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "loadavg": os.getloadavg(),
        "settings": "2 node processes, SQLite, fsync always on both, API-M app on both, "
        "default cluster and snapshot settings (heartbeat 250 ms, lease TTL 1 s, "
        "snapshots every 60 s, digest every 1,000,000 offsets)",
        "results": results + await nats_cases(pool, args.seconds),
    }


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def sample_rss(nodes: list[NodeProc], samples: list[list[Any]], stop: asyncio.Event) -> None:
    """Both nodes' resident memory every 250 ms until ``stop`` (at most 4,000 samples)."""
    started = time.perf_counter()
    while not stop.is_set() and len(samples) < 4000:
        row: list[Any] = [round(time.perf_counter() - started, 2)]
        row += [_rss_mb(n.proc.pid) if n.proc is not None and n.running else None for n in nodes]
        samples.append(row)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


def memory_result(nodes: list[NodeProc], samples: list[list[Any]]) -> dict[str, Any]:
    peaks = {
        n.name: max((row[i + 1] for row in samples if row[i + 1] is not None), default=None)
        for i, n in enumerate(nodes)
    }
    return {
        "case": "memory (RSS of both nodes under load)",
        "during": "http x500, tcp x500, tcp x1, open loop",
        "interval_s": 0.25,
        "nodes": [n.name for n in nodes],
        "samples": samples,
        "max_mb": peaks,
    }


async def _active_status(admin: Admin, nodes: list[NodeProc]) -> dict[str, Any]:
    """The /status of whichever node is the active now (a case may have moved it)."""
    async with asyncio.timeout(30):
        while True:
            for n in nodes:
                if (await admin.get(n, "/active"))[0] == 200:
                    status = (await admin.get(n, "/status"))[1]
                    if status["in_sync"] and status["urls"]["ingest_tcp"]:
                        return dict(status)
            await asyncio.sleep(0.05)


def report(doc: dict[str, Any]) -> str:
    lines = [f"node_e2e {doc['date']} load {doc['loadavg'][0]:.2f}: {doc['settings']}"]
    for r in doc["results"]:
        if "skipped" in r:
            lines.append(f"{r['case']:36s} skipped: {r['skipped']}")
        elif "max_mb" in r:
            peaks = ", ".join(f"{k} {v:.0f} MB" for k, v in r["max_mb"].items() if v is not None)
            lines.append(f"{r['case']:36s} peak {peaks} ({len(r['samples'])} samples)")
        elif "events_per_s" in r:
            extra = f"  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms" if "p50_ms" in r else ""
            if r.get("failed"):
                extra += f"  FAILED {r['failed']}"
            if "settings" in r:
                extra += f"  [{r['settings']}]"
            lines.append(f"{r['case']:36s} {r['events_per_s']:>10,.0f} events/s{extra}")
        else:
            p99 = f", p99 {r['p99_ms']:.0f}" if "p99_ms" in r else ""
            lines.append(
                f"{r['case']:36s} median {r['median_ms']:.0f} ms{p99} (min {r['min_ms']:.0f}, "
                f"max {r['max_ms']:.0f}) over {r['runs']} runs"
                + (
                    f"\n    phases (median ms): {r['phases_median_ms']}"
                    if r.get("phases_median_ms")
                    else ""
                )
                + "".join(f"\n    FAILED {f}" for f in r["failures"])
            )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--failovers", type=int, default=20)
    parser.add_argument("--switchovers", type=int, default=5)
    parser.add_argument("--rate", type=float, default=1000.0, help="open-loop events/s")
    parser.add_argument("--dir", default=None)
    parser.add_argument("--save", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    doc = asyncio.run(main(args))
    text = report(doc)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    if args.save:
        stamp = datetime.now().strftime("%Y-%m-%dT%H%M%S")
        out = REPO / "benchmarks" / "results" / f"node_e2e-{stamp}"
        out.with_suffix(".json").write_text(json.dumps(doc, indent=2))
        out.with_suffix(".txt").write_text(text + "\n")
        print(f"saved {out}.json and .txt")
