"""The simulated disk: ``walrep.log.MemoryLog`` with crashes and disk faults around it.

The log itself is the production in-memory log (same codec, same checks, same recovery
decisions as ``Wal``); this module only decides what a fault leaves on the "disk":

* **fsync**: an fsync covers what was written when it started (``sync_begin``), also when
  a truncation cut the log meanwhile (then only up to the cut); ``fail_next_sync`` makes
  the next one fail (EIO), which the node must treat as fatal;
* **crash**: the durable bytes survive; of the unsynced frames a random number survive,
  and part of the next one may be left torn (sometimes with a flipped bit); the restart
  recovers with ``MemoryLog.recover``, which must cut the torn tail;
* **disk faults of a node that is down**: the data directory lost (``wipe``), replaced by
  an older copy (``restore_older``, from copies kept every few seconds), or a bit flipped
  in its durable part (``damage_durable``), which a normal open must refuse
  (``CorruptLogError``) and the operator's ``repair=True`` open cuts.

``version`` moves whenever content below the log end may change (truncation, crash,
disk fault), so the invariant checker knows when to verify from scratch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from walrep.errors import CorruptLogError, LogFailedError, WalrepError
from walrep.log.config import LogConfig
from walrep.log.frame import HEADER_SIZE, Event, FrameStatus, inspect_frame
from walrep.log.memory import DiskImage, MemoryLog, SegmentImage
from walrep.log.replica_state import ReplicaState
from walrep.node import effects as fx
from walrep.node.reads import read_frames

COPIES_KEPT = 6


@dataclass(frozen=True, slots=True)
class SimFrame:
    base: int
    end: int
    epoch: int
    data: bytes
    events: tuple[Event, ...]


class SimDisk:
    def __init__(self, config: LogConfig) -> None:
        self.config = config
        self.log: MemoryLog = MemoryLog.create(config)
        self.version = 0
        self.damaged = False  # a disk fault since the last restart (the node forgot)
        self.fail_next_sync = False
        self.torn_tails_dropped = 0
        self.repairs = 0
        self._image: DiskImage | None = None  # what a crash left, until the restart
        self._copies: list[DiskImage] = []
        self._sync_target: int | None = None
        self._frames: dict[int, SimFrame] = {}  # decoded frames by base offset (this version)

    # --- fsync -------------------------------------------------------------------------

    def sync_begin(self) -> None:
        assert self._sync_target is None, "one fsync at a time"
        self._sync_target = self.log.log_end

    def sync_end(self) -> WalrepError | None:
        target, self._sync_target = self._sync_target, None
        assert target is not None
        if self.fail_next_sync:
            self.fail_next_sync = False
            return LogFailedError("fdatasync failed: [Errno 5] Input/output error (simulated)")
        self.log.sync_to(target)
        return None

    def truncate_after(self, offset: int) -> None:
        self.log.truncate_after(offset)
        self._changed()
        if self._sync_target is not None:  # an fsync in flight covers nothing written later
            self._sync_target = min(self._sync_target, offset)

    def read(self, effect: fx.ReadFrames) -> tuple[int, int, bytes] | WalrepError:
        return read_frames(self.log, effect.from_offset, effect.max_bytes)

    # --- crash and restart -----------------------------------------------------------------

    def crash(self, rng: random.Random) -> tuple[int, int]:
        """Power loss. Returns ``(unsynced frames lost, torn bytes left)``."""
        image = self.log.disk_image()
        *sealed, last = image.segments
        frames = _frame_spans(last.data)
        durable = [span for span in frames if span[1] <= last.durable_bytes]
        unsynced = frames[len(durable) :]
        survive = rng.randint(0, len(unsynced)) if unsynced and rng.random() < 0.5 else 0
        keep = durable + unsynced[:survive]
        data = last.data[: keep[-1][1]] if keep else b""
        lost = unsynced[survive:]
        torn = b""
        if lost and rng.random() < 0.5:  # part of the next frame reached the disk
            start, end = lost[0]
            piece = bytearray(last.data[start : start + rng.randint(1, end - start - 1)])
            if rng.random() < 0.3:  # and the sector holding its end is garbage
                piece[rng.randrange(len(piece))] ^= 1 << rng.randrange(8)
            torn = bytes(piece)
        kept = SegmentImage(last.base_offset, data + torn, len(data) + len(torn))
        self._image = DiskImage((*sealed, kept), image.epochs, image.replica_state, image.limits)
        self._sync_target = None
        self._changed()
        return len(lost), len(torn)

    def recover(self) -> None:
        """Open the log the crash left; an open that refuses damage is followed by the
        operator's ``repair=True`` open (counted in ``repairs``)."""
        assert self._image is not None, "recover after a crash"
        image, self._image = self._image, None
        try:
            log = MemoryLog.recover(image, self.config)
        except CorruptLogError:
            self.repairs += 1
            log = MemoryLog.recover(image, self.config, repair=True)
        if log.recovery.torn_segment is not None:
            self.torn_tails_dropped += 1
        self.log = log
        self._changed()

    # --- disk faults (the node is down) ----------------------------------------------------

    def keep_copy(self) -> None:
        """Copy the durable part of the disk (a backup an operator could restore)."""
        if self._image is not None:
            return  # down: nothing changes on its disk
        image = self.log.disk_image()
        segments = tuple(
            SegmentImage(s.base_offset, s.data[: s.durable_bytes], s.durable_bytes)
            for s in image.segments
        )
        copy = DiskImage(segments, image.epochs, image.replica_state, image.limits)
        self._copies = [*self._copies[-(COPIES_KEPT - 1) :], copy]

    def drop_copies(self) -> None:
        self._copies = []

    def wipe(self) -> None:
        assert self._image is not None, "only the disk of a node that is down"
        self._image = DiskImage((), (), ReplicaState(), self._image.limits)
        self.damaged = True

    def restore_older(self, rng: random.Random) -> bool:
        assert self._image is not None, "only the disk of a node that is down"
        if not self._copies:
            return False
        self._image = rng.choice(self._copies)
        self.damaged = True
        return True

    def damage_durable(self, rng: random.Random) -> bool:
        """Flip one bit inside a frame of the durable part of the log."""
        assert self._image is not None, "only the disk of a node that is down"
        image = self._image
        candidates = [i for i, s in enumerate(image.segments) if s.durable_bytes > HEADER_SIZE]
        if not candidates:
            return False
        i = rng.choice(candidates)
        segment = image.segments[i]
        data = bytearray(segment.data)
        data[rng.randrange(segment.durable_bytes)] ^= 1 << rng.randrange(8)
        damaged = SegmentImage(segment.base_offset, bytes(data), segment.durable_bytes)
        segments = (*image.segments[:i], damaged, *image.segments[i + 1 :])
        self._image = DiskImage(segments, image.epochs, image.replica_state, image.limits)
        self.damaged = True
        return True

    # --- what the invariants read ----------------------------------------------------------

    def frame_at(self, offset: int) -> SimFrame:
        """The frame holding ``offset`` (below the log end), decoded."""
        frame = next(self.log.frames(offset))
        cached = self._frames.get(frame.header.base_offset)
        if cached is not None and cached.end == frame.header.end_offset:
            return cached
        records = list(self.log.read(frame.header.base_offset, frame.header.end_offset))
        header = frame.header
        sim_frame = SimFrame(
            header.base_offset,
            header.end_offset,
            header.epoch,
            frame.data,
            tuple(r.event for r in records),
        )
        self._frames[header.base_offset] = sim_frame
        return sim_frame

    def event_at(self, offset: int) -> Event | None:
        log = self.log
        if not log.log_start <= offset < log.log_end:
            return None
        frame = self.frame_at(offset)
        return frame.events[offset - frame.base]

    def _changed(self) -> None:
        self.version += 1
        self._frames.clear()


def _frame_spans(data: bytes) -> list[tuple[int, int]]:
    """``(start, end)`` of each whole frame in a segment's bytes."""
    spans, pos = [], 0
    while pos < len(data):
        status, header = inspect_frame(data, pos, 2**31)
        assert status is FrameStatus.OK and header is not None, status
        spans.append((pos, pos + header.frame_bytes))
        pos += header.frame_bytes
    return spans
