"""Everything the node core needs to know, and the one function that derives it from config.

``node_settings(config)`` is the only place where a ``WalrepConfig`` becomes the settings
of the cores (lease timing, shipper, receiver, log, edges of the event-sync port, append
bounds). It checks the relations between values that no single key can check, and names
the keys involved: a configuration that could not work is refused when it is loaded, not
discovered under load (for example ``max_message_bytes`` must hold a maximal batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from walrep.config import WalrepConfig
from walrep.errors import ConfigError
from walrep.log.config import FsyncPolicy, LogConfig
from walrep.log.frame import HEADER_SIZE
from walrep.replica.lease import LeaseTiming
from walrep.replica.messages import APPEND_HEADER_BYTES, PREFIX_BYTES
from walrep.replica.shipper import ShipperConfig

# Largest message accepted before the peer has authenticated: a Challenge, Hello or
# HelloOk is a few hundred bytes (names of at most 128 characters, nonce, proof).
PREAUTH_MESSAGE_BYTES_MAX: Final = 4096
# An Append message around WAL frames: length + CRC prefix, type byte, Append header.
APPEND_OVERHEAD_BYTES: Final = PREFIX_BYTES + 1 + APPEND_HEADER_BYTES


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    """Bounds on the event-sync port: connections, handshake deadline, silence."""

    max_connections: int = 4
    handshake_timeout_ms: int = 2000
    idle_timeout_ms: int = 3000
    preauth_message_bytes_max: int = PREAUTH_MESSAGE_BYTES_MAX


@dataclass(frozen=True, slots=True)
class AppendLimits:
    """Admission control of the active's append path (see ``config.AppendSection``)."""

    max_pending: int = 4096
    max_uncommitted_events: int = 1_000_000
    max_queued: int = 4096


@dataclass(frozen=True, slots=True)
class NodeSettings:
    group: str
    node_id: str
    secret: bytes = field(repr=False)
    lease: LeaseTiming = field(default_factory=LeaseTiming)
    call_timeout_ms: int = 750
    shipper: ShipperConfig = field(default_factory=ShipperConfig)
    max_message_bytes: int = 16 * 1024 * 1024
    receiver_buffer_bytes_max: int = 32 * 1024 * 1024
    receiver_buffer_events_max: int = 20_000  # seed: eventByteBufferQueueCapacity
    edges: EdgeLimits = field(default_factory=EdgeLimits)
    appends: AppendLimits = field(default_factory=AppendLimits)
    connect_timeout_ms: int = 1000
    reconnect_backoff_ms: tuple[int, int] = (50, 2000)  # first and largest
    peer_wait_timeout_ms: int = 10_000  # seed: passiveNodeDetailsWaitTimeOutMillis
    peer_retry_sleep_ms: int = 100  # seed: passiveNodeDetailsRetrySleepTimeMillis
    # The committed offset is persisted (a lower bound) at most this often, and at once
    # when a new epoch is seen.
    persist_interval_ms: int = 500
    tick_interval_ms: int = 20
    advertised_host: str = "127.0.0.1"
    advertised_port: int = 0
    admin_url: str = ""
    log: LogConfig = field(default_factory=LogConfig)
    cold_standby: bool = False  # cluster.standby: cold (the passive does not apply)

    def __post_init__(self) -> None:
        check_relations(self)


