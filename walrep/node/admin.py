"""The admin HTTP API of a walrep node (both roles; port 7080 + ``port_offset``).

``admin_app(node, urls=...)`` builds an ``aiohttp`` application that only *reads* the node:
every answer is computed from the node as it stands when the request arrives (one
``NodeView`` per request), nothing is cached and nothing is changed. Routes and their
contracts (``docs/api.md`` "Admin API" documents the same, field by field):

* ``GET /health``: 200 ``{"status": "up"}`` whenever the process can answer, in any role
  (a fenced or stopped node too: /health says "the process runs", nothing more).
* ``GET /ready``: 200 when the role is settled (``PASSIVE`` or ``ACTIVE``), else 503;
  body ``{"ready": bool, "role": str}``.
* ``GET /active``: 200 only when the role is ``ACTIVE`` **and** the node holds a valid
  lease by its own clock (``core.holds_lease_at(node.now_ms())``): what a load balancer
  polls to find the one node that accepts events. Else 503.
* ``GET /standby``: 200 only on a passive that is in sync by the **passive rule**
  (``standby_problem``): the role is ``PASSIVE``; the event-sync connection holding the
  passive's one writer slot is open and its receiver is ``STREAMING`` (the active streams
  to it: its first Append or heartbeat has come); and the local log's durable end has
  reached the highest committed offset that connection's active told it
  (``Receiver.told_committed``: a passive still catching up is not a standby). Else
  503 with the reason. The passive cannot see the active's view (``standby_in_sync``).
* ``GET /status``: the JSON document of ``status_document``.
* ``GET /cluster``, ``GET /history``: the group as the coordination store has it
  (``walrep.node.admin_group``).
* ``GET /metrics``: Prometheus text exposition (``CONTENT_TYPE_LATEST``) from a registry
  of this application's own (never the global one: one process may run many nodes),
  read from the node at scrape time (``NodeCollector``).
* Any other path: 404 ``{"error": "not_found", "message": ...}``; a known path with
  another method: 405 ``{"error": "method_not_allowed", "message": ..., "allowed": [...]}``
  with an ``Allow`` header. A node that is not started yet (no core) answers /health 200,
  /ready 503, /active and /standby 503, /status with role ``STARTING`` and zeros.
"""

from __future__ import annotations

import hmac
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from walrep.errors import WalrepError
from walrep.log.clock import wall_clock_ms
from walrep.node.admin_group import group_routes
from walrep.node.role import Role
from walrep.node.runtime import Node
from walrep.replica.receiver import Phase

URL_KEYS: Final = ("admin", "ingest_http", "ingest_tcp", "query", "event_sync")
SETTLED: Final = frozenset({Role.PASSIVE, Role.ACTIVE})  # /ready answers 200
_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


def standby_problem(node: Node) -> str | None:
    """None if ``node`` is an in-sync passive by the passive rule (module docstring), else
    why it is not."""
    core = node.core
    if core is None or core.role is not Role.PASSIVE:
        return f"the node is {node.role.value}, not PASSIVE"
    slot = core.receiving.slot
    conn = core.receiving.conns.get(slot) if slot is not None else None
    if conn is None or not conn.open:
        return "no active is connected"
    receiver = conn.receiver
    if receiver.phase is not Phase.STREAMING:
        return f"the receiver is {receiver.phase.value}, not streaming"
    if node.log.durable_end < receiver.told_committed:
        return (
            f"durable end {node.log.durable_end} is below the committed offset "
            f"{receiver.told_committed} the active told"
        )
    return None


