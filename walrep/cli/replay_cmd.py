"""``walrep replay``: the forensics replay tool (docs/replay.md).

Offline, on a node's data directory or a copy; read-only on the log and the snapshot
store; the node's own engine. Exit status: 0 done (``verify``: everything matched;
``diff``: identical), 1 a mismatch or a difference (``verify``, ``diff``), 2 an error in
the input (named: the file, the offset), 130 interrupted by Ctrl-C (a partial report is
printed first).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import click
import orjson
from rich.console import Console

from walrep.engine.core import Engine
from walrep.engine.sinks.base import SinkBatch
from walrep.engine.sinks.rdbms import RdbmsSink
from walrep.errors import WalrepError
from walrep.replay import printing
from walrep.replay.compare import compare_logs
from walrep.replay.diff import Differ
from walrep.replay.events import EventFilter, event_json, iso_ms, selected
from walrep.replay.inputs import ReplayInputs, apps_from, open_inputs
from walrep.replay.progress import display, progress_console, progress_wanted
from walrep.replay.report import aggregation_query, app_summary, pick_app, query_answer
from walrep.replay.runner import Replayer, snapshot_list, start_engine
from walrep.replay.source import LogSource
from walrep.replay.trace import Tracer, parse_key
from walrep.replay.verify import verify
from walrep.replay.where import compile_where

EXIT_OK: Final = 0
EXIT_DIFFERENT: Final = 1
EXIT_INPUT: Final = 2
EXIT_INTERRUPTED: Final = 130
SQLITE_SUFFIXES: Final = (".db", ".sqlite", ".sqlite3")


class _InputError(click.ClickException):
    exit_code = EXIT_INPUT


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Every walrep error about the input: its message, exit status 2."""
    try:
        yield
    except WalrepError as e:
        raise _InputError(str(e)) from None


