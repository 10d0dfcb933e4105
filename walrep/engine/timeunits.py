"""Aggregation durations and their UTC calendar buckets (pure integer arithmetic).

A bucket of duration D holds the event times ``[start_ms, next_start_ms)``; seconds,
minutes, hours and days are fixed lengths since the Unix epoch (UTC has no leap seconds
here, as in Siddhi and POSIX time), months and years follow the proleptic Gregorian
calendar. Nothing here reads a clock: bucket edges depend only on the event time given.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

SECOND_MS = 1000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS


class Duration(enum.Enum):
    """The granularities of an incremental aggregation, finest first."""

    SECONDS = "seconds"
    MINUTES = "minutes"
    HOURS = "hours"
    DAYS = "days"
    MONTHS = "months"
    YEARS = "years"

    @property
    def table_suffix(self) -> str:
        """Siddhi's RDBMS table suffix: ``<Agg>_SECONDS`` ... ``<Agg>_YEARS``."""
        return self.name

    @classmethod
    def parse(cls, text: str) -> Duration:
        """'sec', 'second', 'seconds', 'SECONDS', 'min', 'hours', ... (Siddhi's spellings)."""
        word = text.strip().strip("'\"").lower()
        found = _ALIASES.get(word)
        if found is None:
            raise ValueError(f"unknown duration {text!r} (one of {', '.join(_ALIASES)})")
        return found


_ALIASES: dict[str, Duration] = {}
for _d, _names in (
    (Duration.SECONDS, ("sec", "secs", "second", "seconds")),
    (Duration.MINUTES, ("min", "mins", "minute", "minutes")),
    (Duration.HOURS, ("hour", "hours")),
    (Duration.DAYS, ("day", "days")),
    (Duration.MONTHS, ("month", "months")),
    (Duration.YEARS, ("year", "years")),
):
    for _n in _names:
        _ALIASES[_n] = _d

ALL_DURATIONS: tuple[Duration, ...] = tuple(Duration)

_FIXED_MS = {
    Duration.SECONDS: SECOND_MS,
    Duration.MINUTES: MINUTE_MS,
    Duration.HOURS: HOUR_MS,
    Duration.DAYS: DAY_MS,
}

# Siddhi's default @purge retention per granularity (None: kept for ever).
DEFAULT_RETENTION_MS: dict[Duration, int | None] = {
    Duration.SECONDS: 120 * SECOND_MS,
    Duration.MINUTES: 24 * HOUR_MS,
    Duration.HOURS: 30 * DAY_MS,
    Duration.DAYS: 365 * DAY_MS,
    Duration.MONTHS: None,
    Duration.YEARS: None,
}


def durations_between(first: Duration, last: Duration) -> tuple[Duration, ...]:
    """``every sec ... year``: the durations from ``first`` to ``last`` inclusive."""
    i, j = ALL_DURATIONS.index(first), ALL_DURATIONS.index(last)
    if i > j:
        raise ValueError(f"{first.value} ... {last.value}: the first must be the finer")
    return ALL_DURATIONS[i : j + 1]


def _month_index(time_ms: int) -> int:
    """Months since 1970-01 of the UTC month holding ``time_ms``."""
    d = datetime.fromtimestamp(time_ms // 1000, UTC)
    return (d.year - 1970) * 12 + d.month - 1


def _month_start_ms(index: int) -> int:
    year, month = divmod(index, 12)
    return int(datetime(1970 + year, month + 1, 1, tzinfo=UTC).timestamp()) * 1000


def bucket_start_ms(duration: Duration, time_ms: int) -> int:
    """The start of the ``duration`` bucket holding ``time_ms`` (UTC)."""
    fixed = _FIXED_MS.get(duration)
    if fixed is not None:
        return time_ms - time_ms % fixed  # floor, also for times before 1970
    months = _month_index(time_ms)
    if duration is Duration.YEARS:
        months -= months % 12
    return _month_start_ms(months)


def next_bucket_start_ms(duration: Duration, start_ms: int) -> int:
    """The start of the bucket after the one starting at ``start_ms``."""
    fixed = _FIXED_MS.get(duration)
    if fixed is not None:
        return start_ms + fixed
    step = 12 if duration is Duration.YEARS else 1
    return _month_start_ms(_month_index(start_ms) + step)