def replication_lag(node: Node) -> tuple[int | None, int | None]:
    """``(events, ms)`` the standby is behind. On the active: the events of its log the
    connected standby does not hold durably, and the age (wall clock) of the oldest of
    them; on a passive: the events it lacks of the highest commit offset its active told,
    and the age of the newest event it holds while it lacks some. 0 when caught up; None
    without a standby (active) or an active (passive)."""
    core, wal = node.core, node.wal
    if core is None or wal is None:
        return None, None
    term = core.term
    if term is not None:
        shipper = term.shipper
        if term.link is None or shipper.standby is None:
            return None, None
        held, want, oldest = shipper.acked, wal.log_end, True
    else:
        slot = core.receiving.slot
        conn = core.receiving.conns.get(slot) if slot is not None else None
        if conn is None or not conn.open:
            return None, None
        held, want, oldest = wal.durable_end, conn.receiver.told_committed, False
    behind = max(0, want - held)
    if behind == 0:
        return 0, 0
    at = held if oldest else held - 1
    try:  # the frame holding that offset: its header has the ingest time (no decoding)
        frame = next(iter(wal.frames(at, at + 1)), None) if at >= wal.log_start else None
    except WalrepError:
        frame = None
    age = None if frame is None else max(0, wall_clock_ms() - frame.header.ingest_time_ms)
    return behind, age


@dataclass(frozen=True, slots=True)
class NodeView:
    """What one request reads from the node, all at once (offsets are event offsets)."""

    node_id: str
    group_id: str
    role: Role
    epoch: int
    lease_valid: bool
    log_start: int
    log_end: int
    durable_end: int
    committed: int
    applied: int | None  # None: the node runs no engine
    lag_events: int | None
    replication_lag_events: int | None
    replication_lag_ms: int | None
    unprotected_offsets: int | None
    in_sync: bool
    standby: str | None
    snapshot_offset: int | None
    snapshot_epoch: int | None
    snapshot_age_ms: int | None
    capture_pause_ms: float | None
    failure: str | None
    counters: Counter[str]


def view_of(node: Node) -> NodeView:
    """Read ``node`` now (safe in every role, before the start and after the stop)."""
    core, wal, host = node.core, node.wal, node.engine_host
    role = node.role
    log_start, log_end, durable_end = (
        (wal.log_start, wal.log_end, wal.durable_end) if wal is not None else (0, 0, 0)
    )
    committed = node.committed
    engine = host.engine if host is not None else None
    applied = engine.applied if engine is not None else None
    # On the active: appended here but not committed yet (waiting for fsyncs or the
    # standby's ack). Elsewhere: committed but not yet applied by the engine.
    lag: int | None
    if role is Role.ACTIVE:
        lag = max(0, log_end - committed)
    else:
        lag = max(0, committed - applied) if applied is not None else None
    term = core.term if core is not None else None
    in_sync = node.standby_in_sync if term is not None else standby_problem(node) is None
    behind, since = replication_lag(node)
    snap = host.last_snapshot if host is not None else None
    failure = node.failure or (core.failure if core is not None else None)
    counters: Counter[str] = Counter()  # the core's and the engine host's, summed by name
    for owner in (core, host):
        for name, count in owner.metrics.items() if owner is not None else ():
            counters[_UNSAFE.sub("_", name)] += count
    return NodeView(
        node_id=node.settings.node_id,
        group_id=node.settings.group,
        role=role,
        epoch=node.epoch,
        lease_valid=core is not None and core.holds_lease_at(node.now_ms()),
        log_start=log_start,
        log_end=log_end,
        durable_end=durable_end,
        committed=committed,
        applied=applied,
        lag_events=lag,
        replication_lag_events=behind,
        replication_lag_ms=since,
        unprotected_offsets=term.shipper.unprotected_offsets if term is not None else None,
        in_sync=in_sync,
        standby=term.shipper.standby if term is not None else None,
        snapshot_offset=snap.offset if snap is not None else None,
        snapshot_epoch=snap.epoch if snap is not None else None,
        # created_ms is the engine host's wall clock (not the node's monotonic one)
        snapshot_age_ms=max(0, int(time.time() * 1000) - snap.created_ms) if snap else None,
        capture_pause_ms=host.last_capture_pause_ms if host is not None else None,
        failure=str(failure) if failure is not None else None,
        counters=counters,
    )