def check_relations(s: NodeSettings) -> None:
    """Relations between settings; ``ConfigError`` names the keys to change."""
    largest_frame = HEADER_SIZE + s.log.max_payload_bytes
    problems = [
        (
            s.max_message_bytes >= APPEND_OVERHEAD_BYTES + largest_frame,
            f"deployment.replication.max_message_bytes ({s.max_message_bytes}) must hold one "
            f"frame of log.max_batch_bytes ({s.log.max_batch_bytes}) plus "
            f"{APPEND_OVERHEAD_BYTES + HEADER_SIZE + 4} bytes of framing",
        ),
        (
            s.max_message_bytes >= APPEND_OVERHEAD_BYTES + s.shipper.read_bytes_max,
            "deployment.replication.max_message_bytes must exceed read_bytes_max "
            f"({s.shipper.read_bytes_max}) by {APPEND_OVERHEAD_BYTES} bytes",
        ),
        (
            s.receiver_buffer_bytes_max >= largest_frame,
            "deployment.replication.buffer_bytes_max must hold one maximal frame "
            f"({largest_frame} bytes)",
        ),
        (
            s.call_timeout_ms <= s.lease.valid_for_ms,
            f"cluster.db_call_timeout_ms ({s.call_timeout_ms}) may not exceed the time the "
            f"leader trusts its lease ({s.lease.valid_for_ms} ms)",
        ),
        (
            s.edges.handshake_timeout_ms < s.edges.idle_timeout_ms,
            "deployment.replication.handshake_timeout_ms must be below idle_timeout_ms",
        ),
        (
            s.shipper.heartbeat_interval_ms < s.edges.idle_timeout_ms,
            "the event-sync heartbeat must be below deployment.replication.idle_timeout_ms, "
            "or idle links are closed",
        ),
        (
            s.shipper.heartbeat_interval_ms < s.shipper.standby_timeout_ms,
            "cluster.heartbeat_interval_ms must be below deployment.replication.standby_timeout_ms",
        ),
        (
            s.reconnect_backoff_ms[0] <= s.reconnect_backoff_ms[1],
            "deployment.event_sync_client.reconnect_backoff_max_ms is below the first backoff",
        ),
        (s.tick_interval_ms > 0, "tick_interval_ms must be positive"),
    ]
    failed = [message for ok, message in problems if not ok]
    if failed:
        raise ConfigError("; ".join(failed))


def node_settings(config: WalrepConfig, *, secret: bytes | None = None) -> NodeSettings:
    """The cores' settings for ``config``; the secret from its environment variable unless
    given. ``ConfigError`` if a relation between values does not hold."""
    cluster = config.cluster
    deployment = config.deployment
    replication = deployment.replication
    timing = cluster.lease_timing()
    host, port = config.event_sync_advertised
    log = config.log
    return NodeSettings(
        group=cluster.group_id,
        node_id=config.node.id,
        secret=replication.secret() if secret is None else secret,
        lease=timing,
        call_timeout_ms=cluster.db_call_timeout_ms or timing.valid_for_ms,
        shipper=ShipperConfig(
            window_bytes=replication.window_bytes,
            window_batches=replication.window_batches,
            read_bytes_max=replication.read_bytes_max,
            standby_timeout_ms=replication.standby_timeout_ms,
            # Idle links heartbeat often enough for the standby timeout to mean something
            # (a quarter of it), and never more often than the lease heartbeat.
            heartbeat_interval_ms=max(
                1, min(cluster.heartbeat_interval_ms, replication.standby_timeout_ms // 4)
            ),
            ack_all=replication.ack_policy == "all",
            degrade=replication.on_standby_loss == "degrade",
        ),
        max_message_bytes=replication.max_message_bytes,
        receiver_buffer_bytes_max=replication.buffer_bytes_max,
        receiver_buffer_events_max=deployment.event_buffer_capacity,
        edges=EdgeLimits(
            max_connections=replication.max_connections,
            handshake_timeout_ms=replication.handshake_timeout_ms,
            idle_timeout_ms=replication.idle_timeout_ms,
        ),
        appends=AppendLimits(
            max_pending=config.appends.max_pending,
            max_uncommitted_events=config.appends.max_uncommitted_events,
            max_queued=config.appends.max_queued,
        ),
        connect_timeout_ms=deployment.event_sync_client.connect_timeout_ms,
        reconnect_backoff_ms=(
            min(50, deployment.event_sync_client.reconnect_backoff_max_ms),
            deployment.event_sync_client.reconnect_backoff_max_ms,
        ),
        peer_wait_timeout_ms=deployment.passive_node_details_wait_timeout_ms,
        peer_retry_sleep_ms=deployment.passive_node_details_retry_sleep_ms,
        advertised_host=host,
        advertised_port=port,
        log=LogConfig(
            segment_bytes_max=log.segment_bytes_max,
            max_event_bytes=log.max_event_bytes,
            max_batch_bytes=log.max_batch_bytes,
            fsync_policy=FsyncPolicy(log.fsync_policy),
            fsync_interval_ms=log.fsync_interval_ms,
            recent_frames_bytes=log.recent_frames_bytes,
        ),
        cold_standby=cluster.standby == "cold",
    )
