"""HTTP ingest on the active: ``POST /events`` (docs/api.md, "Ingest").

Request: a JSON array, or NDJSON (one object a line), of ``{"stream": str, "attributes":
{...}, "producer_id": str (optional), "seq": int (optional)}``, with ``Authorization:
Bearer <ingest token>``. Answer after commit: 200 ``{"offsets": [...]}``, one offset per
event in request order. Ordering contract of one request:

1. everything is checked before anything is appended: the token, the size, the JSON,
   every event's stream and attributes against the apps' stream definitions (the check
   the engine repeats on apply), the producer sequences;
2. the producer check is made *atomic with offset assignment*: ``PendingProducers``
   reserves each ``(producer_id, seq)`` on the event loop before the append, so a retry
   racing its own original is answered, never appended twice; a duplicate is answered
   with its original offset and not appended;
3. the accepted events are appended as one batch (``Node.append``: committed under a
   held lease) and only then answered; a failed append releases its reservations.

Errors are ``{"error": code, "message": ..., "index": i?}``: 400 (malformed JSON, not an
event, unknown stream, bad attribute), 401 (no token), 403 (wrong token), 409
(``out_of_order_sequence``, ``sequence_too_old``), 413 (request or event too large),
503 with ``Retry-After`` (not the active, overloaded, a retry racing its original);
nothing is appended on any of them. A client fault is never a 5xx other than 503.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from walrep.engine.app import App
from walrep.engine.dedup import PendingProducers, Verdict
from walrep.engine.schema import Validator, validator_for
from walrep.errors import (
    InvalidEventError,
    LimitExceededError,
    NotActiveError,
    OverloadedError,
    WalrepError,
)
from walrep.log.frame import Event
from walrep.node.http_common import Refusal, json_response, read_body
from walrep.node.role import Role

if TYPE_CHECKING:
    from walrep.node.runtime import Node

log = logging.getLogger("walrep.ingest")

EVENT_KEYS = frozenset({"stream", "attributes", "producer_id", "seq"})
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class IngestApi:
    """``POST /events`` for one node (see the module docstring)."""

    def __init__(
        self,
        node: Node,
        apps: Sequence[App],
        *,
        token: str | None,
        max_request_bytes: int,
        max_events_per_request: int,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.node = node
        self.metrics = IngestMetrics(registry)
        self._token = token.encode() if token is not None else None
        self.max_request_bytes = max_request_bytes
        self.max_events_per_request = max_events_per_request
        # Every app declaring a stream checks its events (the engine does the same).
        self._validators: dict[str, list[Validator]] = {}
        for app in apps:
            for name, spec in app.streams.items():
                self._validators.setdefault(name, []).append(validator_for(spec.definition))
        self._pending: PendingProducers | None = None
        self._pending_epoch = -1

    def app(self) -> web.Application:
        server = web.Application(client_max_size=self.max_request_bytes)
        server.router.add_post("/events", self.post_events)
        return server

    async def ingest(self, items: list[Any], transport: str = "tcp") -> list[int]:
        """Check and append decoded request items; their offsets once committed. Raises
        ``Refusal``. The checks and the producer reservations run before the first await,
        so requests started in order are reserved (and appended) in that order (the TCP
        ingest's pipelining relies on it). Counted in ``metrics`` under ``transport``."""
        started = time.perf_counter()
        try:
            offsets = await self._append(self._events(items))
        except Refusal as refusal:
            self.metrics.refused.labels(transport, refusal.code).inc()
            raise
        self.metrics.latency_s.labels(transport).observe(time.perf_counter() - started)
        self.metrics.events.labels(transport).inc(len(offsets))
        return offsets

    def token_refusal(self, given: bytes) -> Refusal | None:
        """None if ``given`` is the ingest token (or none is required)."""
        if self._token is None:
            return None
        if not given:
            return Refusal(401, "unauthorized", "an ingest token is required")
        if not hmac.compare_digest(given, self._token):
            return Refusal(403, "forbidden", "the ingest token is wrong")
        return None

    async def post_events(self, request: web.Request) -> web.Response:
        try:
            self._authenticate(request)
            body = await read_body(request, self.max_request_bytes)
            items = _parse(body, request.content_type)
        except Refusal as refusal:
            self.metrics.refused.labels("http", refusal.code).inc()
            return refusal.response()
        try:
            return json_response({"offsets": await self.ingest(items, "http")})
        except Refusal as refusal:
            return refusal.response()

    # --- checks, in order ---------------------------------------------------------------

    def _authenticate(self, request: web.Request) -> None:
        """``Authorization: Bearer <token>``, checked by ``token_refusal``."""
        if self._token is None:
            return
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if header and scheme.lower() != "bearer":
            raise Refusal(403, "forbidden", "the ingest token goes as Authorization: Bearer")
        refusal = self.token_refusal(token.encode())
        if refusal is not None:
            raise refusal

    def _events(self, items: list[Any]) -> list[Event]:
        if len(items) > self.max_events_per_request:
            raise Refusal(
                413,
                "too_many_events",
                f"{len(items)} events, at most {self.max_events_per_request} a request",
            )
        if not items:
            raise Refusal(400, "no_events", "the request holds no event")
        return [self._event(i, item) for i, item in enumerate(items)]

    def _event(self, index: int, item: Any) -> Event:
        if not isinstance(item, dict):
            raise Refusal(400, "not_an_event", "an event is a JSON object", index=index)
        extra = set(item) - EVENT_KEYS
        if extra:
            raise Refusal(400, "unknown_field", f"unknown fields {sorted(extra)}", index=index)
        stream, attributes = item.get("stream"), item.get("attributes")
        if not isinstance(stream, str) or stream not in self._validators:
            known = sorted(self._validators)
            raise Refusal(
                400, "unknown_stream", f"stream {stream!r} is not one of {known}", index=index
            )
        if not isinstance(attributes, dict):
            raise Refusal(400, "invalid_event", "attributes must be a JSON object", index=index)
        try:
            for validator in self._validators[stream]:
                validator.validate(attributes)
            return Event(stream, attributes, item.get("producer_id"), item.get("seq"))
        except InvalidEventError as e:
            raise Refusal(400, "invalid_event", f"stream {stream}: {e}", index=index) from None

    # --- producers and the append ---------------------------------------------------------

    def _producers(self) -> PendingProducers:
        """This term's overlay over the engine's producer table (a new term: a new one)."""
        node = self.node
        host = node.engine_host
        if host is None or host.engine is None:
            raise Refusal(503, "not_ready", "the engine is not open yet")
        if self._pending is None or self._pending_epoch != node.epoch:
            self._pending = PendingProducers(host.engine.producers)
            self._pending_epoch = node.epoch
        self._pending.trim(host.engine.applied)
        return self._pending

    async def _append(self, events: list[Event]) -> list[int]:
        node = self.node
        if node.role is not Role.ACTIVE:
            raise Refusal(503, "not_active", f"node {node.settings.node_id} is not the active")
        offsets: list[int | None] = [None] * len(events)
        accepted: list[int] = []  # indexes of the events to append
        reserved: list[tuple[str, int]] = []
        pending = self._producers() if any(len(e) == 4 for e in events) else None
        try:
            for i, event in enumerate(events):
                if pending is None or len(event) != 4:
                    accepted.append(i)
                    continue
                producer, seq = event[2], event[3]
                check = pending.reserve(producer, seq)
                if check.verdict is Verdict.ACCEPT:
                    reserved.append((producer, seq))
                    accepted.append(i)
                elif check.verdict is Verdict.DUPLICATE:
                    offsets[i] = check.offset
                elif check.verdict is Verdict.IN_FLIGHT:
                    raise Refusal(
                        503,
                        "in_flight",
                        f"{producer} seq {seq} is being appended: retry",
                        index=i,
                    )
                elif check.verdict is Verdict.OUT_OF_ORDER:
                    raise Refusal(
                        409,
                        "out_of_order_sequence",
                        f"{producer} seq {seq}: expected {check.expected_seq}",
                        index=i,
                    )
                else:
                    raise Refusal(
                        409,
                        "sequence_too_old",
                        f"{producer} seq {seq} is no longer known",
                        index=i,
                    )
            if accepted:
                result = await node.append([events[i] for i in accepted])
                for k, i in enumerate(accepted):
                    offsets[i] = result.base_offset + k
                    if pending is not None and len(events[i]) == 4:
                        pending.appended(events[i][2], events[i][3], result.base_offset + k)
                reserved.clear()
        except WalrepError as e:
            raise _refusal_for(e) from None
        finally:
            assert pending is not None or not reserved
            for producer, seq in reversed(reserved):  # refused or failed: nothing appended
                pending.released(producer, seq)  # type: ignore[union-attr]
        return [o for o in offsets if o is not None]


class IngestMetrics:
    """Prometheus series of the ingest paths (label ``transport``: http or tcp): request
    latency from checks to commit, events appended, refusals by code."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self.latency_s = Histogram(
            "walrep_ingest_request_seconds",
            "An ingest request from its checks to its commit",
            ["transport"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.events = Counter(
            "walrep_ingest_events", "Events appended by ingest", ["transport"], registry=registry
        )
        self.refused = Counter(
            "walrep_ingest_refused",
            "Ingest requests refused, by error code",
            ["transport", "code"],
            registry=registry,
        )


def _refusal_for(error: WalrepError) -> Refusal:
    if isinstance(error, NotActiveError):
        return Refusal(503, "not_active", str(error))
    if isinstance(error, OverloadedError):
        return Refusal(503, "overloaded", str(error))
    if isinstance(error, LimitExceededError):
        return Refusal(413, "event_too_large", str(error))
    if isinstance(error, InvalidEventError):
        return Refusal(400, "invalid_event", str(error))
    log.error("append failed: %s", error)  # our fault (a failed log): the client may retry
    return Refusal(503, "unavailable", f"the append failed on this node: {error}")


def _parse(body: bytes, content_type: str) -> list[Any]:
    """A JSON array, or NDJSON (by content type, else by the first byte)."""
    text = body.lstrip()
    if content_type == "application/json" or text[:1] == b"[":
        try:
            items = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise Refusal(400, "malformed_json", f"the body is not JSON: {e}") from None
        if not isinstance(items, list):
            raise Refusal(400, "malformed_json", "a JSON body must be an array of events")
        return items
    out: list[Any] = []
    for n, line in enumerate(body.splitlines()):
        if not line.strip():
            continue
        try:
            out.append(orjson.loads(line))
        except orjson.JSONDecodeError as e:
            raise Refusal(
                400, "malformed_json", f"line {n + 1} is not JSON: {e}", index=len(out)
            ) from None
    return out
