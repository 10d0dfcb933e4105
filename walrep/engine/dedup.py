"""Idempotent producers: the dedup table (engine state) and the ingest path's overlay.

Kafka's rule, per producer: ``seq`` must be the last appended + 1; a smaller ``seq`` is a
duplicate, answered with the original offset while it is remembered (else "too old");
a larger one is out of order. A producer the table does not know (new, or evicted) may
start at any ``seq``.

Table (``ProducerTable``, part of engine state, so in every snapshot and the same on
both nodes): ``producer_id -> runs``, where runs ``((first_seq, first_offset, count),
...)`` (oldest first, at most ``max_runs``) map the producer's most recent sequence
numbers to offsets: ``first_seq + i`` was appended at ``first_offset + i``. A producer
appending a batch of consecutive events gets one run, so a retried batch of any size is
answered with its offsets as long as it is among the last ``max_runs`` runs.

Bound and eviction: at most ``max_producers`` producers; adding one more evicts the
producer whose last append has the lowest offset (the least recently active). Offsets
are unique, so the choice is deterministic; the table keeps its dict in that order
(an update moves the producer to the end).

Apply rule (``record``, in offset order): a known producer's ``seq <= last`` in the log
is a duplicate that an older ingest let through: the engine skips the event and counts
it; a gap is accepted (the log is the truth) and starts the producer's runs afresh.

``PendingProducers`` is the ingest path's overlay over the engine's table: a reservation
made before the offset is assigned, so a retry racing its own original (in flight, or
appended but not yet applied by the engine) is never appended twice.
"""

from __future__ import annotations

import enum
import heapq
from dataclasses import dataclass, field
from typing import Final

Runs = tuple[tuple[int, int, int], ...]  # ((first_seq, first_offset, count), ...)

MAX_PRODUCERS: Final = 100_000
MAX_RUNS: Final = 8


class Verdict(enum.Enum):
    ACCEPT = "accept"
    DUPLICATE = "duplicate"  # ``offset`` is the original one
    TOO_OLD = "sequence_too_old"  # a duplicate whose offset is no longer remembered
    OUT_OF_ORDER = "out_of_order_sequence"  # ``expected_seq`` would be accepted
    IN_FLIGHT = "in_flight"  # a duplicate of an append still in progress: retry later


@dataclass(frozen=True, slots=True)
class Check:
    verdict: Verdict
    offset: int | None = None
    expected_seq: int | None = None


ACCEPT: Final = Check(Verdict.ACCEPT)
TOO_OLD: Final = Check(Verdict.TOO_OLD)
IN_FLIGHT: Final = Check(Verdict.IN_FLIGHT)


def last_seq(runs: Runs) -> int:
    first, _, count = runs[-1]
    return first + count - 1


def last_offset(runs: Runs) -> int:
    _, offset, count = runs[-1]
    return offset + count - 1


def offset_of(runs: Runs, seq: int) -> int | None:
    """The offset ``seq`` was appended at, if the runs still cover it."""
    for first, offset, count in runs:
        if first <= seq < first + count:
            return offset + seq - first
    return None


def check_runs(runs: Runs | None, seq: int) -> Check:
    """Kafka's rule against one producer's runs (None: an unknown producer)."""
    if runs is None:
        return ACCEPT
    last = last_seq(runs)
    if seq == last + 1:
        return ACCEPT
    if seq > last:
        return Check(Verdict.OUT_OF_ORDER, expected_seq=last + 1)
    offset = offset_of(runs, seq)
    return TOO_OLD if offset is None else Check(Verdict.DUPLICATE, offset=offset)


