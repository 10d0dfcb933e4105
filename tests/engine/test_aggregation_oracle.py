"""Aggregations against a brute-force oracle: every bucket recomputed from the raw events.

The oracle is the specification, written as plainly as possible: events one by one in
offset order; the watermark is the maximum event time so far; at each duration an event
whose bucket ends at or before ``watermark - retention`` is dropped (and counted);
otherwise it joins its bucket's group (a plain dict group-by). At the end, buckets
whose end + retention <= watermark are gone. Sums of doubles are ``math.fsum``
(correctly rounded, as the engine's exact sums), min/max/distinct of doubles compare
floats, carried attributes are the last event's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from walrep.engine.app import App, avg, count, distinct_count, max_, min_, sum_
from walrep.engine.core import Engine
from walrep.engine.timeunits import Duration, bucket_start_ms, next_bucket_start_ms
from walrep.log.frame import Event
from walrep.log.types import Record

from .test_timeunits import ms

ANCHORS = [  # month, year and leap-day boundaries (UTC)
    ms(2024, 2, 28, 23, 59, 58),
    ms(2024, 2, 29, 23, 59, 59),
    ms(2024, 3, 1),
    ms(2023, 12, 31, 23, 59, 59),
    ms(2024, 1, 1),
    ms(2024, 4, 30, 23, 59),
]


def make_app(retention: dict[str, str | None] | None) -> App:
    app = App("oracle", version="t1")
    app.stream(
        "S",
        {"k": "string", "j": "int", "v": "long", "d": "double", "c": "string", "ts": "long"},
        timestamp="ts",
    )
    app.stream(
        "T", {"k": "string", "j": "int", "w": "long", "c": "string", "ts": "long"}, timestamp="ts"
    )
    app.aggregation(
        "Main",
        from_="S",
        group_by=["k", "j"],
        aggregates=[
            count("n"),
            sum_("v"),
            sum_("dsum", of="d"),
            avg("davg", of="d"),
            min_("vmin", of="v"),
            max_("dmax", of="d"),
            distinct_count("dd", of="d"),
            distinct_count("cc", of="c"),
            sum_("big", of=lambda e: e["v"] * 10**15, type="long"),
        ],
        carried=["c", "d"],
        retention=retention,
    )
    app.aggregation(
        "Both",
        from_=["S", "T"],
        group_by=["k"],
        aggregates=[
            count("n"),
            sum_("s_count", of={"S": 1, "T": 0}),
            sum_("t_value", of={"S": 0, "T": "w"}),
            max_("vmax", of={"S": "v", "T": "w"}),
        ],
        carried=["c"],
        every=("min", "month"),
        retention=retention and {k: v for k, v in retention.items() if k not in ("sec", "year")},
    )
    app.table(
        "Last", from_="S", key=["k"], values=[max_("last_ts", of="ts"), count("n")], carried=["c"]
    )
    return app


PURGING = make_app(
    {"sec": "3 sec", "min": "2 min", "hour": "2 hours", "day": "2 days", "month": "40 days"}
)
KEEPING = make_app({"year": None})


@dataclass
class Acc:
    n: int = 0
    v: int = 0
    doubles: list[float] = field(default_factory=list)
    vmin: int | None = None
    dmax: float | None = None
    dd: set[float] = field(default_factory=set)
    cc: set[str] = field(default_factory=set)
    carried: tuple[Any, ...] = ()
    s_count: int = 0
    t_value: int = 0


def oracle(
    events: Sequence[tuple[str, dict[str, Any]]], app: App, agg_name: str
) -> tuple[dict[tuple[Duration, int, tuple[Any, ...]], Acc], list[int]]:
    spec = next(a for a in app.aggregations if a.name == agg_name)
    keep = dict(spec.retention_ms)
    buckets: dict[tuple[Duration, int, tuple[Any, ...]], Acc] = {}
    late = [0] * len(spec.durations)
    watermark: int | None = None
    for stream, e in events:
        if stream not in spec.sources:
            continue
        t = e["ts"]
        watermark = t if watermark is None else max(watermark, t)
        for li, duration in enumerate(spec.durations):
            start = bucket_start_ms(duration, t)
            end = next_bucket_start_ms(duration, start)
            r = keep[duration]
            if r is not None and end + r <= watermark:
                late[li] += 1
                continue
            key = tuple(e[g] for g in spec.group_by)
            acc = buckets.setdefault((duration, start, key), Acc())
            acc.n += 1
            acc.carried = tuple(e[c] for c in spec.carried)
            if agg_name == "Both":  # count, S events, sum of w, max over v (S) and w (T)
                value = e["v"] if stream == "S" else e["w"]
                acc.dmax = value if acc.dmax is None else max(acc.dmax, value)
                acc.s_count += stream == "S"
                acc.t_value += e["w"] if stream == "T" else 0
                continue
            d = e["d"] + 0.0
            acc.v += e["v"]
            acc.doubles.append(e["d"])
            acc.vmin = e["v"] if acc.vmin is None else min(acc.vmin, e["v"])
            acc.dmax = d if acc.dmax is None else max(acc.dmax, d)
            acc.dd.add(d)
            acc.cc.add(e["c"])
    assert watermark is not None or not buckets
    for duration, start, key in list(buckets):
        r = keep[duration]
        end = next_bucket_start_ms(duration, start)
        if r is not None and watermark is not None and end + r <= watermark:
            del buckets[(duration, start, key)]
    return buckets, late


def expected_values(agg_name: str, acc: Acc) -> tuple[Any, ...]:
    if agg_name == "Main":
        return (
            acc.n,
            acc.v,
            math.fsum(acc.doubles),
            math.fsum(acc.doubles),  # AGG_SUM_davg
            acc.vmin,
            acc.dmax,
            len(acc.dd),
            len(acc.cc),
            acc.v * 10**15,
            acc.n,  # AGG_COUNT
            acc.carried[0],
            float(acc.carried[1]),
        )
    return (acc.n, acc.s_count, acc.t_value, acc.dmax, acc.carried[0])


def engine_rows(
    engine: Engine, agg_name: str
) -> dict[tuple[Duration, int, tuple[Any, ...]], tuple[Any, ...]]:
    agg = engine.aggregation(agg_name)
    out = {}
    for duration in agg.durations:
        rows = agg.rows(duration, -(2**62), 2**62)
        assert rows == sorted(rows, key=lambda r: (r.agg_timestamp_ms, r.key))
        for row in rows:
            out[(duration, row.agg_timestamp_ms, row.key)] = row.values
    return out


def run(app: App, events: Sequence[tuple[str, dict[str, Any]]], cuts: Sequence[int]) -> Engine:
    engine = Engine([app], digest_interval=10**9)
    records = [Record(n, 1, 0, Event(s, a)) for n, (s, a) in enumerate(events)]
    pos = 0
    for cut in [*sorted(set(cuts)), len(records)]:
        if cut > pos:
            engine.apply(records[pos:cut])
            pos = cut
    return engine


def check(app: App, events: list[tuple[str, dict[str, Any]]], cuts: list[int]) -> Engine:
    engine = run(app, events, cuts)
    for agg_name in ("Main", "Both"):
        want, late = oracle(events, app, agg_name)
        got = engine_rows(engine, agg_name)
        assert got.keys() == want.keys()
        for where, acc in want.items():
            assert got[where] == expected_values(agg_name, acc), where
        assert engine.aggregation(agg_name).late_dropped == late
    last: dict[str, tuple[int, int, str]] = {}
    for stream, e in events:
        if stream == "S":
            prev = last.get(e["k"])
            last[e["k"]] = (
                max(e["ts"], prev[0]) if prev else e["ts"],
                (prev[1] if prev else 0) + 1,
                e["c"],
            )
    assert engine.table("Last").rows() == [
        ((k,), (t, n, c)) for k, (t, n, c) in sorted(last.items())
    ]
    return engine


doubles = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.sampled_from([0.1, 0.2, 0.3, -0.0, 0.0, 1e300, -1e300, 5e-324, 3.0]),
    st.integers(min_value=-5, max_value=5),  # ints are accepted for doubles
)


@st.composite
def event_lists(draw: st.DrawFn, max_events: int = 60) -> list[tuple[str, dict[str, Any]]]:
    n = draw(st.integers(min_value=1, max_value=max_events))
    anchor = draw(st.sampled_from(ANCHORS))
    out = []
    for _ in range(n):
        stream = draw(st.sampled_from(["S", "S", "S", "T"]))
        ts = anchor + draw(
            st.one_of(
                st.integers(min_value=-3_000, max_value=3_000),  # around the boundary
                st.integers(min_value=-400_000, max_value=400_000),  # minutes away: purges
                st.sampled_from([-40 * 86_400_000, 3 * 86_400_000, 45 * 86_400_000]),  # months
            )
        )
        attrs: dict[str, Any] = {
            "k": draw(st.sampled_from(["a", "b", "c"])),
            "j": draw(st.integers(min_value=0, max_value=1)),
            "c": draw(st.sampled_from(["x", "y", "zz"])),
            "ts": ts,
        }
        if stream == "S":
            attrs["v"] = draw(st.integers(min_value=-(2**40), max_value=2**40))
            attrs["d"] = draw(doubles)
        else:
            attrs["w"] = draw(st.integers(min_value=-100, max_value=100))
        out.append((stream, attrs))
    return out


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_lists(), st.lists(st.integers(min_value=0, max_value=60), max_size=5))
def test_purging_app_matches_oracle(
    events: list[tuple[str, dict[str, Any]]], cuts: list[int]
) -> None:
    check(PURGING, events, cuts)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_lists(), st.lists(st.integers(min_value=0, max_value=60), max_size=5))
def test_keeping_app_matches_oracle(
    events: list[tuple[str, dict[str, Any]]], cuts: list[int]
) -> None:
    check(KEEPING, events, cuts)


def test_hand_made_leap_day_and_year_rollover() -> None:
    """A few events whose every bucket is known by heart."""
    t1 = ms(2024, 2, 29, 23, 59, 59) + 500
    t2 = ms(2024, 3, 1)
    t3 = ms(2024, 12, 31, 23, 59, 59)
    t4 = ms(2025, 1, 1, 0, 0, 0) + 1
    events = [
        ("S", {"k": "a", "j": 0, "v": 1, "d": 0.1, "c": "x", "ts": t1}),
        ("S", {"k": "a", "j": 0, "v": 2, "d": 0.2, "c": "y", "ts": t2}),
        ("S", {"k": "a", "j": 0, "v": 4, "d": 0.3, "c": "z", "ts": t3}),
        ("S", {"k": "a", "j": 0, "v": 8, "d": -0.0, "c": "w", "ts": t4}),
    ]
    engine = check(KEEPING, events, [1, 3])
    agg = engine.aggregation("Main")
    days = agg.rows(Duration.DAYS, 0, 2**62)
    assert [r.agg_timestamp_ms for r in days] == [
        ms(2024, 2, 29),
        ms(2024, 3, 1),
        ms(2024, 12, 31),
        ms(2025, 1, 1),
    ]
    months = {r.agg_timestamp_ms: r.values for r in agg.rows(Duration.MONTHS, 0, 2**62)}
    assert sorted(months) == [ms(2024, 2, 1), ms(2024, 3, 1), ms(2024, 12, 1), ms(2025, 1, 1)]
    years = {r.agg_timestamp_ms: r.values for r in agg.rows(Duration.YEARS, 0, 2**62)}
    assert years[ms(2024, 1, 1)][:3] == (3, 7, math.fsum([0.1, 0.2, 0.3]))
    assert years[ms(2024, 1, 1)][-2:] == ("z", 0.3)  # carried: the last event of 2024
    assert years[ms(2025, 1, 1)][5] == 0.0 and math.copysign(1, years[ms(2025, 1, 1)][5]) == 1
    assert agg.rows(Duration.YEARS, ms(2025, 1, 1), 2**62)[0].key == ("a", 0)


def test_late_event_lands_in_its_bucket_until_purged() -> None:
    base = ms(2024, 5, 1, 12)
    e = lambda ts, v: ("S", {"k": "a", "j": 0, "v": v, "d": 1.0, "c": "x", "ts": ts})  # noqa: E731
    events = [
        e(base, 1),
        e(base + 2_500, 2),  # watermark base+2.5s: sec bucket `base` (end +1s, keep 3s) stays
        e(base + 10, 4),  # late but kept: joins the first second
        e(base + 60_000, 8),  # watermark +60s: the early sec buckets are purged
        e(base + 20, 16),  # late: dropped at the seconds, counted in its minute
    ]
    engine = check(PURGING, events, [2, 4])
    agg = engine.aggregation("Main")
    assert agg.late_dropped[0] == 1 and agg.late_dropped[1:] == [0, 0, 0, 0, 0]
    minute = agg.rows(Duration.MINUTES, base, base + 1)
    assert minute[0].values[:2] == (4, 1 + 2 + 4 + 16)
    assert [r.agg_timestamp_ms for r in agg.rows(Duration.SECONDS, 0, 2**62)] == [base + 60_000]
