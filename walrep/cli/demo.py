"""``walrep log demo``: append to a log, reopen it, read everything back and verify it."""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
from pathlib import Path

import click

from walrep.log import Event, LogConfig, Wal

STREAM = "api_requests"


def sample_events(count: int, seed: int) -> list[Event]:
    """API-analytics request events, reproducible from ``seed``."""
    rng = random.Random(seed)
    apis = [("orders", "v1"), ("orders", "v2"), ("payments", "v1"), ("catalog", "v3")]
    events = []
    for i in range(count):
        api, version = rng.choice(apis)
        events.append(
            Event(
                STREAM,
                {
                    "api": api,
                    "version": version,
                    "tenant": f"t{rng.randrange(4)}",
                    "application": f"app-{rng.randrange(16)}",
                    "status": rng.choice([200, 200, 200, 201, 404, 500]),
                    "latency_ms": round(rng.lognormvariate(3, 0.6), 2),
                    "ts": 1_700_000_000_000 + i * 7,
                },
                producer_id="demo",
                seq=i,
            )
        )
    return events


async def _append_all(wal: Wal, batches: list[list[Event]]) -> None:
    # All batches at once: the log group-commits them (one write + one fdatasync per group).
    await asyncio.gather(*(wal.append(batch, epoch=1) for batch in batches))


@click.command("demo")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=None,
    help="Log directory (default: a temp dir, removed after).",
)
@click.option("--events", default=10_000, show_default=True, help="Events to append.")
@click.option("--batch", default=100, show_default=True, help="Events per append.")
def log_demo(directory: Path | None, events: int, batch: int) -> None:
    """Append events to a write-ahead log, reopen it, read them back and verify them."""
    keep = directory is not None
    path = directory or Path(tempfile.mkdtemp(prefix="walrep-demo-"))
    try:
        written = sample_events(events, seed=42)
        batches = [written[i : i + batch] for i in range(0, len(written), batch)]
        config = LogConfig(
            segment_bytes_max=1 << 20, max_batch_bytes=256 << 10, max_event_bytes=64 << 10
        )
        wal = Wal.open(path, config)
        start = wal.log_end
        asyncio.run(_append_all(wal, batches))
        click.echo(f"appended {events} events in {len(batches)} batches to {path} (fsync: always)")
        wal.close()

        wal = Wal.open(path, config)
        recovery = "; ".join(wal.recovery.lines()) or "clean"
        span = f"[{wal.log_start}, {wal.log_end})"
        click.echo(f"reopened: log {span}, {len(wal.segments())} segment(s), recovery: {recovery}")
        read = [record.event for record in wal.read(start)]
        wal.close()
        # Batches were group-committed concurrently, so compare as multisets of seq.
        same = sorted(read, key=lambda e: e.seq or 0) == written
        verdict = "identical to what was written" if same else "MISMATCH"
        click.echo(f"read back {len(read)} events: {verdict}")
        if not same:
            raise SystemExit(1)
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)
