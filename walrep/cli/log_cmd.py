"""``walrep log dump`` and ``walrep log verify``: read-only inspection of a log directory.

Both read the segment files directly through ``walrep.log.walk`` (the pure frame codec
and recovery scanner), under the limits the directory records (``walrep.log.limits``):
they never open the log with ``Wal.open``, never take its lock, never truncate a torn
tail. Exit status: 0 clean, 1 corrupt, 2 usage or I/O error, 3 only a torn tail at the
end of the newest segment (which opening the log truncates).
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import click
import orjson

from walrep.errors import CorruptLogError, LogError
from walrep.log.frame import Event
from walrep.log.limits import FILE_NAME as LIMITS_FILE
from walrep.log.limits import LogLimits, load_limits
from walrep.log.verify import VerifyStatus, verify_log
from walrep.log.walk import (
    CheckedFrame,
    Counts,
    Finding,
    FindingKind,
    SegmentFile,
    SegmentStats,
    StatsAccumulator,
    total_counts,
    walk_log,
)

EXIT_CLEAN: Final = 0
EXIT_CORRUPT: Final = 1
EXIT_USAGE: Final = 2
EXIT_TORN_TAIL: Final = 3
EXIT_BROKEN_PIPE: Final = 128 + 13  # as if killed by SIGPIPE
_EPOCH_START: Final = datetime(1970, 1, 1, tzinfo=UTC)


class _ToolError(click.ClickException):
    """An error about the input (not a log directory, unreadable file): exit status 2."""

    exit_code = EXIT_USAGE


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the flush at exit does not fail again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _at_or_after(offset: int | None, bound: int | None) -> bool:
    return offset is not None and bound is not None and offset >= bound


def _exit_code(kind: FindingKind) -> int:
    return EXIT_TORN_TAIL if kind is FindingKind.TORN_TAIL else EXIT_CORRUPT


_directory_argument = click.argument(
    "directory",
    metavar="DIR",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)


@click.group("log")
def log_group() -> None:
    """Inspect a write-ahead log directory (read-only: safe on a running node's log)."""


# --- dump ------------------------------------------------------------------------------


@log_group.command()
@_directory_argument
@click.option(
    "--from",
    "from_offset",
    type=click.IntRange(min=0),
    default=0,
    help="First offset to show (inclusive).",
)
@click.option(
    "--to",
    "to_offset",
    type=click.IntRange(min=0),
    default=None,
    help="Offset to stop before (exclusive).",
)
@click.option("--limit", type=click.IntRange(min=0), default=None, help="Print at most N events.")
@click.option("--stats", is_flag=True, help="Print per-segment and total summaries, not frames.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one object per frame.")
def dump(
    directory: Path,
    from_offset: int,
    to_offset: int | None,
    limit: int | None,
    stats: bool,
    as_json: bool,
) -> None:
    """Print the frames of the log in DIR and their events, oldest first.

    One line per frame (offsets [base, end), epoch, ingest time, position in the segment,
    sizes, codec, CRC), its events indented under it. --from/--to select offsets
    [from, to); --limit caps the events printed; --stats prints summaries instead of
    frames (--limit does not apply). Stops at the first damage with a line naming
    segment, byte position and offset (exit status 1; 3 for a torn tail).
    """
    if to_offset is not None and to_offset < from_offset:
        raise click.BadParameter(f"--to {to_offset} is below --from {from_offset}")
    dumper = _Dumper(from_offset, to_offset, limit, stats=stats, as_json=as_json)
    try:
        limits = _dump_limits(directory)
        for item in walk_log(directory, limits, from_offset=from_offset, to_offset=to_offset):
            if not dumper.take(item):
                break
        dumper.finish()
    except BrokenPipeError:  # the reader (head, less) went away: stop quietly, like cat
        _silence_stdout()
        raise SystemExit(EXIT_BROKEN_PIPE) from None
    except (LogError, OSError) as e:
        raise _ToolError(str(e)) from e
    if dumper.damage is not None:
        raise SystemExit(_exit_code(dumper.damage.kind))


def _dump_limits(directory: Path) -> LogLimits:
    """The directory's limits; a damaged limits file stops the dump (exit status 1)."""
    try:
        limits = load_limits(directory)
    except CorruptLogError as e:
        click.echo(f"damage: corrupt: {e.segment}: {e.reason}")
        click.echo("the log's limits are unknown; `walrep log verify` checks the rest", err=True)
        raise SystemExit(EXIT_CORRUPT) from None
    if limits is None:
        note = "no limits file (a log written before it existed): the default limits apply"
        click.echo(f"note: {directory / LIMITS_FILE}: {note}", err=True)
        return LogLimits()
    return limits


class _Dumper:
    """Prints walk items as they come; ``take`` returns False once it has seen enough."""

    def __init__(
        self,
        from_offset: int,
        to_offset: int | None,
        limit: int | None,
        *,
        stats: bool,
        as_json: bool,
    ) -> None:
        self.from_offset = from_offset
        self.to_offset = to_offset
        self.events_left = limit
        self.stats = stats
        self.as_json = as_json
        self.segments: list[SegmentStats] = []
        self.segment: SegmentFile | None = None
        self.counts = StatsAccumulator()
        self.frames_shown = 0
        self.events_shown = 0
        self.damage: Finding | None = None
        self.before_range: Finding | None = None  # damage below --from, not yet judged

    def take(self, item: SegmentFile | CheckedFrame | Finding) -> bool:
        if isinstance(item, Finding):
            return self._take_finding(item)
        resumes_at = item.base_offset if isinstance(item, SegmentFile) else item.header.base_offset
        if self.before_range is not None:
            if resumes_at > self.from_offset:  # offsets of the range were lost to it
                self.damage = self.before_range
                return False
            click.echo(
                f"note: damage before --from {self.from_offset}: {self.before_range}", err=True
            )
            self.before_range = None
        if isinstance(item, SegmentFile):
            self._end_segment()
            self.segment = item
            if not self.stats and not self.as_json:
                size = f"base_offset={item.base_offset} file_bytes={item.file_bytes}"
                click.echo(f"segment {item.path}: {size}")
            return True
        header = item.header
        if header.end_offset <= self.from_offset:
            return True
        if self.to_offset is not None and header.base_offset >= self.to_offset:
            return False
        if self.stats:
            self.counts.add(item)
            return True
        return self._show(item)

    def _take_finding(self, finding: Finding) -> bool:
        if finding.kind is FindingKind.INFO:
            click.echo(f"note: {finding}", err=True)
            return True
        if _at_or_after(finding.offset, self.to_offset):
            return False  # damage after the range does not concern this dump
        if not _at_or_after(finding.offset, self.from_offset):
            self.before_range = finding  # harmless if the walk resumes at or before --from
            return True
        self.damage = finding
        return False

    def _show(self, frame: CheckedFrame) -> bool:
        base = frame.header.base_offset
        selected = [
            (base + i, event)
            for i, event in enumerate(frame.events)
            if base + i >= self.from_offset
            and (self.to_offset is None or base + i < self.to_offset)
        ]
        if self.events_left is not None:
            if self.events_left == 0:
                return False
            selected = selected[: self.events_left]
            self.events_left -= len(selected)
        self.frames_shown += 1
        self.events_shown += len(selected)
        if self.as_json:
            record = _frame_json(frame)
            record["events"] = [_event_json(offset, event) for offset, event in selected]
            click.echo(orjson.dumps(record).decode())
        else:
            click.echo(_frame_line(frame))
            for offset, event in selected:
                attributes = orjson.dumps(dict(event.attributes)).decode()
                producer = (
                    ""
                    if event.producer_id is None
                    else f" producer={event.producer_id} seq={event.seq}"
                )
                click.echo(
                    f"    offset={offset} stream={event.stream}{producer} attributes={attributes}"
                )
        return self.events_left != 0

    def _end_segment(self) -> None:
        if self.segment is not None and self.stats:
            s = self.segment
            self.segments.append(
                SegmentStats(s.path, s.base_offset, s.file_bytes, self.counts.counts())
            )
            self.counts = StatsAccumulator()
        self.segment = None

    def finish(self) -> None:
        self._end_segment()
        if self.before_range is not None:  # nothing intact came after it
            self.damage, self.before_range = self.before_range, None
        if self.stats:
            self._print_stats()
        elif not self.as_json:
            ended = "limit reached" if self.events_left == 0 else "end"
            click.echo(f"dumped frames={self.frames_shown} events={self.events_shown} ({ended})")
        if self.damage is not None:
            line = f"damage: {self.damage}"
            if self.as_json:
                click.echo(orjson.dumps({"type": "damage", **_finding_json(self.damage)}).decode())
                click.echo(line, err=True)
            else:
                click.echo(line)
            click.echo(
                "dump stopped at the damage; `walrep log verify` checks the whole log", err=True
            )

    def _print_stats(self) -> None:
        total = total_counts([s.counts for s in self.segments])
        file_bytes = sum(s.file_bytes for s in self.segments)
        if self.as_json:
            for s in self.segments:
                head = {"type": "segment", "path": str(s.path), "base_offset": s.base_offset}
                record = head | {"file_bytes": s.file_bytes} | _counts_json(s.counts)
                click.echo(orjson.dumps(record).decode())
            head = {"type": "total", "segments": len(self.segments), "file_bytes": file_bytes}
            click.echo(orjson.dumps(head | _counts_json(total)).decode())
            return
        for s in self.segments:
            title = f"segment {s.path}: base_offset={s.base_offset} file_bytes={s.file_bytes}"
            click.echo(f"{title} {_counts_line(s.counts)}")
        title = f"total: segments={len(self.segments)} file_bytes={file_bytes}"
        click.echo(f"{title} {_counts_line(total)}")


# --- verify ----------------------------------------------------------------------------


@log_group.command()
@_directory_argument
def verify(directory: Path) -> None:
    """Check every frame of every segment in DIR, and the files beside them.

    The frames are checked under the limits DIR records; the index, epoch history,
    replica state, limits and truncation intent files are checked too. Prints each
    finding (file, byte position, offset, reason) and a summary. Exit status
    0 when clean (notes only), 1 on any corruption, 3 when the only damage is a torn tail
    of the newest segment (which opening the log truncates). Changes nothing.
    """
    try:
        report = verify_log(directory)
    except (LogError, OSError) as e:
        raise _ToolError(str(e)) from e
    for finding in report.findings:
        click.echo(str(finding))
    kinds = [f.kind for f in report.findings]
    tally = ", ".join(f"{kinds.count(kind)} {kind.value}" for kind in FindingKind)
    segments = f"segments={len(report.segments)} file_bytes={report.file_bytes}"
    click.echo(f"verified {segments} {_counts_line(report.total)}")
    limits = report.limits
    state = report.replica_state
    line = (
        f"limits max_event_bytes={limits.max_event_bytes} max_batch_bytes={limits.max_batch_bytes}"
    )
    if state is not None:
        line += (
            f"; replica committed_floor={state.committed_floor} highest_epoch={state.highest_epoch}"
        )
    click.echo(line)
    status = report.status
    verdict = {
        VerifyStatus.CLEAN: "clean",
        VerifyStatus.TORN_TAIL: "torn tail only (opening the log truncates it)",
        VerifyStatus.CORRUPT: "CORRUPT",
    }[status]
    click.echo(f"findings: {tally}; result: {verdict}")
    if status is VerifyStatus.CORRUPT:
        raise SystemExit(EXIT_CORRUPT)
    if status is VerifyStatus.TORN_TAIL:
        raise SystemExit(EXIT_TORN_TAIL)


# --- formatting --------------------------------------------------------------------------


def _iso_utc(ms: int) -> str:
    try:
        moment = _EPOCH_START + timedelta(milliseconds=ms)
    except OverflowError:
        return "out-of-range"
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _frame_line(frame: CheckedFrame) -> str:
    h = frame.header
    return (
        f"frame offsets=[{h.base_offset},{h.end_offset}) count={h.count} epoch={h.epoch} "
        f"ingest_ms={h.ingest_time_ms} ingest={_iso_utc(h.ingest_time_ms)} "
        f"position={frame.position} frame_bytes={h.frame_bytes} payload_bytes={h.payload_bytes} "
        f"uncompressed_bytes={frame.uncompressed_bytes} codec={frame.codec} "
        f"crc=0x{h.crc:08x} crc_ok=true"
    )


def _frame_json(frame: CheckedFrame) -> dict[str, Any]:
    h = frame.header
    return {
        "type": "frame",
        "segment": str(frame.segment),
        "position": frame.position,
        "base_offset": h.base_offset,
        "end_offset": h.end_offset,
        "count": h.count,
        "epoch": h.epoch,
        "ingest_time_ms": h.ingest_time_ms,
        "ingest_time": _iso_utc(h.ingest_time_ms),
        "frame_bytes": h.frame_bytes,
        "payload_bytes": h.payload_bytes,
        "uncompressed_bytes": frame.uncompressed_bytes,
        "codec": frame.codec,
        "crc": h.crc,
        "crc_ok": True,
    }


def _event_json(offset: int, event: Event) -> dict[str, Any]:
    return {
        "offset": offset,
        "stream": event.stream,
        "attributes": dict(event.attributes),
        "producer_id": event.producer_id,
        "seq": event.seq,
    }


def _finding_json(finding: Finding) -> dict[str, Any]:
    return {
        "kind": finding.kind.value,
        "path": str(finding.path),
        "position": finding.position,
        "offset": finding.offset,
        "reason": finding.reason,
    }


def _counts_line(c: Counts) -> str:
    span = "none" if c.first_offset is None else f"[{c.first_offset},{(c.last_offset or 0) + 1})"
    ratio = "n/a" if c.compression_ratio is None else f"{c.compression_ratio:.2f}"
    epochs = ",".join(f"{epoch}@{first}" for epoch, first in c.epochs) or "none"
    return (
        f"offsets={span} frames={c.frames} events={c.events} frame_bytes={c.frame_bytes} "
        f"payload_bytes={c.payload_bytes} uncompressed_bytes={c.uncompressed_bytes} "
        f"compression={ratio} epochs={epochs}"
    )


def _counts_json(c: Counts) -> dict[str, Any]:
    return {
        "frames": c.frames,
        "events": c.events,
        "frame_bytes": c.frame_bytes,
        "payload_bytes": c.payload_bytes,
        "uncompressed_bytes": c.uncompressed_bytes,
        "compression_ratio": c.compression_ratio,
        "first_offset": c.first_offset,
        "last_offset": c.last_offset,
        "epochs": [{"epoch": epoch, "first_offset": first} for epoch, first in c.epochs],
    }
