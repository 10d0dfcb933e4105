"""Model-based test: ``Wal`` and ``MemoryLog`` against a plain Python list, by Hypothesis.

The machine appends batches of random events (blocking ``append_sync``, real fsync for
``Wal``), reopens the log (``Wal.open`` of its directory, ``MemoryLog.recover`` of its
disk image), cuts its tail with ``truncate_after``, drops old segments with
``delete_before`` and bumps the writer's epoch. After every step the whole log is read
back and compared with the model: offsets, events, epochs, ingest times, the epoch
history and the segment layout. A tiny ``LogConfig`` makes segments roll every few
frames and larger batches go through lz4.
"""

from __future__ import annotations

import itertools
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.log.helpers import TINY
from walrep.errors import LimitExceededError, OffsetOutOfRangeError
from walrep.log import Event, MemoryLog, Record, Wal
from walrep.log.frame import FLAG_LZ4

STREAMS = st.sampled_from(["api", "web", "jobs", "ünïcødé", "s" * 12])
VALUES = st.one_of(
    st.integers(-(2**53), 2**53),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    # Repeated strings, so that batches above the threshold compress well.
    st.sampled_from(["/api/v1/orders", "GET /api/v1/orders?page=1&size=50", "x" * 60, ""]),
    st.text(st.characters(codec="utf-8"), max_size=8),
)
ATTRS = st.dictionaries(st.sampled_from(["path", "status", "ms", "user", "note", "q"]), VALUES)
EVENTS = st.one_of(
    st.builds(Event, STREAMS, ATTRS),
    st.builds(Event, STREAMS, ATTRS, st.sampled_from(["p-1", "p-2"]), st.integers(0, 2**40)),
)
BATCHES = st.lists(EVENTS, min_size=1, max_size=8)


def _row(e: Event) -> bytes:
    """The event's JSON array, as the frame format specifies it (independent of walrep)."""
    row: list[Any] = [e.stream, e.attributes]
    if e.producer_id is not None:
        row += [e.producer_id, e.seq]
    return orjson.dumps(row)


def _fits(events: list[Event]) -> bool:
    rows = [_row(e) for e in events]
    raw_bytes = 2 + sum(len(r) for r in rows) + len(rows) - 1
    return all(len(r) <= TINY.max_event_bytes for r in rows) and raw_bytes <= TINY.max_batch_bytes


Log = Wal | MemoryLog


