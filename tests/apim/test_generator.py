"""The API-M event generator: schema, determinism, shape, and the forms it hands out."""

from __future__ import annotations

import hashlib
import os
import random
import statistics
import subprocess
import sys
import time
from bisect import bisect_right
from collections import Counter, defaultdict
from itertools import pairwise
from typing import Any

import orjson
import pytest

from walrep.apim import STREAMS, ApimGenerator, Pair, ndjson_line
from walrep.apim.catalog import guide, zipf_cumulative
from walrep.log.frame import Event, encode_batch

# The three streams exactly as /work/shared/APPS.md lists them, typed out again here (not
# derived from STREAMS) so that a slip in either is caught.
_S, _I, _B = "string", "int", "bool"
# fmt: off
APPS_MD_STREAMS: dict[str, list[tuple[str, str]]] = {
    "Request": [
        ("meta_clientType", _S), ("applicationConsumerKey", _S), ("applicationName", _S),
        ("applicationId", _S), ("applicationOwner", _S), ("apiContext", _S), ("apiName", _S),
        ("apiVersion", _S), ("apiResourcePath", _S), ("apiResourceTemplate", _S),
        ("apiMethod", _S), ("apiCreator", _S), ("apiCreatorTenantDomain", _S), ("apiTier", _S),
        ("apiHostname", _S), ("username", _S), ("userTenantDomain", _S), ("userIp", _S),
        ("userAgent", _S), ("requestTimestamp", _I), ("throttledOut", _B),
        ("responseTime", _I), ("serviceTime", _I), ("backendTime", _I),
        ("responseCacheHit", _B), ("responseSize", _I), ("protocol", _S),
        ("responseCode", _I), ("destination", _S), ("securityLatency", _I),
        ("throttlingLatency", _I), ("requestMedLat", _I), ("responseMedLat", _I),
        ("backendLatency", _I), ("otherLatency", _I), ("gatewayType", _S), ("label", _S),
    ],
    "Fault": [
        ("meta_clientType", _S), ("applicationConsumerKey", _S), ("apiName", _S),
        ("apiVersion", _S), ("apiContext", _S), ("apiResourcePath", _S),
        ("apiResourceTemplate", _S), ("apiMethod", _S), ("apiCreator", _S), ("username", _S),
        ("userTenantDomain", _S), ("apiCreatorTenantDomain", _S), ("hostname", _S),
        ("applicationId", _S), ("applicationName", _S), ("applicationOwner", _S),
        ("protocol", _S), ("errorCode", _S), ("errorMessage", _S), ("requestTimestamp", _I),
    ],
    "ThrottledOut": [
        ("meta_clientType", _S), ("username", _S), ("userTenantDomain", _S), ("apiName", _S),
        ("apiVersion", _S), ("apiContext", _S), ("apiCreator", _S),
        ("apiCreatorTenantDomain", _S), ("apiResourceTemplate", _S), ("apiMethod", _S),
        ("applicationId", _S), ("applicationName", _S), ("subscriber", _S),
        ("throttledOutReason", _S), ("gatewayType", _S), ("throttledOutTimestamp", _I),
        ("hostname", _S),
    ],
}
# fmt: on
_PYTHON_TYPE = {_S: str, _I: int, _B: bool}
# WSO2's storage truncation lengths (APPS.md): generated values already fit.
_TRUNCATED_AT = {
    "apiMethod": 20,
    "apiCreator": 150,
    "username": 150,
    "userTenantDomain": 150,
    "apiCreatorTenantDomain": 150,
    "apiHostname": 200,
    "throttledOutReason": 30,
}

SEED = 7
SHAPE_EVENTS = 100_000
START_MS = 1_767_225_600_000
LATE_MAX_MS = 120_000
_HASH_SCRIPT = (
    "import hashlib, sys\n"
    "from walrep.apim import ApimGenerator\n"
    "lines = ApimGenerator(int(sys.argv[1])).ndjson_lines(int(sys.argv[2]))\n"
    "print(hashlib.sha256(b''.join(lines)).hexdigest())\n"
)


@pytest.fixture(scope="module")
def timed_sample() -> tuple[list[Pair], float, float]:
    """100k events of the default generator, and the wall and CPU seconds they took."""
    generator = ApimGenerator(SEED)
    started_s, started_cpu_s = time.perf_counter(), time.process_time()
    events = generator.events(SHAPE_EVENTS)
    return events, time.perf_counter() - started_s, time.process_time() - started_cpu_s


@pytest.fixture(scope="module")
def sample(timed_sample: tuple[list[Pair], float, float]) -> list[Pair]:
    return timed_sample[0]