class ProducerTable:
    """The dedup table in engine state (see the module docstring).

    Copy-on-write like the aggregation buckets: ``gen`` is the capture generation the
    dict was written under; the first write under a newer generation copies it, so a
    capture may keep ``entries`` as it is.
    """

    def __init__(self, *, max_producers: int = MAX_PRODUCERS, max_runs: int = MAX_RUNS) -> None:
        assert max_producers >= 1 and max_runs >= 1
        self.max_producers = max_producers
        self.max_runs = max_runs
        self.entries: dict[str, Runs] = {}  # ordered by last append offset, oldest first
        self.gen = 0

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, producer_id: str) -> Runs | None:
        return self.entries.get(producer_id)

    def check(self, producer_id: str, seq: int) -> Check:
        return check_runs(self.entries.get(producer_id), seq)

    def record(self, producer_id: str, seq: int, offset: int, gen: int) -> bool:
        """Apply one logged ``(producer_id, seq)`` at ``offset`` (offsets increase).
        False: a duplicate of an applied event, which the engine skips."""
        entries = self.entries
        runs = entries.get(producer_id)
        if runs is not None and seq <= last_seq(runs):
            return False
        if gen != self.gen:
            entries = self.entries = dict(entries)
            self.gen = gen
        if runs is None:
            if len(entries) >= self.max_producers:
                del entries[next(iter(entries))]  # the oldest last append
            entries[producer_id] = ((seq, offset, 1),)
            return True
        first, first_offset, count = runs[-1]
        if seq == first + count and offset == first_offset + count:
            new = (*runs[:-1], (first, first_offset, count + 1))
        elif seq == first + count:
            new = (*runs, (seq, offset, 1))[-self.max_runs :]
        else:  # a gap in the log: start afresh (runs cover consecutive seqs only)
            new = ((seq, offset, 1),)
        del entries[producer_id]  # move to the end: the newest last append
        entries[producer_id] = new
        return True

    def load(self, entries: dict[str, Runs]) -> None:
        """Install restored entries (any order; put back in last-append order)."""
        ordered = sorted(entries.items(), key=lambda item: last_offset(item[1]))
        self.entries = dict(ordered[-self.max_producers :])
        self.gen = 0


@dataclass
class _Pending:
    next_seq: int
    in_flight: set[int] = field(default_factory=set)
    appended: dict[int, int] = field(default_factory=dict)  # seq -> offset, not yet applied


class PendingProducers:
    """The ingest path's check, atomic with offset assignment (one event loop).

    ``reserve`` before the append (ACCEPT reserves the seq), then ``appended`` with the
    assigned offset or ``released`` if the append failed; ``trim(applied)`` after the
    engine applied events, to forget what its table now knows. A released seq rewinds
    the producer to it and forgets its later reservations: appends fail in order (a lost
    lease or a failed write fails every append behind it), so the client resends from
    there; should a forgotten one be appended after all, the engine skips the second copy.
    """

    def __init__(self, table: ProducerTable) -> None:
        self._table = table
        self._pending: dict[str, _Pending] = {}
        self._by_offset: list[tuple[int, str, int]] = []  # heap of (offset, producer, seq)

    def __len__(self) -> int:
        return len(self._pending)

    def reserve(self, producer_id: str, seq: int) -> Check:
        p = self._pending.get(producer_id)
        if p is None:
            found = self._table.check(producer_id, seq)
            if found.verdict is Verdict.ACCEPT:
                self._pending[producer_id] = _Pending(seq + 1, {seq})
            return found
        if seq == p.next_seq:
            p.next_seq += 1
            p.in_flight.add(seq)
            return ACCEPT
        if seq > p.next_seq:
            return Check(Verdict.OUT_OF_ORDER, expected_seq=p.next_seq)
        if seq in p.in_flight:
            return IN_FLIGHT
        offset = p.appended.get(seq)
        if offset is not None:
            return Check(Verdict.DUPLICATE, offset=offset)
        found = self._table.check(producer_id, seq)
        return found if found.verdict in (Verdict.DUPLICATE, Verdict.TOO_OLD) else TOO_OLD

    def appended(self, producer_id: str, seq: int, offset: int) -> None:
        p = self._pending.get(producer_id)
        if p is None:
            p = self._pending[producer_id] = _Pending(seq + 1)
        p.in_flight.discard(seq)
        p.appended[seq] = offset
        p.next_seq = max(p.next_seq, seq + 1)
        heapq.heappush(self._by_offset, (offset, producer_id, seq))

    def released(self, producer_id: str, seq: int) -> None:
        p = self._pending.get(producer_id)
        if p is None or seq not in p.in_flight:
            return
        p.in_flight = {s for s in p.in_flight if s < seq}
        p.next_seq = min(p.next_seq, seq)
        if not p.in_flight and not p.appended:
            del self._pending[producer_id]

    def trim(self, applied: int) -> None:
        """Forget appends below ``applied``: the engine's table holds them now."""
        heap = self._by_offset
        while heap and heap[0][0] < applied:
            _, producer_id, seq = heapq.heappop(heap)
            p = self._pending.get(producer_id)
            if p is None:
                continue
            p.appended.pop(seq, None)
            if not p.in_flight and not p.appended:
                del self._pending[producer_id]
