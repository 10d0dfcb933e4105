"""walrep's write-ahead log: sequenced, checksummed, segmented, group-committed."""

from walrep.log.config import FsyncPolicy, LogConfig
from walrep.log.frame import EncodedBatch, Event, FrameHeader
from walrep.log.types import AppendResult, Record, RecoveryReport, StoredFrame
from walrep.log.wal import Wal

__all__ = [
    "AppendResult",
    "EncodedBatch",
    "Event",
    "FrameHeader",
    "FsyncPolicy",
    "LogConfig",
    "Record",
    "RecoveryReport",
    "StoredFrame",
    "Wal",
]