class WalModel(RuleBasedStateMachine):
    def __init__(self, directory: Path | None, stats: Counter[str]) -> None:
        super().__init__()
        self.directory = directory  # None: the MemoryLog
        self.stats = stats
        self.model: list[Record] = []  # index == offset; entries below log_start are stale
        self.log_start = 0
        self.epoch = 1
        self.clock = itertools.count(1_700_000_000_000)
        self.wal: Log | None = None

    @property
    def log_end(self) -> int:
        return len(self.model)

    @property
    def w(self) -> Log:
        assert self.wal is not None
        return self.wal

    @initialize()
    def open_log(self) -> None:
        self.stats["examples"] += 1
        if self.directory is None:
            self.wal = MemoryLog.create(TINY)
        else:
            self.wal = Wal.open(self.directory, TINY)
        assert self.w.recovery.lines() == []
        assert (self.w.log_start, self.w.log_end, self.w.last_epoch) == (0, 0, 0)

    def teardown(self) -> None:
        if self.wal is not None:
            self.wal.close()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    # --- rules ---------------------------------------------------------------------------

    @rule(events=BATCHES)
    def append(self, events: list[Event]) -> None:
        ingest = next(self.clock)
        sizes = [s[2] for s in self.w.segments()]
        if not _fits(events):
            with pytest.raises(LimitExceededError):
                self.w.append_sync(events, epoch=self.epoch, ingest_time_ms=ingest)
            assert [s[2] for s in self.w.segments()] == sizes
            self.stats["refused"] += 1
            return
        result = self.w.append_sync(events, epoch=self.epoch, ingest_time_ms=ingest)
        assert (result.base_offset, result.count) == (self.log_end, len(events))
        self.model += [
            Record(self.log_end + i, self.epoch, ingest, e) for i, e in enumerate(events)
        ]

    @rule(batches=st.lists(BATCHES, min_size=4, max_size=12))
    def append_burst(self, batches: list[list[Event]]) -> None:
        """Several appends in one step, so that logs grow past a few segments."""
        for events in batches:
            self.append(events)

    @rule(step=st.integers(1, 3))
    def bump_epoch(self, step: int) -> None:
        self.epoch += step

    @rule()
    def reopen(self) -> None:
        epochs_before = self.w.epochs.entries
        self.w.close()
        if isinstance(self.w, MemoryLog):
            self.wal = MemoryLog.recover(self.w.disk_image(), TINY)
        else:
            self.wal = Wal.open(self.w.directory, TINY)
        # A clean close leaves nothing to recover: no torn tail, no stale index, no repair.
        assert self.w.recovery.lines() == []
        assert self.w.epochs.entries == epochs_before
        assert self.w.durable_end == self.w.log_end

    @rule(data=st.data())
    def truncate_after(self, data: st.DataObject) -> None:
        near_end = st.integers(max(self.log_start, self.log_end - 12), self.log_end)
        anywhere = st.integers(self.log_start, self.log_end)
        offset = data.draw(near_end | anywhere, label="truncate_after")
        if 0 < offset < self.log_end and self.model[offset - 1].ingest_time_ms == (
            self.model[offset].ingest_time_ms
        ):
            self.stats["cut inside a batch"] += 1
        self.w.truncate_after(offset)
        del self.model[offset:]
        assert self.w.log_end == offset
        assert all(e.start_offset < offset for e in self.w.epochs.entries)

    @precondition(lambda self: self.log_end > 0)
    @rule(data=st.data())
    def delete_before(self, data: st.DataObject) -> None:
        bases = [s[0] for s in self.w.segments()]
        near_a_base = st.builds(int.__add__, st.sampled_from(bases), st.integers(-1, 1))
        offset = data.draw(st.integers(0, self.log_end + 2) | near_a_base, label="delete_before")
        start = self.w.delete_before(offset)
        assert start == self.w.log_start
        assert start in bases  # whole segments only
        assert start >= self.log_start  # never moves back
        assert start <= max(offset, self.log_start)
        after = self.w.segments()
        assert after[-1][0] == bases[-1]  # the newest segment is never deleted
        assert len(after) == 1 or after[1][0] > offset  # and nothing deletable is left
        if start > self.log_start:
            self.stats["segments deleted"] += 1
        self.log_start = start

    @rule(data=st.data())
    def read_range(self, data: st.DataObject) -> None:
        start = data.draw(st.integers(self.log_start, self.log_end), label="from")
        end = data.draw(st.integers(start, self.log_end), label="to")
        assert list(self.w.read(start, end)) == self.model[start:end]
        assert list(self.w.read(start)) == self.model[start:]

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def log_matches_model(self) -> None:
        if self.wal is None:
            return
        self.stats["steps"] += 1
        wal = self.w
        assert wal.log_end == self.log_end
        assert wal.log_start == self.log_start
        got = list(wal.read(wal.log_start))
        assert got == self.model[self.log_start :]
        assert list(wal.read(wal.log_end)) == []
        epochs = [r.epoch for r in got]
        assert epochs == sorted(epochs)
        assert all(wal.epochs.epoch_at(r.offset) == r.epoch for r in got)
        assert wal.last_epoch <= self.epoch
        if wal.log_start > 0:
            with pytest.raises(OffsetOutOfRangeError):
                list(wal.read(wal.log_start - 1))
        with pytest.raises(OffsetOutOfRangeError):
            list(wal.read(wal.log_end + 1))

    @invariant()
    def segments_are_contiguous(self) -> None:
        if self.wal is None:
            return
        segments = self.w.segments()
        assert segments[0][0] == self.w.log_start
        assert segments[-1][1] == self.w.log_end
        for (_, end, size, path), (base, *_) in itertools.pairwise(segments):
            assert end == base
            assert 0 < size <= TINY.segment_bytes_max
            assert not isinstance(path, Path) or path.stat().st_size == size
        size, path = segments[-1][2], segments[-1][3]
        assert size <= TINY.segment_bytes_max
        assert not isinstance(path, Path) or path.stat().st_size == size
        self.stats["max segments"] = max(self.stats["max segments"], len(segments))
        self.stats["lz4 frames"] += sum(1 for f in self.w.frames() if f.header.flags & FLAG_LZ4)


@pytest.mark.parametrize("kind", ["wal", "memory"])
def test_log_matches_list_model(tmp_path: Path, kind: str) -> None:
    stats: Counter[str] = Counter()
    runs = itertools.count()

    def machine() -> WalModel:
        return WalModel(tmp_path / f"run-{next(runs)}" if kind == "wal" else None, stats)

    run_state_machine_as_test(
        machine,  # type: ignore[arg-type]  # a factory is accepted too
        settings=settings(
            max_examples=120,
            stateful_step_count=80,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
    # The run exercised what it is meant to: rolls, compression, mid-batch cuts, retention.
    assert stats["max segments"] >= 3, stats
    assert stats["lz4 frames"] > 0, stats
    assert stats["cut inside a batch"] > 0, stats
    assert stats["segments deleted"] > 0, stats
