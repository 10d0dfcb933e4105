"""walrep's write-ahead log: sequenced, checksummed, segmented, group-committed.

``Wal`` keeps the log in a directory; ``MemoryLog`` is the same log in memory (the
simulator's), with the same API and contracts (``tests/log/test_log_contract.py``).
"""

from walrep.log.config import FsyncPolicy, LogConfig
from walrep.log.frame import EncodedBatch, Event, FrameHeader
from walrep.log.fsutil import FileOps
from walrep.log.limits import LogLimits
from walrep.log.memory import DiskImage, MemoryLog, SegmentImage
from walrep.log.protocol import WriteAheadLog
from walrep.log.replica_state import ReplicaState
from walrep.log.types import AppendResult, Record, RecoveryReport, StoredFrame
from walrep.log.wal import Wal

__all__ = [
    "AppendResult",
    "DiskImage",
    "EncodedBatch",
    "Event",
    "FileOps",
    "FrameHeader",
    "FsyncPolicy",
    "LogConfig",
    "LogLimits",
    "MemoryLog",
    "Record",
    "RecoveryReport",
    "ReplicaState",
    "SegmentImage",
    "StoredFrame",
    "Wal",
    "WriteAheadLog",
]
