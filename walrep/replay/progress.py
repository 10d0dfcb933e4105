"""The progress display of a replay: a rich bar with rate and ETA on a terminal.

``display(total_from, total_to, enabled)`` is a context manager giving the callback the
runner calls after every batch with the engine's position (an offset). On a terminal
(stderr), or when forced, it draws the bar on stderr, refreshed by rich's own thread at
most 10 times a second, so a batch pays one attribute update; otherwise the callback
does nothing and nothing is drawn (plain or ``--json`` output stays clean).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Events per second over rich's recent samples."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} ev/s", style="progress.data.speed")


class OffsetColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        at = int(task.completed + task.fields.get("base", 0))
        end = int((task.total or 0) + task.fields.get("base", 0))
        return Text(f"offset {at:,}/{end:,}", style="progress.download")


def progress_wanted(flag: bool | None) -> bool:
    """``--progress``/``--no-progress``, else: is stderr a terminal?"""
    return sys.stderr.isatty() if flag is None else flag


def progress_console(flag: bool | None) -> Console:
    """stderr; drawn live also when not a terminal if ``--progress`` asked for it."""
    return Console(stderr=True, force_terminal=True if flag else None)


@contextmanager
def display(
    what: str, start: int, end: int, enabled: bool, console: Console | None = None
) -> Iterator[Callable[[int], None]]:
    """The runner's progress callback (see the module docstring)."""
    if not enabled:
        yield lambda _: None
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        OffsetColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        transient=False,
        refresh_per_second=10,
    )
    task = bar.add_task(what, total=max(end - start, 0), base=start)
    with bar:
        yield lambda offset: bar.update(task, completed=offset - start)
