"""The transcript nodes' settings: production ``NodeSettings`` with small, readable values.

Scenarios name settings as ``key=value`` (``init`` for both nodes, ``set`` for one
node that is not running); ``build_settings`` turns them into the one settings type
the node core takes, so its relation checks (``check_relations``) apply here too. The
defaults keep transcripts short: a lease long enough that a scenario of a few seconds
sees no renewal unless it asks for one, windows and buffers that never bind unless a
scenario makes them small, and the log's fsync policy ``never`` (durability is a step).
"""

from __future__ import annotations

from typing import Final

from tests.replica.executor import StepError
from walrep.errors import ConfigError
from walrep.log.config import FsyncPolicy, LogConfig
from walrep.node.settings import AppendLimits, EdgeLimits, NodeSettings
from walrep.replica.lease import LeaseTiming
from walrep.replica.shipper import ShipperConfig

GROUP: Final = "g1"
NODE_IDS: Final = {"a": "a1", "p": "p1"}
SECRETS: Final = {"right": b"cluster-secret", "wrong": b"not-the-cluster-secret"}
PORT: Final = 9893

INTS: Final = {
    # event sync (the shipper)
    "window_bytes": 1 << 20,
    "window_batches": 64,
    "read_bytes_max": 1 << 16,
    "standby_timeout_ms": 1000,
    "heartbeat_interval_ms": 250,
    # the passive's receiver and the event-sync port
    "buffer_bytes_max": 1 << 20,
    "buffer_events_max": 10_000,
    "max_message_bytes": 1 << 20,
    "max_connections": 4,
    "handshake_timeout_ms": 2000,
    "idle_timeout_ms": 3000,
    # admission of publishers' appends
    "max_pending": 64,
    "max_uncommitted_events": 10_000,
    "max_queued": 64,
    # the lease (the coordination store)
    "lease_ttl_ms": 30_000,
    "safety_margin_ms": 5_000,
    "lease_heartbeat_ms": 10_000,
    "poll_interval_ms": 1_000,
    "call_timeout_ms": 1_000,
    # the node
    "connect_timeout_ms": 1000,
    "peer_wait_timeout_ms": 5000,
    "peer_retry_sleep_ms": 100,
    "persist_interval_ms": 500,
    # the log
    "segment_bytes_max": 1 << 20,
    "max_batch_bytes": 1 << 16,
    "max_event_bytes": 4096,
}
CHOICES: Final = {
    "ack": ("all", "local"),
    "on-loss": ("degrade", "block"),
    "secret": tuple(SECRETS),
}
NAMES: Final = ("group", "node")


def parse_values(values: dict[str, str]) -> dict[str, int | str]:
    """Check keys and values; ``StepError`` names the first bad one."""
    out: dict[str, int | str] = {}
    for key, value in values.items():
        if key in INTS:
            try:
                out[key] = int(value)
            except ValueError:
                raise StepError(f"{key} must be an integer, got {value!r}") from None
        elif key in CHOICES:
            if value not in CHOICES[key]:
                raise StepError(f"{key} is one of {'|'.join(CHOICES[key])}, got {value!r}")
            out[key] = value
        elif key in NAMES:
            out[key] = value
        else:
            raise StepError(f"unknown setting {key!r}")
    return out


def build_settings(slot: str, values: dict[str, str]) -> NodeSettings:
    """The settings of node ``slot`` (a or p) with ``values`` over the defaults."""
    given = parse_values(values)
    v: dict[str, int] = {k: int(given.get(k, d)) for k, d in INTS.items()}
    try:
        return NodeSettings(
            group=str(given.get("group", GROUP)),
            node_id=str(given.get("node", NODE_IDS[slot])),
            secret=SECRETS[str(given.get("secret", "right"))],
            lease=LeaseTiming(
                heartbeat_interval_ms=v["lease_heartbeat_ms"],
                lease_ttl_ms=v["lease_ttl_ms"],
                safety_margin_ms=v["safety_margin_ms"],
                poll_interval_ms=v["poll_interval_ms"],
                retry_backoff_max_ms=4 * v["poll_interval_ms"],
            ),
            call_timeout_ms=v["call_timeout_ms"],
            shipper=ShipperConfig(
                window_bytes=v["window_bytes"],
                window_batches=v["window_batches"],
                read_bytes_max=v["read_bytes_max"],
                standby_timeout_ms=v["standby_timeout_ms"],
                heartbeat_interval_ms=v["heartbeat_interval_ms"],
                ack_all=given.get("ack", "all") == "all",
                degrade=given.get("on-loss", "degrade") == "degrade",
            ),
            max_message_bytes=v["max_message_bytes"],
            receiver_buffer_bytes_max=v["buffer_bytes_max"],
            receiver_buffer_events_max=v["buffer_events_max"],
            edges=EdgeLimits(
                max_connections=v["max_connections"],
                handshake_timeout_ms=v["handshake_timeout_ms"],
                idle_timeout_ms=v["idle_timeout_ms"],
            ),
            appends=AppendLimits(
                max_pending=v["max_pending"],
                max_uncommitted_events=v["max_uncommitted_events"],
                max_queued=v["max_queued"],
            ),
            connect_timeout_ms=v["connect_timeout_ms"],
            reconnect_backoff_ms=(50, 2000),
            peer_wait_timeout_ms=v["peer_wait_timeout_ms"],
            peer_retry_sleep_ms=v["peer_retry_sleep_ms"],
            persist_interval_ms=v["persist_interval_ms"],
            advertised_host=f"host-{slot}",
            advertised_port=PORT,
            log=LogConfig(
                segment_bytes_max=v["segment_bytes_max"],
                max_event_bytes=v["max_event_bytes"],
                max_batch_bytes=v["max_batch_bytes"],
                fsync_policy=FsyncPolicy.NEVER,
            ),
        )
    except ConfigError as e:
        raise StepError(f"settings of {slot}: {e}") from e
