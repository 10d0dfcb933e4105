"""Limits and policies of one write-ahead log (plain values; the node config maps onto it)."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from walrep.errors import ConfigError
from walrep.log.frame import HEADER_SIZE
from walrep.log.limits import DEFAULT_LIMITS, LogLimits

KIB = 1024
MIB = 1024 * KIB


class FsyncPolicy(enum.Enum):
    """When appended bytes are forced to disk.

    ``ALWAYS``: fdatasync before an append returns (the default; required for "acked =>
    durable"). ``INTERVAL``: appends return after the write; a timer forces the log every
    ``fsync_interval_ms``. ``NEVER``: only close forces it (tests and benchmarks).
    """

    ALWAYS = "always"
    INTERVAL = "interval_ms"
    NEVER = "never"


@dataclass(frozen=True, slots=True)
class LogConfig:
    segment_bytes_max: int = 64 * MIB
    max_event_bytes: int = DEFAULT_LIMITS.max_event_bytes
    max_batch_bytes: int = DEFAULT_LIMITS.max_batch_bytes
    compress_threshold_bytes: int = 4 * KIB
    index_interval_bytes: int = 4 * KIB
    fsync_policy: FsyncPolicy = FsyncPolicy.ALWAYS
    fsync_interval_ms: int = 100
    # Bound on bytes queued for the group-commit writer; appenders wait beyond it.
    pending_bytes_max: int = 64 * MIB
    # Bound on the newest written frames kept in memory for shipping (recent.py); 0: none.
    recent_frames_bytes: int = 8 * MIB

    def __post_init__(self) -> None:
        # Relations between the limits; a bad value is a configuration bug, so say which.
        checks = [
            (self.max_event_bytes > 0, "max_event_bytes must be positive"),
            (self.max_event_bytes <= self.max_batch_bytes, "max_event_bytes > max_batch_bytes"),
            (
                HEADER_SIZE + self.max_batch_bytes + 4 <= self.segment_bytes_max,
                "segment_bytes_max must hold one frame of max_batch_bytes",
            ),
            (self.max_batch_bytes < 2**31, "max_batch_bytes must fit the u32 length field"),
            (self.index_interval_bytes > 0, "index_interval_bytes must be positive"),
            (self.fsync_interval_ms > 0, "fsync_interval_ms must be positive"),
            (self.pending_bytes_max >= self.max_batch_bytes, "pending_bytes_max < max_batch_bytes"),
            (self.recent_frames_bytes >= 0, "recent_frames_bytes must not be negative"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"LogConfig: {message}")

    @property
    def max_payload_bytes(self) -> int:
        """Largest stored payload: a batch, plus the lz4 size prefix when compressed."""
        return self.max_batch_bytes + 4

    @property
    def limits(self) -> LogLimits:
        """The sizes this config lets a writer produce (and so a reader must accept)."""
        return LogLimits(self.max_event_bytes, self.max_batch_bytes)

    @classmethod
    def for_limits(cls, limits: LogLimits) -> LogConfig:
        """The default config with ``limits`` (a log opened without a config of its own).

        Segments and the append queue grow beyond their defaults where ``limits`` need it.
        """
        base = cls()
        return dataclasses.replace(
            base,
            max_event_bytes=limits.max_event_bytes,
            max_batch_bytes=limits.max_batch_bytes,
            segment_bytes_max=max(base.segment_bytes_max, HEADER_SIZE + limits.max_payload_bytes),
            pending_bytes_max=max(base.pending_bytes_max, limits.max_batch_bytes),
        )
