"""Simulated disk: a write-ahead log of real frame bytes with a durable prefix.

The log is what survives a crash: a list of real WAL frames (built and checked with
``walrep.log.frame``), how many of them are forced to disk, and the epoch history (the
real ``EpochHistory`` with its file write stubbed out, so its KIP-101 answer is the
real one). It follows the contracts of ``walrep.log.wal.Wal`` that replication relies
on:

* appends are written at once (``log_end``) and become durable only when a simulated
  fsync that started after them completes (``durable_end``);
* a new epoch is recorded in the history before its first frame (and the history is
  durable: it survives a crash even when that frame does not);
* ``append_frames`` checks every frame (CRC, offsets, epoch order) before taking any;
* ``truncate_after`` cuts at any offset (a frame cut in two is re-framed, as
  ``walrep.log.truncate`` does) and forgets epochs that start at or after the cut;
* a crash keeps the durable prefix, a random number of the unsynced frames after it,
  and maybe a torn piece of the next one; recovery drops the torn piece after
  ``inspect_frame`` refused it and trims the history like ``walrep.log.open``.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from pathlib import Path

from walrep.errors import FencedError, LogError
from walrep.log.config import LogConfig
from walrep.log.epochs import EpochHistory
from walrep.log.frame import (
    HEADER_SIZE,
    Event,
    FrameStatus,
    build_frame,
    decode_payload,
    encode_batch,
    inspect_frame,
)

CONFIG = LogConfig()


class MemoryEpochHistory(EpochHistory):
    """The real epoch history, kept in memory only (the simulated disk holds it)."""

    def __init__(self) -> None:
        super().__init__(Path("sim-epochs"), [])

    def _save(self) -> None:  # the simulated disk: begin() is durable as it returns
        return None


@dataclass(frozen=True, slots=True)
class SimFrame:
    base: int
    end: int
    epoch: int
    ingest_time_ms: int
    data: bytes
    events: tuple[Event, ...]


def check_frame(data: bytes, pos: int = 0) -> SimFrame:
    """The frame at ``data[pos:]``, checked by the real codec; ``LogError`` otherwise."""
    status, header = inspect_frame(data, pos, CONFIG.max_payload_bytes)
    if status is not FrameStatus.OK or header is None:
        raise LogError(f"frame at byte {pos}: {status.value}")
    raw = data[pos : pos + header.frame_bytes]
    events = decode_payload(header, memoryview(raw)[HEADER_SIZE:], CONFIG.max_batch_bytes)
    return SimFrame(
        header.base_offset,
        header.end_offset,
        header.epoch,
        header.ingest_time_ms,
        raw,
        tuple(events),
    )


def make_frame(events: list[Event], base: int, epoch: int, ingest_time_ms: int) -> bytes:
    batch = encode_batch(
        events,
        max_event_bytes=CONFIG.max_event_bytes,
        max_batch_bytes=CONFIG.max_batch_bytes,
        compress_threshold_bytes=CONFIG.compress_threshold_bytes,
    )
    return build_frame(batch, base_offset=base, epoch=epoch, ingest_time_ms=ingest_time_ms)


class SimLog:
    def __init__(self) -> None:
        self.frames: list[SimFrame] = []
        self._bases: list[int] = []
        self.durable_frames = 0  # frames[:durable_frames] are forced to disk
        self.epochs = MemoryEpochHistory()
        # Bumped whenever content below log_end may change (truncate, crash): the
        # invariant checker re-verifies from scratch when it moves.
        self.version = 0
        self.torn: bytes = b""  # a partly written frame left by a crash (until recovery)
        self._sync_target: int | None = None  # frames an fsync in flight will force
        self.torn_tails_dropped = 0

    # --- state -------------------------------------------------------------------------

    @property
    def log_end(self) -> int:
        return self.frames[-1].end if self.frames else 0

    @property
    def durable_end(self) -> int:
        return self.frames[self.durable_frames - 1].end if self.durable_frames else 0

    @property
    def last_epoch(self) -> int:
        return self.epochs.last_epoch

    @property
    def last_epoch_start(self) -> int:
        return self.epochs.last_epoch_start

    def epoch_end(self, epoch: int) -> tuple[int, int]:
        """What the shipper's ``epoch_end`` callback answers (``EpochHistory.end_offset``)."""
        return self.epochs.end_offset(epoch, self.log_end)

    def frame_index(self, offset: int) -> int:
        """Index of the frame holding ``offset`` (``offset < log_end``)."""
        return bisect.bisect_right(self._bases, offset) - 1

    def event_at(self, offset: int) -> Event | None:
        if not 0 <= offset < self.log_end:
            return None
        frame = self.frames[self.frame_index(offset)]
        return frame.events[offset - frame.base]

    # --- writing -----------------------------------------------------------------------

    def append_events(self, events: list[Event], epoch: int, ingest_time_ms: int) -> int:
        """The writer's append: frame the batch at the end; returns its end offset."""
        data = make_frame(events, self.log_end, epoch, ingest_time_ms)
        self._take([check_frame(data)])
        return self.log_end

    def append_frames(self, data: bytes, base_offset: int) -> int:
        """A replica's append of verbatim frames: check all, then take all (or none)."""
        if base_offset != self.log_end:
            raise LogError(f"frames start at {base_offset}, log end is {self.log_end}")
        checked: list[SimFrame] = []
        pos, expected, epoch = 0, self.log_end, self.last_epoch
        while pos < len(data):
            frame = check_frame(data, pos)
            if frame.base != expected:
                raise LogError(f"frame at byte {pos} starts at {frame.base}, expected {expected}")
            if frame.epoch < epoch:
                raise FencedError(frame.epoch, epoch)
            checked.append(frame)
            pos += len(frame.data)
            expected, epoch = frame.end, frame.epoch
        if not checked:
            raise LogError("no frames to append")
        self._take(checked)
        return self.log_end

    def _take(self, frames: list[SimFrame]) -> None:
        for frame in frames:
            assert frame.base == self.log_end, (frame.base, self.log_end)
            if frame.epoch < self.last_epoch:
                raise FencedError(frame.epoch, self.last_epoch)
            if frame.epoch > self.last_epoch:
                self.epochs.begin(frame.epoch, frame.base)  # durable before the frame
            self.frames.append(frame)
            self._bases.append(frame.base)

    def truncate_after(self, offset: int) -> None:
        """Drop every event at or after ``offset`` (re-framing a frame cut in two)."""
        if not 0 <= offset <= self.log_end:
            raise LogError(f"truncate to {offset} outside [0, {self.log_end}]")
        if offset == self.log_end:
            return
        i = self.frame_index(offset)
        cut = self.frames[i]
        keep = self.frames[:i]
        if cut.base < offset:  # keep the events of the cut frame below the offset
            events = list(cut.events[: offset - cut.base])
            keep.append(check_frame(make_frame(events, cut.base, cut.epoch, cut.ingest_time_ms)))
        # The real truncation is crash-safe (intent record): the frame it re-wrote is as
        # durable as the one it replaces; an fsync in flight covers only frames[:i].
        self.durable_frames = len(keep) if self.durable_frames > i else self.durable_frames
        if self._sync_target is not None:
            self._sync_target = min(self._sync_target, i)
        self.frames = keep
        self._bases = [f.base for f in keep]
        self.epochs.truncate_from(offset)
        self.version += 1

    # --- fsync -------------------------------------------------------------------------

    def sync_start(self) -> bool:
        """Start an fsync of everything written so far; False if one is in flight."""
        if self._sync_target is not None:
            return False
        self._sync_target = len(self.frames)
        return True

    def sync_done(self) -> None:
        if self._sync_target is not None:
            self.durable_frames = max(self.durable_frames, self._sync_target)
            self._sync_target = None

    @property
    def syncing(self) -> bool:
        return self._sync_target is not None

    # --- crash and recovery ------------------------------------------------------------

    def crash(self, rng: random.Random) -> tuple[int, int]:
        """Power loss: unsynced frames survive only by luck; the next may be torn.

        Returns ``(frames lost, torn bytes left)``.
        """
        unsynced = len(self.frames) - self.durable_frames
        survive = rng.randint(0, unsynced) if unsynced and rng.random() < 0.5 else 0
        keep = self.durable_frames + survive
        lost = self.frames[keep:]
        self.torn = b""
        if lost and rng.random() < 0.5:  # part of the next frame reached the disk
            data = lost[0].data
            torn = bytearray(data[: rng.randint(1, len(data) - 1)])
            if rng.random() < 0.3:  # and the sector holding its end is garbage
                torn[rng.randrange(len(torn))] ^= 1 << rng.randrange(8)
            self.torn = bytes(torn)
        self.frames = self.frames[:keep]
        self._bases = self._bases[:keep]
        self.durable_frames = keep  # what survived is on disk now
        self._sync_target = None
        self.version += 1
        return len(lost), len(self.torn)

    def recover(self) -> None:
        """Open after a crash: a torn tail must fail ``inspect_frame`` and is cut off."""
        if self.torn:
            status, _ = inspect_frame(self.torn, 0, CONFIG.max_payload_bytes)
            if status is FrameStatus.OK:
                raise AssertionError("a strict prefix of a frame passed inspect_frame")
            self.torn = b""
            self.torn_tails_dropped += 1
        self.epochs.truncate_from(self.log_end + 1)  # as walrep.log.open does
        for frame in self.frames:  # epochs the history lacks (none expected)
            if frame.epoch > self.last_epoch:
                self.epochs.begin(frame.epoch, frame.base)

    # --- reading -----------------------------------------------------------------------

    def read_frames(self, from_offset: int, max_bytes: int) -> tuple[int, int, bytes] | None:
        """Whole frames from the one holding ``from_offset``: at least one, then up to
        ``max_bytes`` (what ``ActiveLink._read`` does); None past the end."""
        if not 0 <= from_offset < self.log_end:
            return None
        i = self.frame_index(from_offset)
        parts, size = [self.frames[i].data], len(self.frames[i].data)
        base, end = self.frames[i].base, self.frames[i].end
        for frame in self.frames[i + 1 :]:
            if size + len(frame.data) > max_bytes:
                break
            parts.append(frame.data)
            size += len(frame.data)
            end = frame.end
        return base, end, b"".join(parts)