@contextlib.contextmanager
def _ctrl_c(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C sets ``stop`` (the run ends at the next batch boundary); a second one
    interrupts at once."""

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _time_ms(text: str, option: str) -> int:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 time", param_hint=option) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _emit(doc: Any, as_json: bool, out: Path | None, text: Callable[[Console], None]) -> None:
    if out is not None:
        out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        text(Console(soft_wrap=True))


@dataclass(frozen=True)
class Common:
    """The options every command but ``events`` takes (``_common``)."""

    data: Path
    config: Path | None
    apps: Path | None
    skip_damaged: bool
    progress: bool | None
    as_json: bool

    def inputs(self) -> ReplayInputs:
        return open_inputs(
            self.data, config_path=self.config, apps_path=self.apps, skip_damaged=self.skip_damaged
        )

    def source(self) -> LogSource:
        return LogSource(self.data, skip_damaged=self.skip_damaged)


def _common(fn: Callable[..., None]) -> Callable[..., None]:
    """The shared options, handed to the command as one ``Common``."""

    @functools.wraps(fn)
    def command(
        data: Path,
        config: Path | None,
        apps: Path | None,
        skip_damaged: bool,
        progress: bool | None,
        as_json: bool,
        **kwargs: Any,
    ) -> None:
        fn(Common(data, config, apps, skip_damaged, progress, as_json), **kwargs)

    options = [
        click.option("--data", "data", required=True,
                     type=click.Path(exists=True, file_okay=False, path_type=Path),
                     help="The node's data directory (or a copy of it)."),
        click.option("-c", "--config", "config", type=click.Path(exists=True, dir_okay=False,
                     path_type=Path), help="The node's config: its apps and snapshot store."),
        click.option("--apps", "apps", type=click.Path(exists=True, path_type=Path),
                     help="An apps directory or one app module (default: the config's)."),
        click.option("--skip-damaged", is_flag=True,
                     help="Replay on past damaged frames and report the offsets skipped."),
        click.option("--progress/--no-progress", default=None,
                     help="The progress bar (default: when stderr is a terminal)."),
        click.option("--json", "as_json", is_flag=True, help="Print JSON."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def _bar(what: str, start: int, end: int, flag: bool | None) -> Any:
    """The progress display (``walrep.replay.progress``) as ``--progress`` asks."""
    return display(what, start, end, progress_wanted(flag), progress_console(flag))


@click.group("replay")
def replay_group() -> None:
    """Forensics: replay a node's log offline (read-only) with the node's own engine."""


# --- state -------------------------------------------------------------------------------


@replay_group.command("state")
@_common
@click.option(
    "--snapshot", "snapshot_id", help="Start from this snapshot (default: the newest usable)."
)
@click.option("--from-scratch", is_flag=True, help="Start from offset 0, not a snapshot.")
@click.option("--to-offset", type=click.IntRange(min=0), help="The state after [0, N).")
@click.option(
    "--until", "until", help="The state after every record ingested at or before this ISO time."
)
@click.option("--app", "app_name", help="Report this app only.")
@click.option(
    "--aggregation", help="Print this aggregation's rows (with --per) as the Store Query API does."
)
@click.option("--per", help="The duration of --aggregation's rows: seconds, minutes, hours, ...")
@click.option(
    "--query", help="Answer this Store Query on the replayed state (needs --aggregation's app)."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the report as JSON, or every row into a SQLite file (*.db, *.sqlite).",
)
def state_cmd(
    common: Common,
    snapshot_id: str | None,
    from_scratch: bool,
    to_offset: int | None,
    until: str | None,
    app_name: str | None,
    aggregation: str | None,
    per: str | None,
    query: str | None,
    out: Path | None,
) -> None:
    """An app's state at an offset or a time, with its digest."""
    if (to_offset is None) == (until is None):
        raise click.UsageError("give one of --to-offset N or --until ISO-TIME")
    if snapshot_id is not None and from_scratch:
        raise click.UsageError("--snapshot and --from-scratch exclude each other")
    if (aggregation is None) != (per is None and query is None):
        raise click.UsageError("--aggregation NAME goes with --per DURATION or --query TEXT")
    until_ms = _time_ms(until, "--until") if until is not None else None
    stop = threading.Event()
    with _errors():
        inputs = common.inputs()
        shown = pick_app(inputs.apps, app_name)
        engine, start = start_engine(
            inputs, target=to_offset, snapshot_id=snapshot_id, from_scratch=from_scratch
        )
        source = inputs.source
        end = to_offset if to_offset is not None else source.log_end
        with _ctrl_c(stop), _bar("state", engine.applied, end, common.progress) as bar:
            result = Replayer(source, stop).run(
                engine, to_offset=to_offset, until_ms=until_ms, progress=bar
            )
        doc: dict[str, Any] = {
            "offset": engine.applied,
            "epoch": result.epoch,
            "digest": engine.digest(),
            "start": start.to_json(),
            "replayed": engine.applied - start.offset,
            "interrupted": result.interrupted,
            "apps": {a.name: app_summary(engine, a) for a in shown},
            "skipped": [s.to_json() for s in source.skipped],
            "notes": list(start.notes) + result.notes,
        }
        if until_ms is not None:
            doc["until"] = iso_ms(until_ms)
        if aggregation is not None:
            text = query or aggregation_query(engine, aggregation, per or "")
            doc["query"] = query_answer(engine, inputs.apps, aggregation, text)
        if out is not None and out.suffix in SQLITE_SUFFIXES:
            rows = asyncio.run(_write_sqlite(engine, str(out.resolve()), result.epoch or 0))
            doc["written"] = {"file": str(out), "rows": rows}
            out = None
    _emit(doc, common.as_json, out, lambda c: printing.print_state(c, doc))
    if result.interrupted:
        sys.exit(EXIT_INTERRUPTED)


async def _write_sqlite(engine: Engine, path: str, epoch: int) -> int:
    """Every aggregation row into ``path``, in the RDBMS sink's tables (Siddhi's shape)."""
    sink = RdbmsSink.from_url(f"sqlite+aiosqlite:///{path}")
    try:
        await sink.setup(engine.schemas())
        rows = engine.all_rows()
        await sink.write(SinkBatch(epoch, engine.applied, rows))
        return len(rows)
    finally:
        await sink.close()


# --- snapshots ---------------------------------------------------------------------------


@replay_group.command("snapshots")
@_common
def snapshots_cmd(common: Common) -> None:
    """The snapshots a replay may start from (ids for --snapshot), newest first."""
    with _errors():
        inputs = common.inputs()
        if inputs.snapshots is None:
            raise _InputError(f"no snapshot store: give -c CONF, or {common.data}/snapshots")
        rows = asyncio.run(snapshot_list(inputs))
    doc = {"store": inputs.snapshots.where, "snapshots": rows}
    _emit(doc, common.as_json, None, lambda c: printing.print_snapshots(c, doc))


# --- verify ------------------------------------------------------------------------------


@replay_group.command("verify")
@_common
@click.option(
    "--against",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Another node's data directory: compare the two logs and chains.",
)
def verify_cmd(
    common: Common,
    against: Path | None,
) -> None:
    """Recompute the digest chain and compare it with every recorded digest."""
    stop = threading.Event()
    with _errors():
        inputs = common.inputs()
        source = inputs.source
        replayer = Replayer(source, stop)
        with _ctrl_c(stop), _bar("verify", 0, source.log_end, common.progress) as bar:
            report = verify(inputs, replayer, progress=bar)
            comparison = None
            if against is not None and report.mismatch is None and not stop.is_set():
                other = LogSource(against, skip_damaged=common.skip_damaged)
                comparison = compare_logs(source, other, stop=stop)
    doc = report.to_json()
    if comparison is not None:
        doc["against"] = {"data": str(against), **comparison.to_json()}
        doc["ok"] = doc["ok"] and comparison.difference is None and not comparison.interrupted
    _emit(doc, common.as_json, None, lambda c: printing.print_verify(c, doc))
    if report.interrupted or (comparison is not None and comparison.interrupted):
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(EXIT_OK if doc["ok"] else EXIT_DIFFERENT)


# --- trace -------------------------------------------------------------------------------


@replay_group.command("trace")
@_common
@click.option("--key", required=True, help="ATTR=VALUE[,ATTR=VALUE]: the group-by values traced.")
@click.option("--aggregation", help="Trace this aggregation (or table) only.")
@click.option("--per", help="Report this duration's rows only (seconds, minutes, ...).")
@click.option("--from", "from_offset", type=click.IntRange(min=0), default=0, help="First offset.")
@click.option("--to", "to_offset", type=click.IntRange(min=0), help="End offset (exclusive).")
@click.option("--from-scratch", is_flag=True, help="Start from offset 0, not a snapshot.")
def trace_cmd(
    common: Common,
    key: str,
    aggregation: str | None,
    per: str | None,
    from_offset: int,
    to_offset: int | None,
    from_scratch: bool,
) -> None:
    """Every event that changed one key's state: offsets, times, values before and after."""
    stop = threading.Event()
    with _errors():
        pairs = parse_key(key)
        inputs = common.inputs()
        source = inputs.source
        engine, start = start_engine(inputs, target=from_offset, from_scratch=from_scratch)
        found: list[Any] = []
        end = to_offset if to_offset is not None else source.log_end
        with _ctrl_c(stop), _bar("trace", engine.applied, end, common.progress) as bar:
            replayer = Replayer(source, stop)
            replayer.run(engine, to_offset=from_offset, progress=bar)
            tracer = Tracer(inputs.apps, engine, pairs, aggregation=aggregation, per=per)

            def feed(_: Engine, records: list[Any], __: list[Any]) -> None:
                for event in tracer.feed(records):
                    doc = event.to_json()
                    found.append(doc)
                    if common.as_json:
                        sys.stdout.buffer.write(orjson.dumps(doc) + b"\n")
                    else:
                        printing.print_traced(doc)

            result = replayer.run(engine, to_offset=to_offset, on_records=feed, progress=bar)
    states = sorted(tracer.targets)
    summary = {
        "events": len(found),
        "from": from_offset,
        "to": engine.applied,
        "start": start.to_json(),
        "interrupted": result.interrupted,
        "states": states,
    }
    if common.as_json:
        sys.stdout.buffer.write(orjson.dumps({"summary": summary}) + b"\n")
    else:
        Console(stderr=True).print(
            f"{len(found)} events changed {key} in offsets {from_offset:,}..{engine.applied:,}"
            f" ({', '.join(states)})" + (" [interrupted]" if result.interrupted else ""),
            markup=False,
        )
    if result.interrupted:
        sys.exit(EXIT_INTERRUPTED)


# --- diff --------------------------------------------------------------------------------


@replay_group.command("diff")
@_common
@click.option(
    "--app-a",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Version A: an app module file or an apps directory.",
)
@click.option(
    "--app-b",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Version B: an app module file or an apps directory.",
)
@click.option(
    "--from", "from_offset", type=click.IntRange(min=0), default=0, help="First offset compared."
)
@click.option("--to", "to_offset", type=click.IntRange(min=0), help="End offset (exclusive).")
def diff_cmd(
    common: Common,
    app_a: Path,
    app_b: Path,
    from_offset: int,
    to_offset: int | None,
) -> None:
    """Two versions of an app over the same log: the rows and outputs that differ."""
    stop = threading.Event()
    with _errors():
        source = common.source()
        a, b = apps_from(app_a), apps_from(app_b)
        end = to_offset if to_offset is not None else source.log_end
        with _ctrl_c(stop), _bar("diff", 0, end, common.progress) as bar:
            report = Differ(source, a, b, stop=stop).run(from_offset, to_offset, progress=bar)
    doc = report.to_json()
    _emit(doc, common.as_json, None, lambda c: printing.print_diff(c, doc))
    if report.interrupted:
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(EXIT_OK if report.identical else EXIT_DIFFERENT)


# --- events ------------------------------------------------------------------------------


@replay_group.command("events")
@click.option(
    "--data", "data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option("--from", "from_offset", type=click.IntRange(min=0), help="First offset.")
@click.option("--to", "to_offset", type=click.IntRange(min=0), help="End offset (exclusive).")
@click.option("--since", help="Ingested at or after this ISO time.")
@click.option("--until", help="Ingested at or before this ISO time.")
@click.option("--stream", help="Events of this stream only.")
@click.option(
    "--where", "where", help="A condition on the attributes: apiName == 'x' and code >= 500."
)
@click.option(
    "--skip-damaged", is_flag=True, help="Go on past damaged frames (reported on stderr)."
)
@click.option(
    "--progress/--no-progress", default=None, help="The progress bar (default: on a terminal)."
)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write NDJSON here, not stdout."
)
def events_cmd(
    data: Path,
    from_offset: int | None,
    to_offset: int | None,
    since: str | None,
    until: str | None,
    stream: str | None,
    where: str | None,
    skip_damaged: bool,
    progress: bool | None,
    out: Path | None,
) -> None:
    """Export events as NDJSON, filtered by offsets, ingest times, stream and a condition."""
    since_ms = _time_ms(since, "--since") if since is not None else None
    until_ms = _time_ms(until, "--until") if until is not None else None
    stop = threading.Event()
    written = 0
    with _errors():
        test = compile_where(where) if where is not None else None
        keep = EventFilter(since_ms, until_ms, stream, test)
        source = LogSource(data, skip_damaged=skip_damaged)
        start = max(from_offset or 0, source.log_start)
        end = min(to_offset, source.log_end) if to_offset is not None else source.log_end
        sink = out.open("wb") if out is not None else sys.stdout.buffer
        try:
            with _ctrl_c(stop), _bar("events", start, end, progress) as bar:
                for batch in selected(source.batches(start, end), keep):
                    if batch:
                        sink.write(b"".join(event_json(r) + b"\n" for r in batch))
                        written += len(batch)
                        bar(batch[-1].offset + 1)
                    if stop.is_set():
                        break
        except BrokenPipeError:
            sys.exit(EXIT_OK)  # the reader (head) has what it wanted
        finally:
            if out is not None:
                sink.close()
    err = Console(stderr=True)
    for s in source.skipped:
        err.print(f"skipped offsets {s.first}..{s.end - 1}: {s.where}: {s.reason}", markup=False)
    if out is not None or stop.is_set():
        err.print(f"{written:,} events" + (" (interrupted)" if stop.is_set() else ""))
    if stop.is_set():
        sys.exit(EXIT_INTERRUPTED)
