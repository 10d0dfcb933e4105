"""The typed error hierarchy of walrep.

Every error walrep raises on purpose is a ``WalrepError``. Each class says whether
retrying the same operation may succeed (``retriable``). Driver and OS errors are
translated at the boundary with ``raise ... from e`` so the cause stays attached.

"We closed it" (``ClosedError``: the caller used something after closing it) is kept
apart from "the peer broke it" (``PeerProtocolError``: the other side sent garbage or
vanished), in the spirit of trio's ``ClosedResourceError`` / ``BrokenResourceError``.

Tree::

    WalrepError
      LogError
        CorruptLogError(segment, position, offset)
        OffsetOutOfRangeError(offset, log_start, log_end)
        LimitExceededError(what, size, limit)
        ClosedError
      ReplicationError
        FencedError(seen, current)
        PeerProtocolError
        AuthError
      CoordinationError
      EngineError
        SnapshotError
        NondeterminismError
      ConfigError
      ClientError
"""

from __future__ import annotations


class WalrepError(Exception):
    """Root of every error walrep raises on purpose."""

    retriable: bool = False


# --- log -----------------------------------------------------------------------------


class LogError(WalrepError):
    """Something is wrong with a write-ahead log or its use."""


class CorruptLogError(LogError):
    """Damage found in a log file that recovery may not silently repair.

    ``segment`` is the file path, ``position`` the byte position of the damaged frame in
    it, ``offset`` the log offset expected at that place (the first one that cannot be
    trusted).
    """

    def __init__(self, segment: str, position: int, offset: int, reason: str) -> None:
        self.segment = segment
        self.position = position
        self.offset = offset
        self.reason = reason
        super().__init__(f"corrupt log: {segment} at byte {position} (offset {offset}): {reason}")


class OffsetOutOfRangeError(LogError):
    """An offset below the log start (deleted by retention) or beyond its end."""

    def __init__(self, offset: int, log_start: int, log_end: int) -> None:
        self.offset = offset
        self.log_start = log_start
        self.log_end = log_end
        super().__init__(f"offset {offset} outside the log's range [{log_start}, {log_end})")


class LimitExceededError(LogError):
    """Input over a configured limit (event, batch, segment, message). Nothing was written."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        self.what = what
        self.size = size
        self.limit = limit
        super().__init__(f"{what} is {size} bytes, over the limit of {limit} bytes")


class InvalidEventError(LogError):
    """An event that cannot be encoded (wrong types, empty stream name, bad JSON value)."""


class ClosedError(LogError):
    """The caller used a log (or other resource) after it was closed by us."""


# --- replication ---------------------------------------------------------------------


class ReplicationError(WalrepError):
    """Log shipping between active and passive failed."""


class FencedError(ReplicationError):
    """A write carried an epoch lower than the highest one already seen: a stale writer."""

    def __init__(self, seen: int, current: int) -> None:
        self.seen = seen
        self.current = current
        super().__init__(f"fenced: epoch {seen} is older than the current epoch {current}")


class PeerProtocolError(ReplicationError):
    """The peer sent something malformed or broke the connection (the peer broke it)."""

    retriable = True


class AuthError(ReplicationError):
    """Handshake authentication failed: wrong secret, group or node."""


# --- coordination --------------------------------------------------------------------


class CoordinationError(WalrepError):
    """The coordination database could not be used; wraps the driver error as its cause."""

    def __init__(self, message: str, *, retriable: bool = True) -> None:
        self.retriable = retriable
        super().__init__(message)


# --- engine --------------------------------------------------------------------------


class EngineError(WalrepError):
    """Processing of events failed."""


class SnapshotError(EngineError):
    """A snapshot could not be written, read or verified."""

    retriable = True


class NondeterminismError(EngineError):
    """Replaying the log gave a different state digest than recorded."""


# --- configuration and client --------------------------------------------------------


class ConfigError(WalrepError):
    """Invalid configuration; the message names the file and the key."""


class ClientError(WalrepError):
    """A publisher-side error; ``retriable`` says whether to try again."""

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        self.retriable = retriable
        super().__init__(message)
