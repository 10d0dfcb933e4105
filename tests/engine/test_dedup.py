"""Idempotent producers: Kafka's sequence rule, the bounded table, the ingest overlay."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from walrep.engine.app import App, count
from walrep.engine.core import Engine
from walrep.engine.dedup import (
    ACCEPT,
    IN_FLIGHT,
    TOO_OLD,
    Check,
    PendingProducers,
    ProducerTable,
    Verdict,
)
from walrep.log.frame import Event
from walrep.log.types import Record


def dup(offset: int) -> Check:
    return Check(Verdict.DUPLICATE, offset=offset)


def gap(expected: int) -> Check:
    return Check(Verdict.OUT_OF_ORDER, expected_seq=expected)


def test_kafka_rule_against_the_table() -> None:
    table = ProducerTable(max_runs=2)
    assert table.check("p", 17) == ACCEPT  # an unknown producer starts anywhere
    assert table.record("p", 17, 100, 0)
    assert table.record("p", 18, 101, 0)  # same run: consecutive offsets
    assert table.record("p", 19, 105, 0)  # a new run: other producers came between
    assert table.get("p") == ((17, 100, 2), (19, 105, 1))
    assert table.check("p", 20) == ACCEPT
    assert table.check("p", 22) == gap(20)
    assert table.check("p", 19) == dup(105)
    assert table.check("p", 17) == dup(100)
    assert table.record("p", 20, 107, 0)  # a third run pushes the oldest out (max_runs=2)
    assert table.check("p", 18) == TOO_OLD
    assert table.check("p", 19) == dup(105)
    assert not table.record("p", 19, 108, 0)  # a logged duplicate: skipped
    assert table.record("p", 25, 109, 0)  # a logged gap: accepted, runs start afresh
    assert table.get("p") == ((25, 109, 1),)


def test_eviction_drops_the_oldest_last_append() -> None:
    table = ProducerTable(max_producers=3)
    for n, pid in enumerate("abc"):
        table.record(pid, 0, n, 0)
    table.record("a", 1, 3, 0)  # a is now the newest
    table.record("d", 0, 4, 0)  # evicts b (last append at offset 1)
    assert sorted(table.entries) == ["a", "c", "d"]
    table.record("e", 0, 5, 0)  # evicts c
    assert sorted(table.entries) == ["a", "d", "e"]
    restored = ProducerTable(max_producers=3)
    restored.load(dict(sorted(table.entries.items())))  # any order: put back by offset
    restored.record("f", 0, 6, 0)
    table.record("f", 0, 6, 0)
    assert restored.entries == table.entries and list(restored.entries) == list(table.entries)


def test_copy_on_write_across_generations() -> None:
    table = ProducerTable()
    table.record("p", 0, 0, 0)
    frozen = table.entries
    table.record("p", 1, 1, 1)  # a newer generation: the dict is copied first
    assert frozen == {"p": ((0, 0, 1),)}
    assert table.get("p") == ((0, 0, 2),)


def test_pending_overlay_makes_check_and_append_atomic() -> None:
    table = ProducerTable()
    table.record("p", 0, 10, 0)
    pending = PendingProducers(table)
    assert pending.reserve("p", 1) == ACCEPT
    assert pending.reserve("p", 1) == IN_FLIGHT  # a retry racing its original
    assert pending.reserve("p", 2) == ACCEPT  # pipelined
    assert pending.reserve("p", 4) == gap(3)
    pending.appended("p", 1, 11)
    assert pending.reserve("p", 1) == dup(11)  # appended, not yet applied
    assert pending.reserve("p", 0) == dup(10)  # from the engine's table
    pending.released("p", 2)  # its append failed: the producer resends from 2
    assert pending.reserve("p", 3) == gap(2)
    assert pending.reserve("p", 2) == ACCEPT
    pending.appended("p", 2, 12)
    table.record("p", 1, 11, 0)
    table.record("p", 2, 12, 0)
    pending.trim(13)  # the engine applied up to 13
    assert len(pending) == 0
    assert pending.reserve("p", 2) == dup(12)
    assert pending.reserve("p", 3) == ACCEPT


def test_released_without_reservation_is_harmless() -> None:
    pending = PendingProducers(ProducerTable())
    pending.released("q", 5)
    assert pending.reserve("q", 5) == ACCEPT
    pending.released("q", 5)
    assert len(pending) == 0
    assert pending.reserve("q", 9) == ACCEPT  # unknown again: any start


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("pqr"), st.integers(min_value=0, max_value=6)), max_size=40)
)
def test_ingest_through_the_overlay_never_appends_twice(attempts: list[tuple[str, int]]) -> None:
    """Whatever producers send, the log the overlay lets through has no duplicates and
    no gaps per producer after its first event, and the engine applies all of it."""
    table = ProducerTable()
    pending = PendingProducers(table)
    log: list[tuple[str, int]] = []
    for pid, seq in attempts:
        if pending.reserve(pid, seq).verdict is Verdict.ACCEPT:
            pending.appended(pid, seq, len(log))
            log.append((pid, seq))
    for pid in "pqr":
        seqs = [s for p, s in log if p == pid]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else True
    for offset, (pid, seq) in enumerate(log):
        assert table.record(pid, seq, offset, 0)
    pending.trim(len(log))
    assert len(pending) == 0


def test_engine_skips_logged_duplicates() -> None:
    app = App("d", version="1")
    app.stream("S", {"k": "string"})
    app.aggregation("N", from_="S", group_by=["k"], aggregates=[count("n")])
    events = [Event("S", {"k": "a"}, "p", s) for s in (0, 1, 1, 2, 0)] + [Event("S", {"k": "a"})]
    engine = Engine([app])
    engine.apply([Record(n, 1, 5000, e) for n, e in enumerate(events)])
    assert engine.duplicates_skipped == 2
    assert engine.producers.get("p") == ((0, 0, 2), (2, 3, 1))
    (row,) = engine.aggregation("N").rows(engine.aggregation("N").durations[0], 0, 10**6)
    assert row.values == (4,)