def _split(sample: list[Pair]) -> dict[str, list[dict[str, Any]]]:
    by_stream: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for stream, attributes in sample:
        by_stream[stream].append(attributes)
    return by_stream


def test_generation_rate_goes_to_the_log(
    timed_sample: tuple[list[Pair], float, float], capsys: pytest.CaptureFixture[str]
) -> None:
    """Measured, never asserted: the rate depends on the machine and its load."""
    events, wall_s, cpu_s = timed_sample
    with capsys.disabled():
        print(
            f"\n[apim generator] {len(events):,} events in {wall_s:.3f} s: "
            f"{len(events) / wall_s:,.0f} events/s wall, {len(events) / cpu_s:,.0f} events/s CPU"
        )


# --- schema ---------------------------------------------------------------------------


def test_streams_are_those_of_apps_md() -> None:
    assert {name: list(attributes) for name, attributes in STREAMS.items()} == APPS_MD_STREAMS


def test_every_event_has_exactly_its_streams_attributes_and_types(sample: list[Pair]) -> None:
    names = {stream: tuple(n for n, _ in attrs) for stream, attrs in APPS_MD_STREAMS.items()}
    types = {
        stream: tuple(_PYTHON_TYPE[t] for _, t in attrs)
        for stream, attrs in APPS_MD_STREAMS.items()
    }
    for stream, attributes in sample:
        assert tuple(attributes) == names[stream]  # same names, in the schema's order
        actual = tuple(type(value) for value in attributes.values())
        assert actual == types[stream], (stream, attributes)  # type() is: a bool is no int
    assert set(_split(sample)) == set(STREAMS)


def test_values_fit_wso2_truncation_and_are_consistent(sample: list[Pair]) -> None:
    context_of: dict[str, tuple[str, str, str, str]] = {}
    application_of: dict[str, tuple[str, str, str, str]] = {}
    for stream, a in sample:
        for name, limit in _TRUNCATED_AT.items():
            assert len(a.get(name, "")) <= limit, (name, a)
        assert a["apiContext"].endswith(f"/{a['apiVersion']}")
        assert a["username"].endswith("@" + a["userTenantDomain"])
        # Tenants are isolated: user, application and API share the tenant.
        assert a["userTenantDomain"] == a["apiCreatorTenantDomain"]
        api = (a["apiName"], a["apiVersion"], a["apiCreator"], a["apiCreatorTenantDomain"])
        assert context_of.setdefault(a["apiContext"], api) == api
        if stream != "ThrottledOut":
            app = (a["applicationName"], a["applicationOwner"], a["applicationConsumerKey"], "")
            assert application_of.setdefault(a["applicationId"], app) == app


def test_latency_components_add_up(sample: list[Pair]) -> None:
    for attributes in _split(sample)["Request"]:
        a = attributes
        gateway_ms = (a["securityLatency"] + a["throttlingLatency"] + a["requestMedLat"]) + (
            a["responseMedLat"] + a["otherLatency"]
        )
        assert a["serviceTime"] == gateway_ms
        assert a["responseTime"] == a["serviceTime"] + a["backendTime"]
        assert a["backendLatency"] == a["backendTime"] >= 0
        assert min(a["securityLatency"], a["responseSize"]) >= 0
        if a["throttledOut"] or a["responseCacheHit"] or a["responseCode"] in (401, 403, 405):
            assert a["backendTime"] == 0 and a["responseMedLat"] == 0
        if a["throttledOut"]:
            assert a["responseCode"] == 429 and not a["responseCacheHit"]


# --- determinism ----------------------------------------------------------------------


def _digest(lines: list[bytes]) -> str:
    return hashlib.sha256(b"".join(lines)).hexdigest()


def test_same_seed_same_events_and_different_seeds_differ() -> None:
    first = ApimGenerator(11).ndjson_lines(5000)
    assert ApimGenerator(11).ndjson_lines(5000) == first
    other = ApimGenerator(12).ndjson_lines(5000)
    assert other != first
    assert sum(a == b for a, b in zip(first, other, strict=True)) == 0


def test_every_form_continues_the_same_stream() -> None:
    reference = ApimGenerator(3).events(4000)
    generator = ApimGenerator(3)
    pieces = generator.events(500)
    pieces += [event for batch in generator.batches(3, 400) for event in batch]
    iterator = generator.iter_events()
    pieces += [next(iterator) for _ in range(300)]
    pieces += [(e.stream, e.attributes) for e in generator.log_events(1000)]
    pieces += [
        (line["stream"], line["attributes"])
        for line in map(orjson.loads, generator.ndjson_lines(1000))
    ]
    assert pieces == reference


