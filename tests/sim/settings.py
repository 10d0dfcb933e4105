"""Timings, limits and identities of the simulated cluster (fixed, or drawn per seed)."""

from __future__ import annotations

import random
from dataclasses import dataclass

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
CALL_TIMEOUT_MS = LEASE.valid_for_ms  # as Coordinator: a call may not outlive the lease
MAX_MESSAGE_BYTES = 1024 * 1024
PASSIVE_IDLE_TIMEOUT_MS = 3000  # PassiveServer's idle_timeout_ms
CLIENT_BATCHES_MAX = 16  # client requests in flight per leader
SHELL_TICK_MS = 20  # as ActiveLink.TICK_S
RECONNECT_MS = (50, 2000)  # first and largest reconnect backoff (ActiveLink)
CONNECT_TIMEOUT_MS = 1000  # ActiveLink's connect_timeout_ms
WALL_CLOCK_BASE_MS = 1_767_225_600_000  # ingest times: a wall clock (2026) plus the skew


@dataclass(frozen=True, slots=True)
class Settings:
    """Replication settings of one run (the seed picks them)."""

    shipper: ShipperConfig
    receiver_buffer_bytes: int
    receiver_buffer_events: int

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
            receiver_buffer_bytes=rng.choice([4, 16, 256]) * 1024,
            receiver_buffer_events=rng.choice([50, 1000, 2**62]),
        )
