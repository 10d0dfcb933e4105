"""The limits a log's frames were written under, recorded beside them in ``<dir>/limits``.

A reader must apply limits at least as large as the writer's, or it calls healthy frames
corrupt. So the log records them (a small checksummed file, ``smallfile``)::

    walrep-limits 1
    format_version 1
    max_event_bytes <n>
    max_batch_bytes <n>
    crc32c <8 hex digits>

``max_batch_bytes`` is what reading needs (``frame.limit_violation``); ``max_event_bytes``
is what re-framing the kept part of a batch cut by ``truncate_after`` needs.

Rules (``Wal.open``, ``open.settle_limits``): a new log records its config's limits as
it is created. Opening with a config records ``max(recorded, configured)`` of each
limit (appends use the config's limits; reads and recovery the recorded ones). Either
is durable before ``open`` returns, so before any frame that needs it can be written;
a crash before that leaves no frame written under the new limits. A log without the
file (written before it existed) was written under the default limits. ``walrep log
dump`` and ``verify`` read the limits from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from walrep.errors import CorruptLogError
from walrep.log.frame import FORMAT_VERSION
from walrep.log.fsutil import DEFAULT_FILE_OPS, FileOps
from walrep.log.smallfile import parse_counters, read_lines, write_lines

FILE_NAME: Final = "limits"
_HEAD: Final = "walrep-limits 1"
_WHAT: Final = "limits file"
_FIELDS: Final = ("format_version", "max_event_bytes", "max_batch_bytes")
MIB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class LogLimits:
    """The sizes a reader of the log must accept (the defaults are ``LogConfig``'s)."""

    max_event_bytes: int = 1 * MIB
    max_batch_bytes: int = 8 * MIB

    def union(self, other: LogLimits) -> LogLimits:
        """Limits that accept whatever either of the two accepts."""
        return LogLimits(
            max(self.max_event_bytes, other.max_event_bytes),
            max(self.max_batch_bytes, other.max_batch_bytes),
        )

    @property
    def max_payload_bytes(self) -> int:
        """Largest stored payload: a batch, plus the lz4 size prefix when compressed."""
        return self.max_batch_bytes + 4

    def problem(self) -> str | None:
        """Why these limits cannot be a log's (None if they can)."""
        if not 0 < self.max_event_bytes <= self.max_batch_bytes < 2**31:
            return "need 0 < max_event_bytes <= max_batch_bytes < 2**31"
        return None


DEFAULT_LIMITS: Final = LogLimits()


def load_limits(directory: Path) -> LogLimits | None:
    """The recorded limits; None without a file; ``CorruptLogError`` naming it if damaged."""
    path = directory / FILE_NAME
    lines = read_lines(path, _HEAD, _WHAT)
    if lines is None:
        return None
    version, max_event, max_batch = parse_counters(lines, _FIELDS, str(path), _WHAT)
    if version != FORMAT_VERSION:
        reason = f"{_WHAT} is for frame format {version}, this walrep reads {FORMAT_VERSION}"
        raise CorruptLogError(str(path), 0, -1, reason)
    limits = LogLimits(max_event, max_batch)
    problem = limits.problem()
    if problem is not None:
        raise CorruptLogError(str(path), 0, -1, f"{_WHAT} out of range: {problem}")
    return limits


def save_limits(directory: Path, limits: LogLimits, ops: FileOps = DEFAULT_FILE_OPS) -> None:
    """Record ``limits`` durably (atomic replace)."""
    assert limits.problem() is None, limits
    values = (FORMAT_VERSION, limits.max_event_bytes, limits.max_batch_bytes)
    write_lines(
        directory / FILE_NAME,
        _HEAD,
        [f"{k} {v}" for k, v in zip(_FIELDS, values, strict=True)],
        ops,
    )
