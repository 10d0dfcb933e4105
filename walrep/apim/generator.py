"""A seeded generator of WSO2 API-M 3.x analytics events: ``Request``, ``Fault``, ``ThrottledOut``.

Attribute names and types are those the gateways publish (``STREAMS``, restated from
docs APPS.md). Every random choice comes from one ``random.Random(seed)``: first the
catalog (``walrep.apim.catalog``), then the events, in one fixed order. Nothing reads
the wall clock unless a ``clock`` is given, and nothing iterates a set, so the same
seed and parameters give the same events, byte for byte, in every process.

One draw is one *invocation* of an API through a gateway, with one of three outcomes:

- served (probability ``1 - throttled_fraction - fault_fraction``): one ``Request``
  event; a share ``error_fraction`` of them carries a 4xx/5xx ``responseCode``;
- throttled (``throttled_fraction``): a ``ThrottledOut`` event, then a ``Request`` with
  ``throttledOut`` true and code 429, both at the same timestamp;
- faulted (``fault_fraction``): one ``Fault`` event (the backend was unreachable, so
  the gateway publishes no ``Request``).

Time: in simulated mode invocations arrive as a Poisson process of ``rate_per_s``
from ``start_ms``; in live mode (``clock`` given: ms since the epoch) each invocation
takes ``clock()``, never going backwards; pacing is the caller's. A share
``late_fraction`` of invocations is *late*: its timestamp is 1..``late_max_ms`` ms
before the latest on-time timestamp already produced. On-time timestamps never
decrease, so an event is late exactly when its timestamp is below the running maximum.

Latencies (ms) are built so the components add up::

    serviceTime  = securityLatency + throttlingLatency + requestMedLat
                   + responseMedLat + otherLatency           (time in the gateway)
    backendTime  = backendLatency                           (log-normal per resource;
                                                             0 if the backend is not called)
    responseTime = serviceTime + backendTime
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any, Final

import orjson

from walrep.apim.catalog import (
    Application,
    Catalog,
    CatalogShape,
    Route,
    User,
    build_catalog,
    cumulative_weights,
    guide,
)
from walrep.log.frame import Event

Attributes = dict[str, Any]  # values are str, int or bool, as STREAMS declares
Pair = tuple[str, Attributes]  # (stream, attributes)

_STRINGS: Final = "string"
STREAMS: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "Request": (
        *((name, _STRINGS) for name in ("meta_clientType", "applicationConsumerKey")),
        *((name, _STRINGS) for name in ("applicationName", "applicationId", "applicationOwner")),
        *((name, _STRINGS) for name in ("apiContext", "apiName", "apiVersion", "apiResourcePath")),
        *((name, _STRINGS) for name in ("apiResourceTemplate", "apiMethod", "apiCreator")),
        *((name, _STRINGS) for name in ("apiCreatorTenantDomain", "apiTier", "apiHostname")),
        *((name, _STRINGS) for name in ("username", "userTenantDomain", "userIp", "userAgent")),
        *(("requestTimestamp", "int"), ("throttledOut", "bool"), ("responseTime", "int")),
        *(("serviceTime", "int"), ("backendTime", "int"), ("responseCacheHit", "bool")),
        *(("responseSize", "int"), ("protocol", _STRINGS), ("responseCode", "int")),
        *(("destination", _STRINGS), ("securityLatency", "int"), ("throttlingLatency", "int")),
        *(("requestMedLat", "int"), ("responseMedLat", "int"), ("backendLatency", "int")),
        *(("otherLatency", "int"), ("gatewayType", _STRINGS), ("label", _STRINGS)),
    ),
    "Fault": (
        *((name, _STRINGS) for name in ("meta_clientType", "applicationConsumerKey", "apiName")),
        *((name, _STRINGS) for name in ("apiVersion", "apiContext", "apiResourcePath")),
        *((name, _STRINGS) for name in ("apiResourceTemplate", "apiMethod", "apiCreator")),
        *((name, _STRINGS) for name in ("username", "userTenantDomain", "apiCreatorTenantDomain")),
        *((name, _STRINGS) for name in ("hostname", "applicationId", "applicationName")),
        *((name, _STRINGS) for name in ("applicationOwner", "protocol", "errorCode")),
        *(("errorMessage", _STRINGS), ("requestTimestamp", "int")),
    ),
    "ThrottledOut": (
        *((name, _STRINGS) for name in ("meta_clientType", "username", "userTenantDomain")),
        *((name, _STRINGS) for name in ("apiName", "apiVersion", "apiContext", "apiCreator")),
        *((name, _STRINGS) for name in ("apiCreatorTenantDomain", "apiResourceTemplate")),
        *((name, _STRINGS) for name in ("apiMethod", "applicationId", "applicationName")),
        *((name, _STRINGS) for name in ("subscriber", "throttledOutReason", "gatewayType")),
        *(("throttledOutTimestamp", "int"), ("hostname", _STRINGS)),
    ),
}
_PLACEHOLDER: Final[dict[str, Any]] = {"string": "", "int": 0, "bool": False}

assert [len(attributes) for attributes in STREAMS.values()] == [37, 20, 17]
assert all(t in _PLACEHOLDER for attributes in STREAMS.values() for _, t in attributes)

GATEWAY_TYPE: Final = "SYNAPSE"
GATEWAY_LABEL: Final = "Synapse"
# (responseCode, whether the backend was called, weight): 401/403/405 come from the gateway.
_ERRORS: Final = (
    *((400, True, 0.18), (401, False, 0.22), (403, False, 0.06), (404, True, 0.22)),
    *((405, False, 0.02), (409, True, 0.03), (422, True, 0.04), (500, True, 0.12)),
    *((502, True, 0.04), (503, True, 0.05), (504, True, 0.02)),
)
# (errorCode, errorMessage, weight): Synapse transport error codes.
_FAULTS: Final = (
    ("101503", "Error connecting to the back end", 0.45),
    ("101504", "Connection timed out", 0.25),
    ("101505", "Connection closed by the back end", 0.10),
    ("303001", "Endpoint suspended after repeated failures", 0.15),
    ("101500", "Error in sender", 0.05),
)
# (throttledOutReason, weight); an "Unlimited" subscription never hits its own limit.
_THROTTLE_REASONS: Final = (
    ("SUBSCRIPTION_LIMIT_EXCEEDED", 0.55),
    ("APPLICATION_LIMIT_EXCEEDED", 0.20),
    ("RESOURCE_LIMIT_EXCEEDED", 0.12),
    ("API_LIMIT_EXCEEDED", 0.10),
    ("HARD_LIMIT_EXCEEDED", 0.03),
)
_PATH_IDS: Final = 10_000  # path parameters take values 0.._PATH_IDS-1
_CACHE_HIT_FRACTION: Final = 0.35  # of cacheable GETs
# Each invocation draws _BITS random bits, used as fields, low bit first: the small gateway
# latencies (ms) securityLatency 2 bits (0..3), throttlingLatency 1, otherLatency 1,
# requestMedLat 2, responseMedLat 2; then 6 bits, all zero (1/64 of requests) for a
# key-cache miss, which adds a key-manager round trip to securityLatency; then 16 bits
# that pick the gateway (multiply-shift: uniform to within gateways / 2**16).
_BITS: Final = 30  # one 30-bit digit of a Python int
_ALL_LATENCIES_MASK: Final = 0xFF
_NO_RESPONSE_MASK: Final = 0x3F  # the backend was not called: no response mediation
_NO_MEDIATION_MASK: Final = 0x0F  # throttled: rejected before any mediation
_KEY_CACHE_MISS_MASK: Final = 0x3F << 8
_HOSTNAME_SHIFT: Final = 14
_HOSTNAME_BITS: Final = 16
_KEY_MANAGER_LOG_MS: Final = (3.0, 0.5)  # ln-median (~20 ms) and sigma of that round trip
_ERROR_BODY_BYTES: Final = 180  # typical size of a gateway's JSON error body

assert all(len(reason) <= 30 for reason, _ in _THROTTLE_REASONS)  # WSO2 stores 30 chars

assert _HOSTNAME_SHIFT + _HOSTNAME_BITS == _BITS and _KEY_CACHE_MISS_MASK >> _HOSTNAME_SHIFT == 0

# Bounds on the parameters: every table is built up front, so memory follows them.
_LIMITS: Final = {
    "tenants": 100,
    "apis": 10_000,
    "versions_max": 20,
    "applications": 200_000,
    "subscriptions_max": 50,
    "users": 1_000_000,
    "gateways": 1_000,
}


@dataclass(slots=True)
class _Templates:
    """The attributes of one route (application x API version) that never change."""

    request: Attributes
    fault: Attributes
    throttled: Attributes


class ApimGenerator:
    """Events of the three API-M streams, reproducible from ``seed`` and the parameters.

    The generator is one stream: every method continues where the previous one (or the
    iterator of ``iter_events``) stopped. Make a new generator to start again. Bad
    parameters raise ``ValueError``.
    """

    def __init__(
        self,
        seed: int,
        *,
        start_ms: int = 1_767_225_600_000,  # 2026-01-01T00:00:00Z
        rate_per_s: float = 1000.0,
        apis: int = 40,
        applications: int = 300,
        users: int = 5000,
        late_fraction: float = 0.01,
        late_max_ms: int = 120_000,
        tenants: int = 4,
        versions_max: int = 3,
        subscriptions_max: int = 6,
        gateways: int = 3,
        throttled_fraction: float = 0.01,
        fault_fraction: float = 0.005,
        error_fraction: float = 0.03,
        zipf_exponent: float = 1.0,
        latency_sigma: float = 0.6,
        clock: Callable[[], int] | None = None,
    ) -> None:
        shape = CatalogShape(
            tenants=tenants,
            apis=apis,
            versions_max=versions_max,
            applications=applications,
            subscriptions_max=subscriptions_max,
            users=users,
            gateways=gateways,
            zipf_exponent=zipf_exponent,
        )
        for name, limit in _LIMITS.items():
            _require(1 <= getattr(shape, name) <= limit, f"{name} must be in 1..{limit}")
        for name in ("apis", "applications", "users"):
            _require(getattr(shape, name) >= tenants, f"{name} must be at least tenants")
        _require(0.0 < zipf_exponent <= 4.0, "zipf_exponent must be in (0, 4]")
        _require(rate_per_s > 0.0 and math.isfinite(rate_per_s), "rate_per_s must be > 0")
        _require(1 <= late_max_ms <= start_ms, "late_max_ms must be in 1..start_ms")
        for name, fraction in (
            ("late_fraction", late_fraction),
            ("throttled_fraction", throttled_fraction),
            ("fault_fraction", fault_fraction),
            ("error_fraction", error_fraction),
        ):
            _require(0.0 <= fraction <= 1.0, f"{name} must be in [0, 1]")
        _require(throttled_fraction + fault_fraction <= 1.0, "throttled + fault fraction > 1")
        _require(0.0 <= latency_sigma <= 3.0, "latency_sigma must be in [0, 3]")
        self.seed: Final = seed
        self.start_ms: Final = start_ms
        self.rate_per_s: Final = rate_per_s
        self.late_fraction: Final = late_fraction
        self.late_max_ms: Final = late_max_ms
        self.throttled_fraction: Final = throttled_fraction
        self.fault_fraction: Final = fault_fraction
        self.error_fraction: Final = error_fraction
        self.latency_sigma: Final = latency_sigma
        self._clock = clock
        self._rng = random.Random(seed)
        self.catalog: Final[Catalog] = build_catalog(self._rng, shape)
        self._stream = self._generate()

    # --- the public forms of the one stream -------------------------------------------

    def iter_events(self) -> Iterator[Pair]:
        """The stream itself: an endless iterator of ``(stream, attributes)``."""
        return self._stream

    def events(self, n: int) -> list[Pair]:
        """The next ``n`` events as ``(stream, attributes)``."""
        return list(islice(self._stream, n))

    def batches(self, n_batches: int, batch_size: int) -> Iterator[list[Pair]]:
        """``n_batches`` lists of the next ``batch_size`` events each, drawn as reached."""
        for _ in range(n_batches):
            yield self.events(batch_size)

    def log_events(
        self, n: int, *, producer_id: str | None = None, first_seq: int = 0
    ) -> list[Event]:
        """The next ``n`` events as log ``Event``s; with ``producer_id``, seq from ``first_seq``."""
        if producer_id is None:
            return [Event(stream, attributes) for stream, attributes in self.events(n)]
        return [
            Event(stream, attributes, producer_id, first_seq + i)
            for i, (stream, attributes) in enumerate(self.events(n))
        ]

    def log_batches(
        self,
        n_batches: int,
        batch_size: int,
        *,
        producer_id: str | None = None,
        first_seq: int = 0,
    ) -> Iterator[list[Event]]:
        """``log_events`` in batches; seq (with ``producer_id``) runs on across batches."""
        for i in range(n_batches):
            seq = first_seq + i * batch_size
            yield self.log_events(batch_size, producer_id=producer_id, first_seq=seq)

    def ndjson_lines(self, n: int) -> list[bytes]:
        """The next ``n`` events as ingest NDJSON lines (``ndjson_line``), newline included."""
        return [ndjson_line(stream, attributes) for stream, attributes in self.events(n)]

    # --- the draw -----------------------------------------------------------------------

    def _generate(self) -> Iterator[Pair]:
        """The endless stream, one invocation per turn of the loop.

        One long loop on purpose: it runs per event, every lookup is bound to a local
        first, and a helper call per event would cost ~5% of the rate. The order of the
        draws is the determinism contract: change it and every seed gives other events.
        """
        rnd = self._rng.random
        random_bits = self._rng.getrandbits
        # math.floor, not int(): int() of a float is a type call with argument parsing, 3x slower.
        floor, log1p, sqrt, exp = math.floor, math.log1p, math.sqrt, math.exp
        cos, sin = math.cos, math.sin
        tau = math.tau
        catalog = self.catalog
        applications = catalog.applications
        application_cumulative = catalog.application_cumulative
        routes = catalog.routes
        application_low, application_high = guide(application_cumulative)
        application_cells = len(application_low)
        # Per tenant: each user's four Request attributes as one dict (one |= instead
        # of four stores), their cumulative popularity and its guide table.
        user_tables = tuple(
            (tuple(_user_attributes(user) for user in users), cumulative, *guide(cumulative))
            for users, cumulative in zip(
                catalog.users_by_tenant, catalog.user_cumulative_by_tenant, strict=True
            )
        )
        hostnames = catalog.hostnames
        hostname_count = len(hostnames)
        path_ids = tuple(str(i) for i in range(_PATH_IDS))  # str() per event costs more
        templates: list[_Templates | None] = [None] * len(routes)  # built on first use
        errors = tuple((code, backend) for code, backend, _ in _ERRORS)
        error_cumulative = cumulative_weights([w for _, _, w in _ERRORS])
        faults = tuple((code, message) for code, message, _ in _FAULTS)
        fault_cumulative = cumulative_weights([w for _, _, w in _FAULTS])
        reasons = tuple(reason for reason, _ in _THROTTLE_REASONS)
        reason_cumulative = cumulative_weights([w for _, w in _THROTTLE_REASONS])
        unlimited_reasons = reasons[1:]  # no SUBSCRIPTION_LIMIT_EXCEEDED
        unlimited_cumulative = cumulative_weights([w for _, w in _THROTTLE_REASONS[1:]])
        key_manager_mu, key_manager_sigma = _KEY_MANAGER_LOG_MS
        clock = self._clock
        mean_gap_ms = 1000.0 / self.rate_per_s
        start_ms = self.start_ms
        late_fraction, late_max_ms = self.late_fraction, self.late_max_ms
        throttled_fraction = self.throttled_fraction
        served_from = throttled_fraction + self.fault_fraction  # outcome draws >= this: served
        error_fraction = self.error_fraction
        sigma = self.latency_sigma
        gateway_latencies = _GATEWAY_LATENCIES
        spare_normal: float | None = None  # Box-Muller makes normals in pairs
        since_start_ms = 0.0
        on_time_ms = start_ms if clock is None else int(clock())
        while True:
            if clock is None:  # exponential gaps: a Poisson process of rate_per_s
                since_start_ms -= log1p(-rnd()) * mean_gap_ms
                now_ms = start_ms + floor(since_start_ms)
            else:
                now_ms = max(int(clock()), on_time_ms)
            if rnd() < late_fraction:
                timestamp_ms = on_time_ms - 1 - floor(rnd() * late_max_ms)
            else:
                timestamp_ms = on_time_ms = now_ms
            # Zipf draws: bisect the cumulative table within the bounds of the guide table.
            u = rnd()
            cell = floor(u * application_cells)
            index = application_low[cell]
            if index != application_high[cell]:
                index = bisect_right(application_cumulative, u, index, application_high[cell])
            application = applications[index]
            route = routes[
                application.first_route + bisect_right(application.route_cumulative, rnd())
            ]
            api = route.api
            users, user_cumulative, user_low, user_high = user_tables[application.tenant]
            u = rnd()
            cell = floor(u * len(user_low))
            index = user_low[cell]
            if index != user_high[cell]:
                index = bisect_right(user_cumulative, u, index, user_high[cell])
            user = users[index]
            resource = api.resources[bisect_right(api.resource_cumulative, rnd())]
            # One draw of random bits for the hostname and the small latencies (_BITS_*).
            bits = random_bits(_BITS)
            hostname = hostnames[(bits >> _HOSTNAME_SHIFT) * hostname_count >> _HOSTNAME_BITS]
            if resource.has_parameter:
                path_id = path_ids[floor(rnd() * _PATH_IDS)]
                path = f"{resource.path_prefix}{path_id}{resource.path_suffix}"
            else:
                path = resource.path_prefix
            fixed = templates[route.index]
            if fixed is None:
                fixed = templates[route.index] = _templates(route, application)
            outcome = rnd()

            if throttled_fraction <= outcome < served_from:  # faulted: no Request
                fault = fixed.fault.copy()
                fault["apiResourcePath"] = path
                fault["apiResourceTemplate"] = resource.template
                fault["apiMethod"] = resource.method
                fault["username"] = user["username"]
                fault["userTenantDomain"] = user["userTenantDomain"]
                fault["hostname"] = hostname
                error_code, message = faults[bisect_right(fault_cumulative, rnd())]
                fault["errorCode"] = error_code
                fault["errorMessage"] = message
                fault["requestTimestamp"] = timestamp_ms
                yield "Fault", fault
                continue

            request = fixed.request.copy()
            request["apiResourcePath"] = path
            request["apiResourceTemplate"] = resource.template
            request["apiMethod"] = resource.method
            request["apiHostname"] = hostname
            request |= user
            request["requestTimestamp"] = timestamp_ms
            destinations = api.destinations
            if len(destinations) > 1:  # else the template holds the one destination
                request["destination"] = destinations[floor(rnd() * len(destinations))]
            if bits & _KEY_CACHE_MISS_MASK == 0:  # token validated at the key manager
                normal = sqrt(-2.0 * log1p(-rnd())) * cos(tau * rnd())
                key_manager_ms = floor(exp(key_manager_mu + key_manager_sigma * normal))
            else:
                key_manager_ms = 0

            if outcome < throttled_fraction:  # throttled: rejected before mediation
                throttled = fixed.throttled.copy()
                throttled["username"] = user["username"]
                throttled["userTenantDomain"] = user["userTenantDomain"]
                throttled["apiResourceTemplate"] = resource.template
                throttled["apiMethod"] = resource.method
                if route.tier == "Unlimited":
                    reason = unlimited_reasons[bisect_right(unlimited_cumulative, rnd())]
                else:
                    reason = reasons[bisect_right(reason_cumulative, rnd())]
                throttled["throttledOutReason"] = reason
                throttled["throttledOutTimestamp"] = timestamp_ms
                throttled["hostname"] = hostname
                yield "ThrottledOut", throttled
                latencies, service_ms = gateway_latencies[bits & _NO_MEDIATION_MASK]
                request |= latencies
                if key_manager_ms:
                    request["securityLatency"] = latencies["securityLatency"] + key_manager_ms
                request["responseTime"] = request["serviceTime"] = service_ms + key_manager_ms
                request["throttledOut"] = True
                request["responseCode"] = 429
                request["responseSize"] = _ERROR_BODY_BYTES
                yield "Request", request  # backend times stay 0
                continue

            if rnd() < error_fraction:
                code, backend_called = errors[bisect_right(error_cumulative, rnd())]
                size_bytes = _ERROR_BODY_BYTES
            else:
                code = resource.success_code
                size_bytes = floor(resource.response_bytes_median * (0.5 + rnd()))
                backend_called = not (resource.cacheable and rnd() < _CACHE_HIT_FRACTION)
                if not backend_called:
                    request["responseCacheHit"] = True
            if backend_called:
                # Log-normal by Box-Muller, inline and in pairs: random.lognormvariate costs
                # three times as much (a rejection loop in Python).
                if spare_normal is None:
                    radius, angle = sqrt(-2.0 * log1p(-rnd())), tau * rnd()
                    normal, spare_normal = radius * cos(angle), radius * sin(angle)
                else:
                    normal, spare_normal = spare_normal, None
                backend_ms = floor(exp(resource.backend_median_log_ms + sigma * normal))
                latencies, service_ms = gateway_latencies[bits & _ALL_LATENCIES_MASK]
                request["backendTime"] = request["backendLatency"] = backend_ms
            else:  # no response mediation either
                backend_ms = 0
                latencies, service_ms = gateway_latencies[bits & _NO_RESPONSE_MASK]
            request |= latencies
            if key_manager_ms:
                request["securityLatency"] = latencies["securityLatency"] + key_manager_ms
                service_ms += key_manager_ms
            request["responseTime"] = service_ms + backend_ms
            request["serviceTime"] = service_ms
            request["responseSize"] = size_bytes
            request["responseCode"] = code
            yield "Request", request


def ndjson_line(stream: str, attributes: Attributes) -> bytes:
    """One ingest NDJSON line ``{"stream": ..., "attributes": {...}}`` with its newline."""
    return orjson.dumps(
        {"stream": stream, "attributes": attributes}, option=orjson.OPT_APPEND_NEWLINE
    )


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _gateway_latencies(bits: int) -> tuple[dict[str, int], int]:
    """The gateway latency attributes a draw of bits stands for, and their sum (serviceTime)."""
    latencies = {
        "securityLatency": bits & 3,
        "throttlingLatency": bits >> 2 & 1,
        "requestMedLat": bits >> 4 & 3,
        "responseMedLat": bits >> 6 & 3,
        "otherLatency": bits >> 3 & 1,
    }
    return latencies, sum(latencies.values())


# Shared by every event: |= copies the values (ints) into each event's own dict.
_GATEWAY_LATENCIES: Final = tuple(_gateway_latencies(bits) for bits in range(256))


def _user_attributes(user: User) -> dict[str, str]:
    return {
        "username": user.username,
        "userTenantDomain": user.tenant_domain,
        "userIp": user.ip,
        "userAgent": user.user_agent,
    }


def _templates(route: Route, application: Application) -> _Templates:
    """The fixed attributes of ``route``, every key present in STREAMS order.

    The draw fills the rest by assignment, which keeps that order (and costs a third of
    building a 37-key dict literal per event).
    """
    api = route.api
    shared = {
        "meta_clientType": application.key_type,
        "applicationConsumerKey": application.consumer_key,
        "applicationName": application.name,
        "applicationId": application.application_id,
        "applicationOwner": application.owner,
        "subscriber": application.owner,
        "apiContext": api.context,
        "apiName": api.name,
        "apiVersion": api.version,
        "apiCreator": api.creator,
        "apiCreatorTenantDomain": api.creator_tenant_domain,
        "apiTier": route.tier,
        "protocol": application.protocol,
        "gatewayType": GATEWAY_TYPE,
        "label": GATEWAY_LABEL,
        "destination": api.destinations[0],
    }

    def template(stream: str) -> Attributes:
        return {name: shared.get(name, _PLACEHOLDER[kind]) for name, kind in STREAMS[stream]}

    return _Templates(template("Request"), template("Fault"), template("ThrottledOut"))
