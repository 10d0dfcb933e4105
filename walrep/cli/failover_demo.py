"""``walrep demo``: two real nodes on one machine, a SIGKILL mid-stream, a verdict.

See ``walrep.demo.scenario``. A live view (rich) while it runs: both nodes' role, epoch,
offsets and sync state, the events acknowledged. Then the failover timeline and the
verdict. Exit status 0 when nothing acknowledged was lost or counted twice, 1 otherwise
(or when a step failed), 2 for bad arguments.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from walrep.demo.scenario import Demo, Verdict


def apps_dir() -> Path:
    """The flagship app's directory: ``conf/apps`` here, else in the source checkout."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (base / "conf" / "apps" / "apim_analytics.py").is_file():
            return base / "conf" / "apps"
    raise click.UsageError("conf/apps/apim_analytics.py not found: run from the repository")


def nodes_table(demo: Demo) -> Table:
    table = Table(title=f"walrep demo: {demo.verdict.acked:,} of {demo.events:,} events acked")
    for column in ("node", "role", "epoch", "log end", "committed", "applied", "in sync"):
        table.add_column(column, justify="right" if column not in ("node", "role") else "left")
    for name in demo.nodes:
        s = demo.status.get(name) or {}
        table.add_row(
            name,
            str(s.get("role", "starting")),
            *(str(s.get(k, "")) for k in ("epoch", "log_end", "committed", "applied")),
            "yes" if s.get("in_sync") else "no",
        )
    return table


def report(console: Console, verdict: Verdict) -> None:
    timeline = Table(title="failover after SIGKILL of node1 (ms after the kill)")
    timeline.add_column("phase")
    timeline.add_column("ms", justify="right")
    for phase, ms in verdict.timeline:
        timeline.add_row(phase, f"{ms:,.0f}")
    console.print(timeline)
    if verdict.switchover and not verdict.switchover.get("ok"):
        console.print(f"switchover back: not completed ({verdict.switchover['message']})")
    elif verdict.switchover:
        s = verdict.switchover
        console.print(
            f"switchover back to {s['to']}: ingest closed after {s['ingest_closed_ms']} ms, "
            f"lease released after {s['released_ms']} ms, new active after "
            f"{s['new_active_ms']} ms (no lease expiry wait)"
        )
    result = Table(title="verdict")
    for column in ("acked", "acked requests", "log end", "counted in ApiUserPerAppAgg",
                   "lost", "duplicated"):  # fmt: skip
        result.add_column(column, justify="right")
    result.add_row(
        *(f"{v:,}" for v in (verdict.acked, verdict.acked_requests, verdict.log_end,
                             verdict.counted, verdict.lost, verdict.duplicated)),
    )  # fmt: skip
    console.print(result)
    console.print("[bold green]nothing lost, nothing counted twice[/]" if verdict.ok
                  else "[bold red]LOSS OR DUPLICATION[/]")  # fmt: skip


@click.command("demo")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the nodes keep their data (default: a temp dir, removed after).",
)
@click.option("--events", default=30_000, show_default=True, type=click.IntRange(300))
@click.option(
    "--rate",
    default=1000.0,
    show_default=True,
    type=click.FloatRange(1),
    help="Events/s the publisher sends.",
)
@click.option(
    "--switchover/--no-switchover",
    default=True,
    show_default=True,
    help="After the failover, hand the active role back by a planned switchover.",
)
def demo(directory: Path | None, events: int, rate: float, switchover: bool) -> None:  # fmt: skip
    """Two nodes, a kill of the active mid-stream, failover, and a verdict (about a minute)."""
    root = directory or Path(tempfile.mkdtemp(prefix="walrep-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    console = Console()
    run = Demo(root, apps_dir(), events=events, rate=rate, switch_back=switchover)

    async def main() -> Verdict:
        with Live(nodes_table(run), console=console, refresh_per_second=4) as live:
            task = asyncio.create_task(run.run(lambda text: console.log(text)))
            while not task.done():
                live.update(nodes_table(run))
                await asyncio.wait({task}, timeout=0.25)
            live.update(nodes_table(run))
            return task.result()

    try:
        verdict = asyncio.run(main())
    except (RuntimeError, TimeoutError) as e:
        console.print(f"[bold red]walrep demo: {e}[/]")
        sys.exit(1)
    finally:
        if directory is None:
            shutil.rmtree(root, ignore_errors=True)
    report(console, verdict)
    sys.exit(0 if verdict.ok else 1)