def status_document(node: Node, urls: Mapping[str, str | None]) -> dict[str, Any]:
    """The body of ``GET /status``."""
    v = view_of(node)
    snapshot = (
        {"offset": v.snapshot_offset, "epoch": v.snapshot_epoch, "age_ms": v.snapshot_age_ms}
        if v.snapshot_offset is not None
        else None
    )
    return {
        "node_id": v.node_id,
        "group_id": v.group_id,
        "role": v.role.value,
        "epoch": v.epoch,
        "lease_valid": v.lease_valid,
        "log_start": v.log_start,
        "log_end": v.log_end,
        "durable_end": v.durable_end,
        "committed": v.committed,
        "applied": v.applied,
        "lag_events": v.lag_events,
        "replication_lag_events": v.replication_lag_events,
        "replication_lag_ms": v.replication_lag_ms,
        "unprotected_offsets": v.unprotected_offsets,
        "in_sync": v.in_sync,
        "standby": v.standby,
        "last_snapshot": snapshot,
        "failure": v.failure,
        # Why this node does not take the lease by itself (null: it would, when free).
        "held_back": (node.core.held_back or None) if node.core is not None else None,
        "follows_again_in_ms": _follows_again_in_ms(node),
        "promotion_steps": [
            {"name": s.step, "duration_ms": s.duration_ms, "epoch": s.epoch} for s in node.steps
        ],
        "urls": {key: urls.get(key) for key in URL_KEYS},
    }


class NodeCollector(Collector):
    """Prometheus families read from one node at scrape time (``docs/api.md`` lists them)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterable[Metric]:
        v = view_of(self.node)
        role = GaugeMetricFamily("walrep_role", "1 for the node's current role", labels=["role"])
        for r in Role:
            role.add_metric([r.value], 1.0 if r is v.role else 0.0)
        gauges: list[Metric] = [role]

        def gauge(name: str, doc: str, value: float | None) -> None:
            if value is not None:
                gauges.append(GaugeMetricFamily(name, doc, value=value))

        gauge("walrep_epoch", "Lease epoch (highest seen when not leader)", v.epoch)
        gauge("walrep_lease_valid", "1 while the node holds a valid lease", v.lease_valid)
        gauge("walrep_log_start_offset", "Lowest offset still in the log", v.log_start)
        gauge("walrep_log_end_offset", "Next offset the log assigns", v.log_end)
        gauge("walrep_durable_end_offset", "Offsets below are fsynced here", v.durable_end)
        gauge("walrep_committed_offset", "Offsets below are committed", v.committed)
        gauge("walrep_applied_offset", "Offsets below are applied by the engine", v.applied)
        gauge("walrep_commit_lag_events", "lag_events of /status", v.lag_events)
        gauge("walrep_in_sync", "in_sync of /status", v.in_sync)
        behind = v.replication_lag_events
        gauge("walrep_replication_lag_events", "Events the standby lacks", behind)
        gauge("walrep_replication_lag_seconds", "Age of what it lacks", _s(v.replication_lag_ms))
        gauge("walrep_unprotected_offsets", "Committed without the standby", v.unprotected_offsets)
        age = v.snapshot_age_ms
        gauge("walrep_snapshot_age_seconds", "Age of the last snapshot", _s(age))
        pause = v.capture_pause_ms
        gauge("walrep_last_capture_pause_seconds", "Loop pause of the last capture", _s(pause))
        steps = GaugeMetricFamily(
            "walrep_promotion_step_seconds", "Last duration of each promotion step", labels=["step"]
        )
        for name, ms in {s.step: s.duration_ms for s in self.node.steps}.items():
            steps.add_metric([name], ms / 1000)
        gauges.append(steps)
        taken = {g.name for g in gauges}
        for name, value in sorted(v.counters.items()):
            family = f"walrep_{name}"
            if family in taken:  # a counter never shadows a gauge's name
                family = f"walrep_counter_{name}"
            yield CounterMetricFamily(family, f"Count of {name} events", value=value)
        yield from gauges


def _follows_again_in_ms(node: Node) -> int | None:
    """After this node handed the lease over (switchover): how long until it may take it
    again by itself; null otherwise."""
    core = node.core
    at = core.resume_at_ms if core is not None else None
    return None if at is None else max(0, at - node.now_ms())


def _s(ms: float | None) -> float | None:
    return ms / 1000 if ms is not None else None


def _json(status: int, body: Mapping[str, Any], **headers: str) -> web.Response:
    return web.json_response(dict(body), status=status, headers=headers or None)


def _error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    headers = {"Allow": ", ".join(extra["allowed"])} if "allowed" in extra else {}
    return _json(status, {"error": code, "message": message, **extra}, **headers)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The router's 404 and 405 as JSON (never an HTML page)."""
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as e:
        allowed = sorted(e.allowed_methods)
        message = f"{request.method} is not allowed on {request.path}"
        return _error(405, "method_not_allowed", message, allowed=allowed)
    except web.HTTPNotFound:
        return _error(404, "not_found", f"no route {request.method} {request.path}")


