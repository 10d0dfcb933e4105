"""Transcript tests of the replication cores, and the Shipper's commit rule as a table.

Each ``transcripts/*.txt`` file is a scenario in the style of etcd raft's ``testdata``
(run by ``interaction_test.go``): blocks separated by blank lines, each block one or
more steps, a ``----`` line, and the output those steps produce — one line per action
or delivered message (see ``harness.py`` for the steps). A block of ``#`` lines only is
commentary. ``pytest tests/replica/test_transcripts.py --rewrite-transcripts`` (the
option lives in ``tests/replica/conftest.py``, so name this directory or file; or set
``WALREP_REWRITE_TRANSCRIPTS=1`` with any invocation) rewrites the expected parts from
what the cores do now; review the diff before keeping it. Invariant violations raise
and are never written into a file.
"""

from __future__ import annotations

import difflib
import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.replica.harness import Harness, StepError
from walrep.replica.shipper import Committed, Shipper, ShipperConfig, Standby

TRANSCRIPTS = Path(__file__).parent / "transcripts"
SEPARATOR = "----"


# --- the datadriven format -----------------------------------------------------------------


@dataclass
class Chunk:
    """Lines between blank lines: commentary, or steps with their expected output."""

    line: int  # 1-based line of the chunk's first line
    steps: list[str]  # step and comment lines, verbatim
    expected: list[str] | None  # None for a commentary chunk


def parse(text: str) -> list[Chunk]:
    chunks: list[Chunk] = []
    lines = text.splitlines()
    start = 0
    while start < len(lines):
        if not lines[start].strip():
            start += 1
            continue
        end = start
        while end < len(lines) and lines[end].strip():
            end += 1
        body = lines[start:end]
        if SEPARATOR in body:
            cut = body.index(SEPARATOR)
            chunks.append(Chunk(start + 1, body[:cut], body[cut + 1 :]))
        else:
            if any(not line.lstrip().startswith("#") for line in body):
                raise StepError(f"line {start + 1}: steps without a {SEPARATOR!r} line")
            chunks.append(Chunk(start + 1, body, None))
        start = end
    return chunks


def render(chunks: list[Chunk]) -> str:
    parts = []
    for chunk in chunks:
        lines = list(chunk.steps)
        if chunk.expected is not None:
            lines += [SEPARATOR, *chunk.expected]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def execute(path: Path) -> tuple[str, str]:
    """(the file as it is, the file with the output the cores produce now)."""
    text = path.read_text()
    chunks = parse(text)
    harness = Harness()
    actual: list[Chunk] = []
    for chunk in chunks:
        if chunk.expected is None:
            actual.append(chunk)
            continue
        output: list[str] = []
        for offset, step in enumerate(chunk.steps):
            if step.lstrip().startswith("#"):
                continue
            try:
                output += harness.run(step)
            except StepError as e:
                raise StepError(f"{path.name}:{chunk.line + offset}: {e}") from e
        actual.append(Chunk(chunk.line, chunk.steps, output or ["ok"]))
    return text, render(actual)


def rewriting(config: pytest.Config) -> bool:
    return bool(config.getoption("--rewrite-transcripts")) or (
        os.environ.get("WALREP_REWRITE_TRANSCRIPTS") == "1"
    )


SCENARIOS = sorted(TRANSCRIPTS.glob("*.txt"))


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_transcript(path: Path, request: pytest.FixtureRequest) -> None:
    expected, actual = execute(path)
    if rewriting(request.config):
        if actual != expected:
            path.write_text(actual)
        return
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                f"{path.name} (expected)",
                f"{path.name} (actual)",
            )
        )
        pytest.fail(
            f"{path.name}: the cores' output differs (rewrite with --rewrite-transcripts "
            f"and review the diff if the change is intended):\n{diff}",
            pytrace=False,
        )


def test_there_are_scenarios() -> None:
    assert len(SCENARIOS) >= 14, [p.name for p in SCENARIOS]


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_the_format_round_trips(path: Path) -> None:
    """Rewriting a file with its own expected output changes nothing (stable layout)."""
    text = path.read_text()
    assert render(parse(text)) == text


def test_a_step_without_a_separator_is_refused() -> None:
    with pytest.raises(StepError, match="line 3"):
        parse("# comment\n\nconnect\n")


def test_an_unknown_step_is_refused() -> None:
    with pytest.raises(StepError, match="unknown step"):
        Harness().run("fly a->p")


# --- the commit rule as a table --------------------------------------------------------------

# (local durable, acked) pairs: below, equal and above each other.
POINTS = [(10, 4), (4, 10), (7, 7), (0, 5), (5, 0)]

COUNTS = {  # does the standby's ack bound the commit offset? (ack_all, state) -> bool
    (True, Standby.OUT_OF_SYNC): False,
    (True, Standby.MARKING_IN): True,  # the record may already say "in sync"
    (True, Standby.IN_SYNC): True,
    (True, Standby.MARKING_OUT): True,  # "out of sync" is not recorded yet
    (False, Standby.OUT_OF_SYNC): False,
    (False, Standby.MARKING_IN): False,
    (False, Standby.IN_SYNC): False,
    (False, Standby.MARKING_OUT): False,
}


def test_the_table_covers_every_state() -> None:
    assert set(COUNTS) == set(itertools.product([True, False], Standby))


def shipper_in(state: Standby, ack_all: bool, acked: int, committed: int = 0) -> Shipper:
    shipper = Shipper(
        "g1",
        "a1",
        b"secret",
        epoch=1,
        epoch_end=lambda epoch: (0, 0),
        log_start=0,
        log_end=100,
        durable_end=0,
        standby="p1",
        standby_in_sync=True,
        config=ShipperConfig(ack_all=ack_all),
    )
    shipper.standby_state = state
    shipper.acked = acked
    shipper.committed = committed
    return shipper


@pytest.mark.parametrize(("ack_all", "state"), sorted(COUNTS, key=str))
@pytest.mark.parametrize(("local", "acked"), POINTS)
def test_commit_rule(ack_all: bool, state: Standby, local: int, acked: int) -> None:
    shipper = shipper_in(state, ack_all, acked)
    expected = min(local, acked) if COUNTS[ack_all, state] else local
    actions = shipper.local_durable_to(local)
    assert shipper.committed == expected
    assert actions == ([Committed(expected)] if expected > 0 else [])


@pytest.mark.parametrize(("ack_all", "state"), sorted(COUNTS, key=str))
@pytest.mark.parametrize(("local", "acked"), POINTS)
def test_the_commit_offset_never_goes_back(
    ack_all: bool, state: Standby, local: int, acked: int
) -> None:
    shipper = shipper_in(state, ack_all, acked, committed=8)
    expected = max(8, min(local, acked) if COUNTS[ack_all, state] else local)
    actions = shipper.local_durable_to(local)
    assert shipper.committed == expected
    assert actions == ([Committed(expected)] if expected > 8 else [])
