"""The flagship app (conf/apps/apim_analytics.py) on a handful of hand-made events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from walrep.engine.app import App
from walrep.engine.core import Engine
from walrep.engine.loader import load_apps
from walrep.engine.timeunits import DAY_MS, HOUR_MS, MINUTE_MS, Duration
from walrep.engine.types import AggRow
from walrep.log.frame import Event
from walrep.log.types import Record

from .test_timeunits import ms

REPO = Path(__file__).resolve().parents[2]
T0 = ms(2026, 1, 1, 10)
LONG_USER = "u" * 160 + "@carbon.super"
REASON = "SUBSCRIPTION_LIMIT_EXCEEDED_FOR_THIS_APPLICATION"  # 48 chars: cut to 30


@pytest.fixture(scope="module")
def app() -> App:
    (found,) = [a for a in load_apps(REPO / "conf" / "apps") if a.name == "apim_analytics"]
    return found


def request(ts: int, **changes: Any) -> Event:
    attrs: dict[str, Any] = {
        "meta_clientType": "PRODUCTION",
        "applicationConsumerKey": "ck1",
        "applicationName": "MobileApp",
        "applicationId": "app-1",
        "applicationOwner": "alice",
        "apiContext": "/pizzashack/1.0.0",
        "apiName": "PizzaShackAPI",
        "apiVersion": "1.0.0",
        "apiResourcePath": "/menu",
        "apiResourceTemplate": "/menu",
        "apiMethod": "GET",
        "apiCreator": "admin",
        "apiCreatorTenantDomain": "carbon.super",
        "apiTier": "Gold",
        "apiHostname": "gw1.example.com",
        "username": "bob@carbon.super",
        "userTenantDomain": "carbon.super",
        "userIp": "10.0.0.1",
        "userAgent": "curl/8.5.0",
        "requestTimestamp": ts,
        "throttledOut": False,
        "responseTime": 100,
        "serviceTime": 40,
        "backendTime": 60,
        "responseCacheHit": False,
        "responseSize": 512,
        "protocol": "https",
        "responseCode": 200,
        "destination": "https://backend:8443/menu",
        "securityLatency": 3,
        "throttlingLatency": 1,
        "requestMedLat": 2,
        "responseMedLat": 2,
        "backendLatency": 60,
        "otherLatency": 32,
        "gatewayType": "SYNAPSE",
        "label": "Synapse",
    }
    assert changes.keys() <= attrs.keys()
    return Event("Request", {**attrs, **changes})


def throttled(ts: int) -> Event:
    return Event(
        "ThrottledOut",
        {
            "meta_clientType": "PRODUCTION",
            "username": "bob@carbon.super",
            "userTenantDomain": "carbon.super",
            "apiName": "PizzaShackAPI",
            "apiVersion": "1.0.0",
            "apiContext": "/pizzashack/1.0.0",
            "apiCreator": "admin",
            "apiCreatorTenantDomain": "carbon.super",
            "apiResourceTemplate": "/menu",
            "apiMethod": "GET",
            "applicationId": "app-1",
            "applicationName": "MobileApp",
            "subscriber": "alice",
            "throttledOutReason": REASON,
            "gatewayType": "SYNAPSE",
            "throttledOutTimestamp": ts,
            "hostname": "gw1.example.com",
        },
    )


def fault(ts: int) -> Event:
    strings = [
        "meta_clientType",
        "applicationConsumerKey",
        "apiName",
        "apiVersion",
        "apiContext",
        "apiResourcePath",
        "apiResourceTemplate",
        "apiMethod",
        "apiCreator",
        "username",
        "userTenantDomain",
        "apiCreatorTenantDomain",
        "hostname",
        "applicationId",
        "applicationName",
        "applicationOwner",
        "protocol",
        "errorCode",
        "errorMessage",
    ]
    attrs: dict[str, Any] = {name: f"{name}-v" for name in strings}
    attrs.update(
        apiContext="/pizzashack/1.0.0", applicationId="app-1", hostname="gw1", errorCode="101503"
    )
    return Event("Fault", {**attrs, "requestTimestamp": ts})


EVENTS = [
    request(T0 + 10),
    request(T0 + 200, throttledOut=True, responseCode=429, responseTime=300, backendTime=0),
    throttled(T0 + 200),
    fault(T0 + 400),
    request(
        T0 + 61_000, username=LONG_USER, apiMethod="PATCH" * 5, responseTime=50, backendTime=20
    ),
    request(T0 + 30_000, responseTime=7),  # late by 31 s: kept everywhere (sec retention 5 min)
]


@pytest.fixture(scope="module")
def engine(app: App) -> Engine:
    engine = Engine([app])
    engine.apply([Record(n, 1, 0, e) for n, e in enumerate(EVENTS)])
    return engine


def by_name(engine: Engine, agg: str, duration: Duration) -> list[dict[str, Any]]:
    schema = next(s for s in engine.schemas() if s.name == agg)
    names = [c.name for c in schema.group_by] + [c.name for c in schema.columns]
    rows: list[AggRow] = engine.aggregation(agg).rows(duration, 0, 2**62)
    return [
        {"AGG_TIMESTAMP": r.agg_timestamp_ms, **dict(zip(names, r.key + r.values, strict=True))}
        for r in rows
    ]


def test_every_event_accepted(engine: Engine) -> None:
    counters = engine.stream_counters("apim_analytics")
    assert {s: c["accepted"] for s, c in counters.items()} == {
        "Request": 4,
        "Fault": 1,
        "ThrottledOut": 1,
    }
    assert sum(c["rejected"] + c["errors"] for c in counters.values()) == 0
    assert [s.name for s in engine.schemas()] == sorted(
        [
            "ApiUserPerAppAgg",
            "ApiVersionPerAppAgg",
            "ApiResPathPerApp",
            "ApiPerDestinationAgg",
            "ApiExeTime",
            "ApiErroranalysisAgg",
            "ApiFaultyInvocationAgg",
            "ApiThrottledOutAgg",
            "APIM_ReqCountAgg",
        ]
    )


def test_version_per_app_counts_above_quota(engine: Engine) -> None:
    seconds = by_name(engine, "ApiVersionPerAppAgg", Duration.SECONDS)
    assert [
        (r["AGG_TIMESTAMP"] - T0, r["totalRequestCount"], r["aboveQuotaCount"]) for r in seconds
    ] == [
        (0, 2, 1),
        (30_000, 1, 0),
        (61_000, 1, 0),
    ]
    (hour,) = by_name(engine, "ApiVersionPerAppAgg", Duration.HOURS)
    assert (hour["AGG_TIMESTAMP"], hour["totalRequestCount"], hour["aboveQuotaCount"]) == (T0, 4, 1)
    minutes = by_name(engine, "ApiVersionPerAppAgg", Duration.MINUTES)
    assert [(r["AGG_TIMESTAMP"] - T0, r["totalRequestCount"]) for r in minutes] == [
        (0, 3),
        (MINUTE_MS, 1),
    ]
    (year,) = by_name(engine, "ApiVersionPerAppAgg", Duration.YEARS)
    assert year["AGG_TIMESTAMP"] == ms(2026, 1, 1) and year["totalRequestCount"] == 4
    assert year["applicationName"] == "MobileApp" and year["gatewayType"] == "SYNAPSE"


def test_exe_time_averages_and_extremes(engine: Engine) -> None:
    (minute,) = [
        r for r in by_name(engine, "ApiExeTime", Duration.MINUTES) if r["AGG_TIMESTAMP"] == T0
    ]
    assert minute["AGG_COUNT"] == 3
    assert minute["AGG_SUM_responseTime"] == 407 and minute["AGG_SUM_backendTime"] == 120
    assert (minute["minResponseTime"], minute["maxResponseTime"]) == (7, 300)
    assert (minute["minBackendTime"], minute["maxBackendTime"]) == (0, 60)
    assert minute["apiCreator"] == "admin"
    days = by_name(engine, "ApiExeTime", Duration.DAYS)  # apiMethod cut to 20: another key
    assert sorted((r["apiMethod"], r["AGG_COUNT"], r["AGG_SUM_responseTime"]) for r in days) == [
        ("GET", 3, 407),
        ("PATCH" * 4, 1, 50),
    ]
    patched = [
        r for r in by_name(engine, "ApiResPathPerApp", Duration.DAYS) if r["apiMethod"] != "GET"
    ]
    assert [r["apiMethod"] for r in patched] == ["PATCH" * 4]


def test_truncated_names_and_user_rows(engine: Engine) -> None:
    rows = by_name(engine, "ApiUserPerAppAgg", Duration.DAYS)
    assert sorted(
        (r["username"][:5], len(r["username"]), r["totalRequestCount"]) for r in rows
    ) == [
        ("bob@c", 16, 3),
        ("uuuuu", 150, 1),
    ]
    (thr,) = by_name(engine, "ApiThrottledOutAgg", Duration.SECONDS)
    assert thr["throttledOutReason"] == REASON[:30] and thr["throttledOutCount"] == 1
    assert (thr["apiContext"], thr["hostname"], thr["subscriber"]) == (
        "/pizzashack/1.0.0",
        "gw1.example.com",
        "alice",
    )


def test_error_analysis_faults_and_request_counts(engine: Engine) -> None:
    errors = by_name(engine, "ApiErroranalysisAgg", Duration.HOURS)
    assert sorted(
        (r["responseCode"], r["totalRequestCount"], r["responseLatency"], r["backendLatency"])
        for r in errors
    ) == [
        (200, 3, 157, 180),
        (429, 1, 300, 60),
    ]
    (faults,) = by_name(engine, "ApiFaultyInvocationAgg", Duration.MONTHS)
    assert (faults["hostname"], faults["totalFaultCount"], faults["apiName"]) == (
        "gw1",
        1,
        "apiName-v",
    )
    (counts,) = by_name(engine, "APIM_ReqCountAgg", Duration.DAYS)
    assert (counts["successCount"], counts["throttleCount"]) == (4, 1)
    seconds = by_name(engine, "APIM_ReqCountAgg", Duration.SECONDS)
    assert [(r["AGG_TIMESTAMP"] - T0, r["successCount"], r["throttleCount"]) for r in seconds] == [
        (0, 2, 1),
        (30_000, 1, 0),
        (61_000, 1, 0),
    ]


def test_last_access_never_moves_backwards(engine: Engine) -> None:
    (row,) = engine.table("ApiLastAccessSummary").rows()
    assert row == (("PizzaShackAPI", "admin", "1.0.0", "carbon.super"), (T0 + 61_000,))


def test_retention_as_wso2_ships_it(app: App) -> None:
    spec = {a.name: dict(a.retention_ms) for a in app.aggregations}
    assert spec["ApiUserPerAppAgg"] == {
        Duration.SECONDS: 5 * MINUTE_MS,
        Duration.MINUTES: 72 * HOUR_MS,
        Duration.HOURS: 90 * DAY_MS,
        Duration.DAYS: 365 * DAY_MS,
        Duration.MONTHS: 10 * 365 * DAY_MS,
        Duration.YEARS: None,
    }
    exe = spec["ApiExeTime"]
    assert (exe[Duration.SECONDS], exe[Duration.MINUTES], exe[Duration.HOURS]) == (
        HOUR_MS,
        3 * DAY_MS,
        90 * DAY_MS,
    )
    assert all(a.durations == tuple(Duration) for a in app.aggregations)


def test_generated_traffic_if_the_generator_exists(app: App) -> None:
    generator = pytest.importorskip("walrep.apim.generator")
    events = generator.ApimGenerator(3, rate_per_s=2000).log_events(3000)
    engine = Engine([app], digest_interval=1000)
    engine.apply([Record(n, 1, 0, e) for n, e in enumerate(events)])
    counters = engine.stream_counters("apim_analytics")
    assert sum(c["rejected"] for c in counters.values()) == 0  # the generator speaks APPS.md
    assert sum(c["accepted"] for c in counters.values()) == 3000
    (year,) = engine.aggregation("APIM_ReqCountAgg").rows(Duration.YEARS, 0, 2**62)[:1]
    assert year.values[0] >= 1