Switchover = Callable[[str | None], Awaitable[tuple[int, dict[str, Any]]]]
Takeover = Callable[[bool], Awaitable[tuple[int, dict[str, Any]]]]


def admin_app(
    node: Node,
    *,
    urls: Callable[[], Mapping[str, str | None]],
    switchover: Switchover | None = None,
    takeover: Takeover | None = None,
    admin_token: str | None = None,
    registry: CollectorRegistry | None = None,
) -> web.Application:
    """The admin API of ``node`` (module docstring). ``urls()`` is called on every /status:
    the URL each listener is reachable at, None for one not listening (keys ``URL_KEYS``;
    a missing key reads as None, other keys are ignored). ``switchover(to)`` carries out
    ``POST /switchover`` (``walrep.node.process``), which needs ``admin_token`` as
    ``Authorization: Bearer``: without a token configured it is refused (403).
    ``registry``: the process's own registry, where other parts (ingest) keep their
    histograms too; the node's collector is added to it (a new one when None)."""
    registry = registry if registry is not None else CollectorRegistry()
    registry.register(NodeCollector(node))

    async def health(_: web.Request) -> web.Response:
        return _json(200, {"status": "up"})

    async def ready(_: web.Request) -> web.Response:
        settled = node.role in SETTLED
        return _json(200 if settled else 503, {"ready": settled, "role": node.role.value})

    async def active(_: web.Request) -> web.Response:
        core, role = node.core, node.role
        if role is Role.ACTIVE and core is not None and core.holds_lease_at(node.now_ms()):
            return _json(200, {"active": True, "role": role.value, "epoch": node.epoch})
        why = "no valid lease" if role is Role.ACTIVE else f"the node is {role.value}"
        body = {"active": False, "role": role.value, "epoch": node.epoch, "reason": why}
        return _json(503, body)

    async def standby(_: web.Request) -> web.Response:
        why = standby_problem(node)
        body: dict[str, Any] = {"standby": why is None, "role": node.role.value}
        if why is not None:
            body["reason"] = why
        return _json(200 if why is None else 503, body)

    async def status(_: web.Request) -> web.Response:
        return _json(200, status_document(node, urls()))

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def post_switchover(request: web.Request) -> web.Response:
        refused = _admin_refusal(request, admin_token)
        if refused is not None:
            return refused
        if switchover is None:
            return _error(404, "not_found", "this node offers no switchover")
        to = request.query.get("to") or None
        code, body = await switchover(to)
        return _json(code, body)

    async def post_takeover(request: web.Request) -> web.Response:
        refused = _admin_refusal(request, admin_token)
        if refused is not None:
            return refused
        if takeover is None:
            return _error(404, "not_found", "this node offers no takeover")
        force = request.query.get("force", "").lower() in ("1", "true", "yes")
        code, body = await takeover(force)
        return _json(code, body)

    app = web.Application(middlewares=[_json_errors])
    for path, handler in (
        ("/health", health),
        ("/ready", ready),
        ("/active", active),
        ("/standby", standby),
        ("/status", status),
        ("/metrics", metrics),
        *group_routes(node, lambda code, body: _json(code, body)),
    ):
        app.router.add_get(path, handler)
    app.router.add_post("/switchover", post_switchover)
    app.router.add_post("/takeover", post_takeover)
    return app


def _admin_refusal(request: web.Request, token: str | None) -> web.Response | None:
    """401/403 unless the request carries the admin token (constant-time compare)."""
    if token is None:
        return _error(403, "forbidden", "no admin token is configured (WALREP_ADMIN_TOKEN)")
    header = request.headers.get("Authorization", "")
    if not header:
        return _error(401, "unauthorized", "the admin token is required (Authorization)")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
        return _error(403, "forbidden", "the admin token is wrong")
    return None
