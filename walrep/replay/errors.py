"""Errors of the replay tool (``walrep replay``): each names what is wrong and where.

``ReplayError`` is a fault of the input (the log, the snapshots, the apps or the
arguments), never of walrep: the CLI prints it and exits with status 2.
"""

from __future__ import annotations

from walrep.errors import WalrepError


class ReplayError(WalrepError):
    """The replay cannot go on as asked; the message says why and what to do."""

    retriable = False


class DamagedLogError(ReplayError):
    """The log has damage (a frame that fails its checks, segments missing) in the range.

    ``offset`` is the first offset the damage concerns; ``where`` the file and byte.
    """

    def __init__(self, offset: int, where: str, reason: str) -> None:
        self.offset = offset
        self.where = where
        self.reason = reason
        super().__init__(
            f"the log is damaged at offset {offset} ({where}): {reason}; "
            "--skip-damaged replays on without those offsets and reports them"
        )


class LogRangeError(ReplayError):
    """The log does not hold the offsets asked for (retention deleted them, or they
    were never written)."""
