"""The progress display of a replay: a rich bar with rate and ETA on a terminal.

``display(what, start, end, enabled)`` is a context manager giving the callback the
runner calls after every batch with the engine's position (an offset). On a terminal
(stderr), or when forced, it draws the bar on stderr, redrawn from that callback at most
10 times a second (no refresh thread: one contending for the interpreter lock cost a
replay a tenth of its speed), so a batch pays a clock read; otherwise the callback does
nothing and nothing is drawn (plain or ``--json`` output stays clean).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

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

REDRAW_S: Final = 0.1


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
        auto_refresh=False,
    )
    task = bar.add_task(what, total=max(end - start, 0), base=start)
    shown = [0.0]

    def advance(offset: int) -> None:
        now = time.monotonic()
        if now - shown[0] >= REDRAW_S:
            bar.update(task, completed=offset - start, refresh=True)
            shown[0] = now

    with bar:
        yield advance
        bar.update(task, completed=end - start, refresh=True)