def test_identical_bytes_in_processes_with_different_hash_seeds() -> None:
    seed, count = 5, 10_000
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", _HASH_SCRIPT, str(seed), str(count)],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            stdout=subprocess.PIPE,
            text=True,
        )
        for hash_seed in ("0", "4242")
    ]
    outputs = [run.communicate(timeout=60)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    digests = {output.strip() for output in outputs}
    assert digests == {_digest(ApimGenerator(seed).ndjson_lines(count))}


def test_no_wall_clock_in_simulated_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_clock() -> float:
        raise AssertionError("the generator read the wall clock")

    for name in ("time", "time_ns", "monotonic", "monotonic_ns", "perf_counter"):
        monkeypatch.setattr(time, name, no_clock)
    assert len(ApimGenerator(1).events(2000)) == 2000


def test_live_mode_takes_the_clock_and_never_goes_back() -> None:
    readings = iter([5_000_000, 5_000_010, 5_000_020, 4_000_000] + [5_000_030] * 10_000)
    generator = ApimGenerator(1, clock=lambda: next(readings), late_fraction=0.0)
    timestamps = [_timestamp(a) for _, a in generator.events(200)]
    assert timestamps[0] == 5_000_010  # the first reading starts the stream
    assert timestamps == sorted(timestamps)
    assert set(timestamps) == {5_000_010, 5_000_020, 5_000_030}  # 4_000_000 was held at 020


# --- shape ----------------------------------------------------------------------------


def _timestamp(attributes: dict[str, Any]) -> int:
    value = attributes.get("requestTimestamp", attributes.get("throttledOutTimestamp"))
    assert isinstance(value, int)
    return value


def test_outcome_fractions(sample: list[Pair]) -> None:
    by_stream = _split(sample)
    requests, faults = by_stream["Request"], by_stream["Fault"]
    invocations = len(requests) + len(faults)
    throttled = [a for a in requests if a["throttledOut"]]
    assert 0.008 <= len(throttled) / invocations <= 0.012
    assert len(by_stream["ThrottledOut"]) == len(throttled)
    assert 0.0035 <= len(faults) / invocations <= 0.0065
    served = [a for a in requests if not a["throttledOut"]]
    errors = Counter(a["responseCode"] for a in served if a["responseCode"] >= 400)
    assert 0.025 <= errors.total() / len(served) <= 0.035
    assert {code // 100 for code in errors} == {4, 5}
    assert 429 not in errors  # only throttling answers 429


def test_a_throttled_out_event_comes_right_before_its_request(sample: list[Pair]) -> None:
    for (stream, throttled), (next_stream, request) in pairwise(sample):
        if stream != "ThrottledOut":
            continue
        assert next_stream == "Request" and request["throttledOut"] is True
        assert throttled["throttledOutTimestamp"] == request["requestTimestamp"]
        same = ("apiContext", "applicationId", "username", "apiResourceTemplate", "apiMethod")
        assert all(throttled[name] == request[name] for name in same)
        assert throttled["hostname"] == request["apiHostname"]
        assert throttled["subscriber"] == request["applicationOwner"]
        if request["apiTier"] == "Unlimited":
            assert throttled["throttledOutReason"] != "SUBSCRIPTION_LIMIT_EXCEEDED"


@pytest.mark.parametrize("attribute", ["apiName", "applicationId", "username"])
def test_popularity_is_zipf_skewed(sample: list[Pair], attribute: str) -> None:
    counts = sorted(Counter(a[attribute] for _, a in sample).values(), reverse=True)
    assert counts[0] >= 10 * statistics.median(counts)
    assert counts[0] <= 0.5 * len(sample)  # skewed, not degenerate


def test_late_events(sample: list[Pair]) -> None:
    # On-time timestamps never decrease; a late one is 1..late_max_ms below the latest
    # on-time one. So late means exactly "below the running maximum".
    latest_ms = START_MS
    lateness_ms = []
    for _, attributes in sample:
        timestamp_ms = _timestamp(attributes)
        if timestamp_ms < latest_ms:
            lateness_ms.append(latest_ms - timestamp_ms)
        else:
            latest_ms = timestamp_ms
    assert 0.008 <= len(lateness_ms) / len(sample) <= 0.012
    assert min(lateness_ms) >= 1 and max(lateness_ms) <= LATE_MAX_MS
    assert statistics.mean(lateness_ms) == pytest.approx(LATE_MAX_MS / 2, rel=0.1)
    # Simulated time runs at rate_per_s = 1000 invocations per second (one ms each).
    invocations = len(sample) - len(_split(sample)["ThrottledOut"])
    assert (latest_ms - START_MS) / invocations == pytest.approx(1.0, rel=0.03)


def test_cardinalities_are_bounded_by_the_parameters(sample: list[Pair]) -> None:
    def distinct(name: str) -> int:
        return len({a[name] for _, a in sample if name in a})

    assert 20 <= distinct("apiName") <= 40  # apis
    assert distinct("apiName") < distinct("apiContext") <= 40 * 3  # versions_max
    assert 150 <= distinct("applicationId") <= 300  # applications
    assert 1000 <= distinct("username") <= 5000  # users
    assert distinct("userTenantDomain") == 4  # tenants
    assert distinct("apiHostname") == 3  # gateways
    assert distinct("apiResourceTemplate") >= 8


def test_small_catalog_and_all_outcomes_off() -> None:
    generator = ApimGenerator(
        2,
        apis=2,
        applications=2,
        users=2,
        tenants=1,
        gateways=1,
        late_fraction=0.0,
        throttled_fraction=0.0,
        fault_fraction=0.0,
        error_fraction=0.0,
    )
    events = generator.events(3000)
    assert {stream for stream, _ in events} == {"Request"}
    assert all(a["responseCode"] < 300 for _, a in events)
    assert len({a["username"] for _, a in events}) <= 2
    timestamps = [a["requestTimestamp"] for _, a in events]
    assert timestamps == sorted(timestamps)


def test_everything_throttled_or_faulted() -> None:
    events = ApimGenerator(2, throttled_fraction=0.5, fault_fraction=0.5).events(2000)
    assert {stream for stream, _ in events} == {"ThrottledOut", "Request", "Fault"}
    assert all(a["throttledOut"] for stream, a in events if stream == "Request")


@pytest.mark.parametrize(
    "bad",
    [
        {"apis": 0},
        {"users": 3, "tenants": 4},
        {"applications": 10**9},
        {"rate_per_s": 0.0},
        {"rate_per_s": float("inf")},
        {"late_fraction": 1.5},
        {"late_max_ms": 0},
        {"throttled_fraction": 0.7, "fault_fraction": 0.4},
        {"zipf_exponent": 0.0},
    ],
)
def test_bad_parameters_raise_value_error(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ApimGenerator(1, **bad)


# --- sampling tables ------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 7, 300, 2500, 9000])
def test_guide_table_finds_the_same_index_as_plain_bisect(n: int) -> None:
    cumulative = zipf_cumulative(n, 1.0)
    assert cumulative[-1] == 1.0 and list(cumulative) == sorted(cumulative)
    low, high = guide(cumulative)
    cells = len(low)
    assert cells & (cells - 1) == 0  # a power of two: u * cells is exact
    rng = random.Random(n)
    edges = [j / cells for j in range(cells)] + list(cumulative[:-1])
    for u in edges + [rng.random() for _ in range(20_000)]:
        cell = int(u * cells)
        index = bisect_right(cumulative, u, low[cell], high[cell])
        assert index == bisect_right(cumulative, u) < n


def test_zipf_table_frequencies() -> None:
    cumulative = zipf_cumulative(50, 1.0)
    rng = random.Random(0)
    counts = Counter(bisect_right(cumulative, rng.random()) for _ in range(200_000))
    assert counts[0] / counts[1] == pytest.approx(2.0, rel=0.05)
    assert counts[0] / counts[9] == pytest.approx(10.0, rel=0.15)


# --- the forms handed to the log and to publish ---------------------------------------


def test_log_events_encode_as_a_batch_with_producer_identity() -> None:
    generator = ApimGenerator(4)
    batches = list(generator.log_batches(3, 100, producer_id="gen-1", first_seq=10))
    assert [[e.seq for e in batch][:2] for batch in batches] == [[10, 11], [110, 111], [210, 211]]
    events = [event for batch in batches for event in batch]
    assert all(type(e) is Event and e.producer_id == "gen-1" for e in events)
    assert ApimGenerator(4).log_events(300) == [Event(e.stream, e.attributes) for e in events]
    batch = encode_batch(
        events, max_event_bytes=4096, max_batch_bytes=1 << 20, compress_threshold_bytes=1 << 30
    )
    assert batch.count == 300


def test_ndjson_lines_are_the_ingest_shape() -> None:
    expected = ApimGenerator(8).events(200)
    lines = ApimGenerator(8).ndjson_lines(200)
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
    assert [orjson.loads(line) for line in lines] == [
        {"stream": stream, "attributes": attributes} for stream, attributes in expected
    ]
    assert lines[0] == ndjson_line(*expected[0])
    assert lines[0].startswith(b'{"stream":"')
