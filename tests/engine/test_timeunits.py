"""UTC bucket arithmetic of walrep.engine.timeunits, against datetime."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from walrep.engine.timeunits import (
    ALL_DURATIONS,
    Duration,
    bucket_start_ms,
    durations_between,
    next_bucket_start_ms,
)


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def _reference_start(duration: Duration, time_ms: int) -> int:
    d = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=time_ms)
    if duration is Duration.SECONDS:
        d = d.replace(microsecond=0)
    elif duration is Duration.MINUTES:
        d = d.replace(second=0, microsecond=0)
    elif duration is Duration.HOURS:
        d = d.replace(minute=0, second=0, microsecond=0)
    elif duration is Duration.DAYS:
        d = d.replace(hour=0, minute=0, second=0, microsecond=0)
    elif duration is Duration.MONTHS:
        d = d.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    else:
        d = d.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    return round((d - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1000)


@pytest.mark.parametrize(
    ("duration", "time_ms", "start_ms", "next_ms"),
    [
        (
            Duration.SECONDS,
            ms(2024, 2, 29, 23, 59, 59) + 999,
            ms(2024, 2, 29, 23, 59, 59),
            ms(2024, 3, 1),
        ),
        (
            Duration.MINUTES,
            ms(2024, 2, 29, 12, 30, 5),
            ms(2024, 2, 29, 12, 30),
            ms(2024, 2, 29, 12, 31),
        ),
        (Duration.HOURS, ms(2023, 12, 31, 23, 0, 1), ms(2023, 12, 31, 23), ms(2024, 1, 1)),
        (Duration.DAYS, ms(2024, 2, 29, 6), ms(2024, 2, 29), ms(2024, 3, 1)),
        (Duration.DAYS, ms(2023, 2, 28, 6), ms(2023, 2, 28), ms(2023, 3, 1)),
        (Duration.MONTHS, ms(2024, 2, 29, 23, 59, 59), ms(2024, 2, 1), ms(2024, 3, 1)),
        (Duration.MONTHS, ms(2023, 12, 15), ms(2023, 12, 1), ms(2024, 1, 1)),
        (Duration.YEARS, ms(2024, 12, 31, 23, 59, 59) + 999, ms(2024, 1, 1), ms(2025, 1, 1)),
        (Duration.YEARS, ms(2025, 1, 1), ms(2025, 1, 1), ms(2026, 1, 1)),
        (Duration.SECONDS, -1, -1000, 0),
        (Duration.DAYS, -1, ms(1969, 12, 31), 0),
        (Duration.MONTHS, -1, ms(1969, 12, 1), 0),
    ],
)
def test_boundaries(duration: Duration, time_ms: int, start_ms: int, next_ms: int) -> None:
    assert bucket_start_ms(duration, time_ms) == start_ms
    assert next_bucket_start_ms(duration, start_ms) == next_ms


@given(
    st.integers(min_value=ms(1900, 1, 1), max_value=ms(2200, 1, 1)), st.sampled_from(ALL_DURATIONS)
)
def test_against_datetime(time_ms: int, duration: Duration) -> None:
    start = bucket_start_ms(duration, time_ms)
    assert start == _reference_start(duration, time_ms)
    end = next_bucket_start_ms(duration, start)
    assert start <= time_ms < end
    assert bucket_start_ms(duration, end) == end  # the next bucket starts where this ends


@given(st.integers(min_value=ms(1960, 1, 1), max_value=ms(2100, 1, 1)))
def test_buckets_nest(time_ms: int) -> None:
    """Every bucket lies inside the bucket of each coarser duration (rollups are exact)."""
    for finer, coarser in itertools.pairwise(ALL_DURATIONS):
        start = bucket_start_ms(finer, time_ms)
        end = next_bucket_start_ms(finer, start)
        outer = bucket_start_ms(coarser, time_ms)
        assert outer <= start and end <= next_bucket_start_ms(coarser, outer)
        assert bucket_start_ms(coarser, start) == outer


def test_parse_and_between() -> None:
    assert Duration.parse("sec") is Duration.SECONDS
    assert Duration.parse("'Hours'") is Duration.HOURS
    assert Duration.parse("MONTHS") is Duration.MONTHS
    with pytest.raises(ValueError, match="unknown duration"):
        Duration.parse("fortnight")
    assert durations_between(Duration.SECONDS, Duration.YEARS) == ALL_DURATIONS
    assert durations_between(Duration.HOURS, Duration.DAYS) == (Duration.HOURS, Duration.DAYS)
    with pytest.raises(ValueError, match="finer"):
        durations_between(Duration.DAYS, Duration.HOURS)
    assert Duration.MINUTES.table_suffix == "MINUTES"
