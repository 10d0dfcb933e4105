"""Store Query answers against a brute-force oracle.

The engine runs the flagship app over seeded API-M events; the oracle groups the raw
events itself, per bucket (plain ``ts - ts % width``) and group key, keeps the last
event's carried attributes (offset order), then answers each query with plain Python:
filter the rows, group them, add up counts, take sums and counts of the raw latencies
for averages, min/max over the raw values, sort stably, slice.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from walrep.apim.generator import ApimGenerator
from walrep.engine.app import App, avg, count, distinct_count, max_, sum_
from walrep.engine.core import Engine
from walrep.engine.loader import load_apps
from walrep.log.frame import Event
from walrep.log.types import Record
from walrep.query import (
    QueryError,
    TooManyRecordsError,
    UnknownAppError,
    parse,
    prepare,
    query_from_json,
    run_query,
)

REPO = Path(__file__).resolve().parents[2]
APP = "apim_analytics"
HOUR = 3_600_000
DAY = 24 * HOUR
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, the generator's start
N_EVENTS = 8000
RATE = 0.04  # events per second: about 55 hours, over three days
EVERYTHING = "within 0L, 9999999999999L"
# what the app cuts before storing (conf/apps/apim_analytics.py)
TRUNCATE = {
    "Request": {
        "apiMethod": 20,
        "apiCreator": 150,
        "username": 150,
        "userTenantDomain": 150,
        "apiCreatorTenantDomain": 150,
        "apiHostname": 200,
    },
    "ThrottledOut": {
        "apiMethod": 20,
        "apiCreator": 150,
        "username": 150,
        "userTenantDomain": 150,
        "apiCreatorTenantDomain": 150,
        "throttledOutReason": 30,
    },
}
TIMESTAMP = {"Request": "requestTimestamp", "ThrottledOut": "throttledOutTimestamp"}


@dataclass
class Row:
    """One oracle bucket row: its events in offset order."""

    start: int
    key: tuple[Any, ...]
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def last(self) -> dict[str, Any]:
        return self.events[-1]

    def attr(self, name: str, keys: Sequence[str]) -> Any:
        if name == "AGG_TIMESTAMP":
            return self.start
        if name in keys:
            return self.key[keys.index(name)]
        return self.last[name]  # a carried attribute: the last event's


class Oracle:
    def __init__(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        for stream, attrs in events:
            cut = dict(attrs)
            for name, limit in TRUNCATE.get(stream, {}).items():
                cut[name] = cut[name][:limit]
            self.events.append((stream, cut))

    def rows(
        self,
        keys: Sequence[str],
        width: int,
        start: int = 0,
        end: int = 2**62,
        streams: Iterable[str] = ("Request",),
    ) -> list[Row]:
        found: dict[tuple[int, tuple[Any, ...]], Row] = {}
        for stream, attrs in self.events:
            if stream not in streams:
                continue
            ts = attrs[TIMESTAMP[stream]]
            bucket = ts - ts % width
            if not start <= bucket < end:
                continue
            key = tuple(attrs[k] for k in keys)
            found.setdefault((bucket, key), Row(bucket, key)).events.append(attrs)
        return [found[k] for k in sorted(found)]


USER_KEYS = ["apiContext", "apiHostname", "applicationId", "username", "userTenantDomain"]
EXE_KEYS = ["apiContext", "apiHostname", "apiResourceTemplate", "apiMethod"]
DEST_KEYS = ["apiContext", "apiHostname", "destination"]


def feed(engine: Engine, events: list[tuple[str, dict[str, Any]]], batch: int) -> Engine:
    records = [Record(i, 1, 0, Event(s, a)) for i, (s, a) in enumerate(events)]
    for at in range(0, len(records), batch):
        engine.apply(records[at : at + batch])
    return engine


@pytest.fixture(scope="module")
def apps() -> list[App]:
    return [a for a in load_apps(REPO / "conf" / "apps") if a.name == APP]


@pytest.fixture(scope="module")
def events() -> list[tuple[str, dict[str, Any]]]:
    return ApimGenerator(11, rate_per_s=RATE).events(N_EVENTS)


@pytest.fixture(scope="module")
def engine(apps: list[App], events: list[tuple[str, dict[str, Any]]]) -> Engine:
    engine = feed(Engine(apps), events, 1000)
    counters = engine.stream_counters(APP)
    assert all(c["rejected"] == 0 and c["errors"] == 0 for c in counters.values()), counters
    return engine


@pytest.fixture(scope="module")
def oracle(events: list[tuple[str, dict[str, Any]]]) -> Oracle:
    return Oracle(events)


def top_context(oracle: Oracle) -> str:
    counts: dict[str, int] = defaultdict(int)
    for stream, attrs in oracle.events:
        if stream == "Request":
            counts[attrs["apiContext"]] += 1
    return max(sorted(counts), key=lambda c: counts[c])


def group(rows: Iterable[Row], of: Callable[[Row], Any]) -> dict[Any, list[Row]]:
    out: dict[Any, list[Row]] = {}
    for row in rows:
        out.setdefault(of(row), []).append(row)
    return out


def stable_sort(records: list[list[Any]], *keys: tuple[int, bool]) -> list[list[Any]]:
    for index, descending in reversed(keys):
        records.sort(key=lambda r, i=index: r[i], reverse=descending)  # type: ignore[misc]
    return records


# --- the APPS.md query ------------------------------------------------------------------


def test_the_apps_md_query(engine: Engine, apps: list[App], oracle: Oracle) -> None:
    ctx = top_context(oracle)
    start, end = T0 + DAY, T0 + 2 * DAY
    query = (
        f"from ApiUserPerAppAgg on apiContext == '{ctx}' within {start}L, {end}L per 'hours' "
        "select apiName, applicationName, sum(totalRequestCount) as hits group by "
        "applicationId order by hits desc limit 10"
    )
    rows = [r for r in oracle.rows(USER_KEYS, HOUR, start, end) if r.key[0] == ctx]
    expected = [
        [g[-1].last["apiName"], g[-1].last["applicationName"], sum(len(r.events) for r in g)]
        for g in group(rows, lambda r: r.key[2]).values()
    ]
    expected = stable_sort(expected, (2, True))[:10]
    assert len(expected) == 10
    assert run_query(engine, apps, APP, query) == expected


# --- sum, count, min, max, avg per hours and per days --------------------------------------


@pytest.mark.parametrize(("per", "width"), [("hours", HOUR), ("days", DAY)])
def test_functions_over_the_stored_columns(
    engine: Engine, apps: list[App], oracle: Oracle, per: str, width: int
) -> None:
    query = (
        f"from ApiExeTime {EVERYTHING} per '{per}' select apiContext, count() as buckets, "
        "avg(responseTime) as rt, avg(backendLatency) as bl, min(minResponseTime) as lo, "
        "max(maxResponseTime) as hi, max(maxBackendTime) as bhi, sum(AGG_COUNT) as n, "
        "count(apiName) as named, sum(AGG_SUM_serviceTime) as st "
        "group by apiContext order by apiContext"
    )
    expected = []
    by_ctx = group(oracle.rows(EXE_KEYS, width), lambda r: r.key[0])
    for ctx in sorted(by_ctx):
        rows = by_ctx[ctx]
        raw = [e for r in rows for e in r.events]
        expected.append(
            [
                ctx,
                len(rows),
                sum(e["responseTime"] for e in raw) / len(raw),  # exact, one rounding
                sum(e["backendLatency"] for e in raw) / len(raw),
                min(e["responseTime"] for e in raw),
                max(e["responseTime"] for e in raw),
                max(e["backendTime"] for e in raw),
                len(raw),
                len(rows),
                sum(e["serviceTime"] for e in raw),
            ]
        )
    got = run_query(engine, apps, APP, query)
    assert got == expected
    assert all(isinstance(r[2], float) and isinstance(r[7], int) for r in got)


def test_per_hours_and_per_days_add_up_to_the_same_totals(engine: Engine, apps: list[App]) -> None:
    totals = {}
    for per in ("hours", "days", "months", "years"):
        totals[per] = run_query(
            engine,
            apps,
            APP,
            f"from ApiErroranalysisAgg {EVERYTHING} per '{per}' select apiName, "
            "sum(totalRequestCount) as n, sum(responseLatency) as rl group by apiName "
            "order by apiName",
        )
    assert totals["hours"] == totals["days"] == totals["months"] == totals["years"]


def test_computed_and_multi_stream_sums(engine: Engine, apps: list[App], oracle: Oracle) -> None:
    got = run_query(
        engine,
        apps,
        APP,
        f"from APIM_ReqCountAgg {EVERYTHING} per 'days' select apiName, sum(successCount) "
        "as ok, sum(throttleCount) as throttled group by apiName order by apiName",
    )
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for stream, attrs in oracle.events:
        if stream in ("Request", "ThrottledOut"):
            counts[attrs["apiName"]][stream == "ThrottledOut"] += 1
    assert got == [[name, *counts[name]] for name in sorted(counts)]
    assert sum(r[2] for r in got) > 0  # throttled events are there
    above = run_query(
        engine,
        apps,
        APP,
        f"from ApiVersionPerAppAgg {EVERYTHING} per 'hours' select sum(aboveQuotaCount) as q",
    )
    quota = sum(1 for s, a in oracle.events if s == "Request" and a["throttledOut"])
    assert above == [[quota]]


# --- on, having, order by, limit, offset -----------------------------------------------------


def test_on_names_keys_carried_attributes_and_agg_timestamp(
    engine: Engine, apps: list[App], oracle: Oracle
) -> None:
    since = T0 + 20 * HOUR
    query = (
        f"from ApiUserPerAppAgg on (apiName == 'FlightsAPI' or apiCreatorTenantDomain != "
        f"'carbon.super') and not AGG_TIMESTAMP < {since}L and apiHostname != 'nowhere' "
        f"{EVERYTHING} per 'hours' select apiName, sum(totalRequestCount) as n, "
        "min(AGG_TIMESTAMP) as first group by apiName order by n desc, apiName"
    )
    keep = [
        r
        for r in oracle.rows(USER_KEYS, HOUR)
        if (r.last["apiName"] == "FlightsAPI" or r.last["apiCreatorTenantDomain"] != "carbon.super")
        and not r.start < since
    ]
    expected = [
        [name, sum(len(r.events) for r in g), min(r.start for r in g)]
        for name, g in group(keep, lambda r: r.last["apiName"]).items()
    ]
    expected = stable_sort(expected, (1, True), (0, False))
    got = run_query(engine, apps, APP, query)
    assert got == expected
    assert len(got) > 3 and min(r[2] for r in got) >= since


def test_having_order_limit_and_offset(engine: Engine, apps: list[App], oracle: Oracle) -> None:
    base = (
        f"from ApiUserPerAppAgg {EVERYTHING} per 'days' select applicationId, "
        "sum(totalRequestCount) as hits, count() as n group by applicationId "
        "having hits > 3 and n >= 2 order by hits desc, applicationId asc"
    )
    expected = [
        [app_id, sum(len(r.events) for r in g), len(g)]
        for app_id, g in group(oracle.rows(USER_KEYS, DAY), lambda r: r.key[2]).items()
    ]
    expected = [r for r in expected if r[1] > 3 and r[2] >= 2]
    expected = stable_sort(expected, (1, True), (0, False))
    assert len(expected) > 30
    assert run_query(engine, apps, APP, base) == expected
    assert run_query(engine, apps, APP, base + " limit 7 offset 3") == expected[3:10]
    assert run_query(engine, apps, APP, base + " limit 0") == []
    assert run_query(engine, apps, APP, base + " offset 100000") == []
    pages = [
        run_query(engine, apps, APP, f"{base} limit 9 offset {at}")
        for at in range(0, len(expected), 9)
    ]
    assert [r for page in pages for r in page] == expected
    # a function in having that the select does not have
    having_fn = run_query(
        engine,
        apps,
        APP,
        f"from ApiUserPerAppAgg {EVERYTHING} per 'days' select applicationId group by "
        "applicationId having max(totalRequestCount) >= 20 order by applicationId desc",
    )
    best = {
        app_id: max(len(r.events) for r in g)
        for app_id, g in group(oracle.rows(USER_KEYS, DAY), lambda r: r.key[2]).items()
    }
    assert having_fn == [[a] for a in sorted(best, reverse=True) if best[a] >= 20]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    keys=st.lists(st.sampled_from(["apiContext", "apiHostname", "destination"]), unique=True),
    by_count=st.booleans(),
    descending=st.booleans(),
    limit=st.none() | st.integers(0, 30),
    offset=st.none() | st.integers(0, 30),
)
def test_group_order_and_paging_match_the_oracle(
    engine: Engine,
    apps: list[App],
    oracle: Oracle,
    keys: list[str],
    by_count: bool,
    descending: bool,
    limit: int | None,
    offset: int | None,
) -> None:
    names = [*keys, "n", "r"]
    order = "n" if by_count else (keys[0] if keys else "r")
    query = (
        f"from ApiPerDestinationAgg {EVERYTHING} per 'hours' select "
        + ", ".join([*keys, "sum(totalRequestCount) as n", "count() as r"])
        + (f" group by {', '.join(keys)}" if keys else "")
        + f" order by {order} {'desc' if descending else 'asc'}"
        + (f" limit {limit}" if limit is not None else "")
        + (f" offset {offset}" if offset is not None else "")
    )
    rows = oracle.rows(DEST_KEYS, HOUR)
    grouped = group(rows, lambda r: tuple(r.key[DEST_KEYS.index(k)] for k in keys))
    expected = [[*k, sum(len(r.events) for r in g), len(g)] for k, g in grouped.items()]
    expected = stable_sort(expected, (names.index(order), descending))
    start = offset or 0
    expected = expected[start : None if limit is None else start + limit]
    assert run_query(engine, apps, APP, query) == expected


# --- groups, bare attributes, rows -----------------------------------------------------------


def test_without_group_by(engine: Engine, apps: list[App], oracle: Oracle) -> None:
    start, end = T0 + 5 * HOUR, T0 + 9 * HOUR
    whole = run_query(
        engine,
        apps,
        APP,
        f"from ApiUserPerAppAgg within {start}, {end} per 'hours' select "
        "sum(totalRequestCount) as n, count() as r, max(AGG_TIMESTAMP) as last",
    )
    rows = oracle.rows(USER_KEYS, HOUR, start, end)
    assert whole == [[sum(len(r.events) for r in rows), len(rows), end - HOUR]]
    # nothing in range: no record, also with aggregates
    assert (
        run_query(engine, apps, APP, "from ApiExeTime within 0, 1000 per 'hours' select count()")
        == []
    )
    ctx = top_context(oracle)
    per_row = run_query(
        engine,
        apps,
        APP,
        f"from ApiExeTime on apiContext == \"{ctx}\" within {start}, {end} per 'hours' select "
        "AGG_TIMESTAMP, apiResourceTemplate, apiMethod, responseTime, maxResponseTime, apiName",
    )
    expected = [
        [
            r.start,
            r.key[2],
            r.key[3],
            sum(e["responseTime"] for e in r.events) / len(r.events),  # an average, per row
            max(e["responseTime"] for e in r.events),
            r.last["apiName"],
        ]
        for r in oracle.rows(EXE_KEYS, HOUR, start, end)
        if r.key[0] == ctx
    ]
    assert per_row == expected and len(expected) > 3


def test_a_bare_attribute_takes_the_last_row_of_its_group(
    engine: Engine, apps: list[App], oracle: Oracle
) -> None:
    got = run_query(
        engine,
        apps,
        APP,
        f"from ApiUserPerAppAgg {EVERYTHING} per 'hours' select applicationId, AGG_TIMESTAMP, "
        "username, applicationOwner, count() as n group by applicationId",
    )
    expected = [
        [k, g[-1].start, g[-1].key[3], g[-1].last["applicationOwner"], len(g)]
        for k, g in group(oracle.rows(USER_KEYS, HOUR), lambda r: r.key[2]).items()
    ]
    assert got == expected


def test_group_by_agg_timestamp_is_a_time_series(
    engine: Engine, apps: list[App], oracle: Oracle
) -> None:
    got = run_query(
        engine,
        apps,
        APP,
        "from ApiFaultyInvocationAgg within '2026-01-01', '2026-01-04' per 'hours' select "
        "AGG_TIMESTAMP, sum(totalFaultCount) as faults group by AGG_TIMESTAMP",
    )
    per_hour: dict[int, int] = defaultdict(int)
    for stream, attrs in oracle.events:
        if stream == "Fault":
            ts = attrs["requestTimestamp"]
            per_hour[ts - ts % HOUR] += 1
    assert got == [[h, per_hour[h]] for h in sorted(per_hour)]


# --- within forms ------------------------------------------------------------------------------


def test_within_patterns_iso_and_epoch_agree(
    engine: Engine, apps: list[App], oracle: Oracle
) -> None:
    tail = "per 'hours' select AGG_TIMESTAMP, sum(totalRequestCount) as n group by AGG_TIMESTAMP"
    day2 = [
        f"within {T0 + DAY}L, {T0 + 2 * DAY}L",
        "within '2026-01-02 **:**:**'",
        'within "2026-01-02"',
        "within '2026-01-02T00:00:00Z', '2026-01-03T00:00:00Z'",
        "within '2026-01-02 05:30:00 +05:30', '2026-01-03 05:30:00 +05:30'",
        f"within '2026-01-02', {T0 + 2 * DAY}",
    ]
    answers = [run_query(engine, apps, APP, f"from ApiPerDestinationAgg {w} {tail}") for w in day2]
    assert len(answers[0]) == 24
    assert all(a == answers[0] for a in answers)
    assert answers[0][0][0] == T0 + DAY
    hour = run_query(
        engine, apps, APP, f"from ApiPerDestinationAgg within '2026-01-02 05:**:**' {tail}"
    )
    assert hour == [answers[0][5]]
    month = run_query(
        engine,
        apps,
        APP,
        "from ApiPerDestinationAgg within '2026-01-** **:**:**' per 'months' "
        "select AGG_TIMESTAMP, sum(totalRequestCount)",
    )
    year = run_query(
        engine,
        apps,
        APP,
        "from ApiPerDestinationAgg within '2026-**-** **:**:**' per 'years' "
        "select AGG_TIMESTAMP, sum(totalRequestCount)",
    )
    requests = sum(1 for stream, _ in oracle.events if stream == "Request")
    assert month == year == [[T0, requests]]


# --- determinism and the structured form ---------------------------------------------------------


def test_answers_are_deterministic_across_runs_and_batchings(
    engine: Engine, apps: list[App], events: list[tuple[str, dict[str, Any]]]
) -> None:
    queries = [
        f"from ApiUserPerAppAgg {EVERYTHING} per 'hours' select apiName, applicationName, "
        "sum(totalRequestCount) as hits group by applicationId order by hits desc limit 25",
        f"from ApiExeTime {EVERYTHING} per 'days' select apiName, avg(responseTime) as rt "
        "group by apiContext order by rt",
        f"from ApiUserPerAppAgg {EVERYTHING} per 'days' select username, apiName",
    ]
    other = feed(Engine(apps), events, 37)
    assert other.digest() == engine.digest()
    for q in queries:
        first = run_query(engine, apps, APP, q)
        assert run_query(engine, apps, APP, q) == first
        assert run_query(other, apps, APP, q) == first


def test_the_structured_form_gives_the_same_answer(engine: Engine, apps: list[App]) -> None:
    text = (
        "from ApiUserPerAppAgg on apiCreatorTenantDomain == 'acme.com' within "
        f"{T0}L, {T0 + DAY}L per 'hours' select apiName, sum(totalRequestCount) as hits "
        "group by apiName having hits > 1 order by hits desc limit 5 offset 1"
    )
    structured = query_from_json(
        {
            "from": "ApiUserPerAppAgg",
            "on": "apiCreatorTenantDomain == 'acme.com'",
            "within": [T0, T0 + DAY],
            "per": "hours",
            "select": ["apiName", "sum(totalRequestCount) as hits"],
            "groupBy": ["apiName"],
            "having": "hits > 1",
            "orderBy": ["hits desc"],
            "limit": 5,
            "offset": 1,
        }
    )
    expected = run_query(engine, apps, APP, text)
    assert len(expected) == 5
    assert run_query(engine, apps, APP, structured) == expected
    assert run_query(engine, apps, APP, parse(text)) == expected


def test_max_records_is_enforced(engine: Engine, apps: list[App]) -> None:
    q = f"from ApiUserPerAppAgg {EVERYTHING} per 'hours' select username"
    with pytest.raises(TooManyRecordsError) as caught:
        run_query(engine, apps, APP, q, max_records=100)
    assert "limit" in str(caught.value)
    assert len(run_query(engine, apps, APP, q + " limit 100", max_records=100)) == 100
    prepared = prepare(engine, apps, APP, q)
    assert prepared.columns == ("username",)
    assert len(prepared.evaluate(prepared.fetch())) > 100


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "at", "words"),
    [
        ("from Nope within 0, 1 per 'hours' select x", "Nope", ["unknown aggregation 'Nope'"]),
        ("from ApiExeTme within 0, 1 per 'hours' select x", "ApiExeTme", ["'ApiExeTime'?"]),
        ("from ApiLastAccessSummary within 0, 1 per 'hours' select x", "Api", ["is a table"]),
        (
            "from ApiExeTime within 0, 1 per 'hours' select apiNme",
            "apiNme",
            [
                "unknown attribute 'apiNme'",
                "did you mean 'apiName'",
                "known: AGG_TIMESTAMP, apiContext",
            ],
        ),
        ("from ApiExeTime on nope == 1 within 0, 1 per 'hours' select apiName", "nope", ["'nope'"]),
        ("from ApiExeTime within 0, 1 per 'hours' select x group by nope", "x group", ["'x'"]),
        (
            "from ApiExeTime within 0, 1 per 'hours' select apiName group by nope",
            "nope",
            ["'nope'"],
        ),
        ("from ApiExeTime within 0, 1 per 'weeks' select apiName", "'weeks'", ["unknown duration"]),
        ("from ApiExeTime within 0, 1 per 'h' select apiName", "'h'", ["'hours'"]),
        ("from ApiExeTime within 0, 1 per 'hours' select sum(apiName)", "sum", ["a string"]),
        ("from ApiExeTime within 0, 1 per 'hours' select max(apiMethod)", "max", ["a string"]),
        ("from ApiExeTime within 0, 1 per 'hours' select sum(responseTime)", "sum", ["average"]),
        ("from ApiExeTime on count() > 1 within 0, 1 per 'hours' select x", "count", ["on"]),
        ("from ApiExeTime on apiName == 1 within 0, 1 per 'hours' select x", "==", ["compares"]),
        ("from ApiExeTime on apiName within 0, 1 per 'hours' select x", "apiName", ["condition"]),
        (
            "from ApiExeTime on not apiName within 0, 1 per 'hours' select x",
            "apiName",
            ["condition"],
        ),
        ("from ApiExeTime within 0, 1 per 'hours' select apiName, apiName", 57, ["alias"]),
        (
            "from ApiExeTime within 0, 1 per 'hours' select count() as n having n == 'x'",
            "==",
            ["compares a number with a string"],
        ),
        (
            "from ApiExeTime within 0, 1 per 'hours' select apiName order by nope",
            "nope",
            ["'nope'"],
        ),
    ],
)
def test_semantic_errors_are_query_errors(
    engine: Engine, apps: list[App], query: str, at: str | int, words: list[str]
) -> None:
    position = (1, at if isinstance(at, int) else query.index(at) + 1)
    with pytest.raises(QueryError) as caught:
        run_query(engine, apps, APP, query)
    assert not isinstance(caught.value, UnknownAppError)
    for w in words:
        assert w in str(caught.value), caught.value
    assert caught.value.position == position, caught.value


def test_an_unknown_app_is_its_own_error(engine: Engine, apps: list[App]) -> None:
    with pytest.raises(UnknownAppError, match="unknown app 'shop'"):
        run_query(engine, apps, "shop", "from ApiExeTime within 0, 1 per 'hours' select apiName")
    # an app the engine does not run is unknown too, even when the caller lists it
    with pytest.raises(UnknownAppError):
        run_query(
            engine, [*apps, shop()], "shop", "from OrdersPerShop within 0, 1 per 'h' select shop"
        )


# --- a small app: exact averages of doubles, distinct counts, kept durations -------------------


def shop() -> App:
    app = App("shop", version="1")
    app.stream(
        "Order",
        {"shop": "string", "customer": "string", "amount": "long", "weight": "double",
         "express": "bool", "ts": "long"},
        timestamp="ts",
    )  # fmt: skip
    app.aggregation(
        "OrdersPerShop",
        from_="Order",
        group_by=["shop"],
        aggregates=[
            count("orders"),
            sum_("revenue", of="amount"),
            avg("weight"),
            max_("biggest", of="amount"),
            distinct_count("customers", of="customer"),
            sum_("grams", of="weight"),
        ],
        carried=["express"],
        every=("sec", "day"),
        retention={"sec": None, "min": None, "hour": None, "day": None},
    )
    return app


def order(ts: int, shop_: str, customer: str, amount: int, weight: float, express: bool) -> Event:
    return Event(
        "Order",
        {"shop": shop_, "customer": customer, "amount": amount, "weight": weight,
         "express": express, "ts": ts},
    )  # fmt: skip


def test_averages_of_doubles_distinct_counts_and_bools() -> None:
    app = shop()
    engine = Engine([app])
    weights = [0.1, 0.2, 0.7, 1e-3, 3.3]
    evs = [
        order(T0 + 100 + 1000 * i, "s1", f"c{i % 2}", 10 * i, w, i % 2 == 0)
        for i, w in enumerate(weights)
    ]
    engine.apply([Record(i, 1, 0, e) for i, e in enumerate(evs)])
    got = run_query(
        engine,
        [app],
        "shop",
        f"from OrdersPerShop {EVERYTHING} per 'seconds' select shop, avg(weight) as w, "
        "count() as secs, max(customers) as most, sum(grams) as g, express",
    )
    exact = float(sum(map(Fraction, weights), Fraction(0)) / len(weights))
    assert got == [["s1", exact, 5, 1, math.fsum(weights), True]]
    minute = run_query(
        engine, [app], "shop",
        f"from OrdersPerShop {EVERYTHING} per 'minutes' select avg(weight), customers, weight",
    )  # fmt: skip
    stored = float(Fraction(math.fsum(weights)) / len(weights))  # the minute's stored sum
    assert minute == [[stored, 2, stored]]
    by_bool = run_query(
        engine, [app], "shop",
        f"from OrdersPerShop on express == true {EVERYTHING} per 'sec' select AGG_TIMESTAMP",
    )  # fmt: skip
    assert by_bool == [[T0], [T0 + 2000], [T0 + 4000]]
    for query, words in [
        (f"from OrdersPerShop {EVERYTHING} per 'seconds' select sum(customers)", "distinct"),
        (f"from OrdersPerShop {EVERYTHING} per 'months' select shop", "not months"),
        (f"from OrdersPerShop {EVERYTHING} per 'days' select sum(express)", "a bool"),
        (f"from OrdersPerShop on express < true {EVERYTHING} per 'days' select shop", "bools"),
    ]:
        with pytest.raises(QueryError, match=words):
            run_query(engine, [app], "shop", query)
