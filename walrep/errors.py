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
        MalformedFrameError
          RejectedFrameError(position, reason)
        OffsetOutOfRangeError(offset, log_start, log_end)
        LimitExceededError(what, size, limit)
        InvalidEventError
        LogFailedError
        LogTruncatedError(offset, truncated_to)
        CommittedTruncationError(offset, committed)
        ClosedError
      ReplicationError
        FencedError(seen, current)
        PeerProtocolError
        AuthError
        NotActiveError
      OverloadedError
      InternalError
      CoordinationError
      EngineError
        SnapshotError
          SnapshotFencedError(epoch, fence_epoch)
          SnapshotCorruptError
          SnapshotTooLargeError(size, limit)
          SnapshotNotFoundError
        NondeterminismError
        AppDefinitionError
        SinkError
          SinkFencedError(sink, seen, current)
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


class MalformedFrameError(LogError):
    """Bytes that are not a valid frame (codec level: the caller adds file and position)."""


class RejectedFrameError(MalformedFrameError):
    """Verbatim frames refused by ``append_frames``: the sender's fault, nothing was written.

    ``position`` is the byte position of the refused frame in the appended data. Frames
    over this log's limits are refused with ``LimitExceededError`` instead.
    """

    def __init__(self, position: int, reason: str) -> None:
        self.position = position
        self.reason = reason
        super().__init__(f"frame at byte {position} of the appended data: {reason}")


class LogFailedError(LogError):
    """A write or fsync of this node's own log failed: the log may not be used any more.

    Not the peer's fault and not retriable in this process: an fsync error leaves the
    kernel's page state unknown, so the data is never assumed safe. Reopening the log
    recovers what is on disk.
    """


class LogTruncatedError(LogError):
    """A reader's position was cut off by ``truncate_after``: its history is gone.

    Retriable: read again from an offset below ``truncated_to`` (the new log end).
    """

    retriable = True

    def __init__(self, offset: int, truncated_to: int) -> None:
        self.offset = offset
        self.truncated_to = truncated_to
        super().__init__(
            f"the log was truncated to {truncated_to} under a reader at offset {offset}: "
            "the history it was reading no longer exists"
        )


class CommittedTruncationError(LogError):
    """A truncation below the committed offset this log has recorded (operator needed)."""

    def __init__(self, offset: int, committed: int) -> None:
        self.offset = offset
        self.committed = committed
        super().__init__(
            f"refusing to truncate to {offset}: offsets below {committed} are recorded as "
            "committed in this log (operator action needed)"
        )


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


class NotActiveError(ReplicationError):
    """This node is not the active holding a valid lease: nothing can be acknowledged here.

    Raised for an append made on a passive, or failed because the lease was lost (fenced,
    released, switchover) before its events were committed. Retriable against the active
    (an idempotent producer's retry is answered with the original offsets).
    """

    retriable = True


# --- load ----------------------------------------------------------------------------


class OverloadedError(WalrepError):
    """A bounded queue is full (appends waiting for commit, admission): try again later."""

    retriable = True


class InternalError(WalrepError):
    """A bug: a background task of the node died with an unexpected exception.

    The node stops loudly (fenced, lease released) instead of serving with a dead part.
    """


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


class AppDefinitionError(EngineError):
    """An app declares something invalid (an unknown stream or attribute, a bad type).

    Raised while the app module runs; the loader adds the file name.
    """


class SinkError(EngineError):
    """A sink could not write or deliver; the message names the operation and the target.

    Retriable by default (a database or endpoint that is down); ``retriable=False`` for
    what trying again cannot fix (a refused request, a value that does not fit a column).
    """

    def __init__(self, message: str, *, retriable: bool = True) -> None:
        self.retriable = retriable
        super().__init__(message)


class SinkFencedError(SinkError):
    """A sink write under epoch ``seen``, lower than the ``current`` one its storage holds.

    Nothing of the batch was written: a newer active owns the sink's tables.
    """

    def __init__(self, sink: str, seen: int, current: int) -> None:
        self.sink = sink
        self.seen = seen
        self.current = current
        super().__init__(
            f"sink {sink!r} fenced: epoch {seen} is older than the stored epoch {current}",
            retriable=False,
        )


class SnapshotFencedError(SnapshotError):
    """A snapshot save under an epoch lower than one that already wrote to the store.

    Not retriable: the writer is stale (a newer active exists); nothing was written.
    """

    retriable = False

    def __init__(self, epoch: int, fence_epoch: int, where: str) -> None:
        self.epoch = epoch
        self.fence_epoch = fence_epoch
        super().__init__(
            f"snapshot refused by {where}: epoch {epoch} is older than epoch {fence_epoch}, "
            "which already wrote to it"
        )


class SnapshotCorruptError(SnapshotError):
    """Stored snapshot bytes that fail verification (magic, version, CRC, chunks, digest).

    Not retriable: reading the same bytes again gives the same answer; recovery skips
    the snapshot and uses an older revision.
    """

    retriable = False


class SnapshotTooLargeError(SnapshotError):
    """A snapshot over the configured maximum size; nothing was written or loaded."""

    retriable = False

    def __init__(self, what: str, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"{what} is {size} bytes, over the limit of {limit} bytes")


class SnapshotNotFoundError(SnapshotError):
    """No snapshot with this id (never written, or trimmed since it was listed)."""

    retriable = False


# --- configuration and client --------------------------------------------------------


class ConfigError(WalrepError):
    """Invalid configuration; the message names the file and the key."""


class ClientError(WalrepError):
    """A publisher-side error; ``retriable`` says whether to try again."""

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        self.retriable = retriable
        super().__init__(message)
