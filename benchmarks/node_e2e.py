"""End to end through two real node processes and the API-M app, the client in this one.

Two ``walrep node start`` processes (``walrep.demo.procs``) on one SQLite file, fsync on
both logs, the flagship app on both (the standby applies too). Cases, each timed after a
warm-up, events from the seeded API-M generator:

* ``http x500``   ``walrep.client`` over HTTP, batches of 500, one request at a time;
* ``tcp x500``    TCP ingest, batches of 500, 8 requests in flight;
* ``tcp x1``      TCP ingest, single events, 64 in flight (latency per event: send to
                  answer, so p50/p99 are ack latencies under that load);
* ``failover``    a SIGKILL of the active while a publisher sends batches of 100: the
                  time from the kill to the first batch the new active acknowledged,
                  over ``--failovers`` runs (the active is killed, the other takes over,
                  the killed one restarts as the standby).

The reference beside them is the engine's own apply rate of the same app in this
machine (``engine_apply.py``: about 66,000 events/s on one core on 2026-12-01), the
ceiling of a node that applies every event it takes. Usage:
``.venv/bin/python benchmarks/node_e2e.py [--seconds 5] [--failovers 5] [--save]``.
"""

from __future__ import annotations

import argparse
import asyncio
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
from walrep.client import Client, PublishError  # noqa: E402
from walrep.demo.procs import Admin, NodeProc, free_port, write_config  # noqa: E402
from walrep.node.ingest_tcp import MAGIC  # noqa: E402

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


async def failover_case(
    nodes: list[NodeProc], admin: Admin, pool: list[dict[str, Any]], runs: int
) -> dict[str, Any]:
    urls = [n.admin for n in nodes]
    times_ms: list[float] = []
    failures: list[str] = []
    for _ in range(runs):
        await _active_status(admin, nodes)  # after a case that moved the lease: settled
        actives = [n for n in nodes if (await admin.get(n, "/active"))[0] == 200]
        victim = actives[0]
        other = nodes[1 - nodes.index(victim)]
        await admin.until(victim, "/status", lambda _, b: b["in_sync"], "standby in sync")
        async with Client(admin=urls, token="t", retry_deadline_s=30, backoff_initial_ms=5,
                          backoff_max_ms=50) as client:  # fmt: skip
            await client.publish(pool[:100])
            killed = time.perf_counter()
            victim.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
            try:
                await client.publish(pool[100:200])  # retried until the new active answers
            except PublishError as e:  # a finding: recorded, the run ends here
                failures.append(f"after the SIGKILL of {victim.name}: {e}")
                await victim.proc.wait()  # type: ignore[union-attr]
                break
            times_ms.append((time.perf_counter() - killed) * 1000)
        await victim.proc.wait()  # type: ignore[union-attr]
        await admin.until(other, "/active", lambda s, _: s == 200, "new active")
        await victim.start()
    return {
        "case": "failover (SIGKILL to first ack)",
        "runs": len(times_ms),
        "median_ms": statistics.median(times_ms) if times_ms else float("nan"),
        "min_ms": min(times_ms, default=float("nan")),
        "max_ms": max(times_ms, default=float("nan")),
        "all_ms": [round(t, 1) for t in times_ms],
        "failures": failures,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="walrep-bench-node-", dir=args.dir))
    print(f"nodes' data and logs in {root}", file=sys.stderr)
    nodes = [
        NodeProc(
            name,
            write_config(
                root, name, REPO / "conf" / "apps", heartbeat_ms=250, admin_port=free_port()
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
            results.append(await http_case([n.admin for n in nodes], pool, args.seconds))
            for batch, window in ((500, 8), (1, 64)):
                status = await _active_status(admin, nodes)
                result = await tcp_case(
                    status["urls"]["ingest_tcp"], pool, args.seconds, batch, window
                )
                results.append(result)
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
        "heartbeat 250 ms (lease TTL 1 s)",
        "results": results,
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
        if "events_per_s" in r:
            extra = f"  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms" if "p50_ms" in r else ""
            if "failed" in r:
                extra += f"  FAILED {r['failed']}"
            lines.append(f"{r['case']:32s} {r['events_per_s']:>10,.0f} events/s{extra}")
        else:
            lines.append(
                f"{r['case']:32s} median {r['median_ms']:.0f} ms (min {r['min_ms']:.0f}, "
                f"max {r['max_ms']:.0f}) over {r['runs']} runs"
                + "".join(f"\n    FAILED {f}" for f in r["failures"])
            )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--failovers", type=int, default=5)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    doc = asyncio.run(main(args))
    text = report(doc)
    print(text)
    if args.save:
        stamp = datetime.now().strftime("%Y-%m-%dT%H%M%S")
        out = REPO / "benchmarks" / "results" / f"node_e2e-{stamp}"
        out.with_suffix(".json").write_text(json.dumps(doc, indent=2))
        out.with_suffix(".txt").write_text(text + "\n")
        print(f"saved {out}.json and .txt")
