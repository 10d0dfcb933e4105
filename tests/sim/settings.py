"""Timings, limits and identities of the simulated cluster (fixed, or drawn per seed).

The simulated nodes run with ``walrep.node.settings.NodeSettings`` like production; only
the values differ: small segments (so retention deletes some), small windows and
buffers (so flow control and backpressure are exercised), and the fsync policy
``never``, because the simulator's disk makes data durable with its own, timed fsyncs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from walrep.log.config import FsyncPolicy, LogConfig
from walrep.node.settings import AppendLimits, EdgeLimits, NodeSettings
from walrep.replica.lease import LeaseTiming
from walrep.replica.shipper import ShipperConfig

GROUP = "sim"
SECRET = b"simulated cluster secret"
LEASE = LeaseTiming(
    heartbeat_interval_ms=250,
    lease_ttl_ms=1000,
    safety_margin_ms=250,
    poll_interval_ms=100,
    retry_backoff_max_ms=2000,
)
CALL_TIMEOUT_MS = LEASE.valid_for_ms  # as production's default: a call may not outlive the lease
MAX_MESSAGE_BYTES = 1024 * 1024
CLIENT_BATCHES_MAX = 16  # client requests in flight per active
WALL_CLOCK_BASE_MS = 1_767_225_600_000  # ingest times: a wall clock (2026) plus the skew
LOG = LogConfig(
    segment_bytes_max=32 * 1024,
    max_event_bytes=16 * 1024,
    max_batch_bytes=16 * 1024,
    index_interval_bytes=1024,
    fsync_policy=FsyncPolicy.NEVER,
    pending_bytes_max=64 * 1024,
)


@dataclass(frozen=True, slots=True)
class Settings:
    """Replication settings of one run (the seed picks them)."""

    shipper: ShipperConfig
    receiver_buffer_bytes: int
    receiver_buffer_events: int
    appends: AppendLimits
    cold_standby: bool

    @classmethod
    def draw(cls, rng: random.Random) -> Settings:
        return cls(
            ShipperConfig(
                window_bytes=rng.choice([8, 32, 256]) * 1024,
                window_batches=rng.choice([1, 2, 8, 64]),
                read_bytes_max=rng.choice([1, 8, 64]) * 1024,
                standby_timeout_ms=rng.choice([400, 1000]),
                heartbeat_interval_ms=rng.choice([100, 250]),
                degrade=rng.random() < 0.8,  # else "block": never commit without it
            ),
            receiver_buffer_bytes=rng.choice([24, 64, 256]) * 1024,
            receiver_buffer_events=rng.choice([50, 1000, 2**62]),
            # Small admission bounds in some seeds: appends queue and are refused.
            appends=rng.choice(
                [AppendLimits(), AppendLimits(max_pending=4, max_queued=4), AppendLimits(2, 40, 2)]
            ),
            # Drawn from a generator of its own, seeded by the main one's state without
            # advancing it: the seeds of before cold standbys existed still run as they did.
            cold_standby=random.Random(repr(rng.getstate())).random() < 0.3,
        )


def node_settings(name: str, drawn: Settings) -> NodeSettings:
    """The production settings type with this run's values; addresses are node names."""
    return NodeSettings(
        group=GROUP,
        node_id=name,
        secret=SECRET,
        lease=LEASE,
        call_timeout_ms=CALL_TIMEOUT_MS,
        shipper=drawn.shipper,
        max_message_bytes=MAX_MESSAGE_BYTES,
        receiver_buffer_bytes_max=drawn.receiver_buffer_bytes,
        receiver_buffer_events_max=drawn.receiver_buffer_events,
        edges=EdgeLimits(max_connections=4, handshake_timeout_ms=2000, idle_timeout_ms=3000),
        appends=drawn.appends,
        connect_timeout_ms=1000,
        reconnect_backoff_ms=(50, 2000),
        advertised_host=name,
        advertised_port=9893,
        log=LOG,
        cold_standby=drawn.cold_standby,
    )
