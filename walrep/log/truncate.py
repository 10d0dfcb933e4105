"""Crash-safe truncation of the log's tail, through a durable intent record.

``truncate_after(offset)`` may have to delete several segments and cut one frame in
two (when ``offset`` falls inside a batch). To make that all-or-nothing, the exact
result is decided first and written as an intent record, atomically; then it is
applied; then the record is removed. ``redo_pending`` on open applies a record left by
a crash. Applying is idempotent, so a crash during the redo is also fine.

Intent file ``truncate.pending``, little-endian::

    magic "WALT" | version u8 | crc32c u32 of everything after it |
    target offset u64 | segment base offset u64 | byte position u64 |
    replacement length u32 | replacement frame (the events of the cut batch below the
    target, re-framed with the same epoch and ingest time; empty at a frame boundary)
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import google_crc32c

from walrep.errors import CorruptLogError, MalformedFrameError
from walrep.log.frame import HEADER_SIZE, reframe_prefix
from walrep.log.fsutil import DEFAULT_FILE_OPS, FileOps, fsync_dir, remove_durably, write_atomic
from walrep.log.limits import LogLimits
from walrep.log.segment import INDEX_SUFFIX, Segment, parse_segment_name, segment_name

MARKER = "truncate.pending"
_HEAD = struct.Struct("<4sBIQQQI")
_MAGIC = b"WALT"


def truncate_segments(
    directory: Path,
    segments: list[Segment],
    offset: int,
    limits: LogLimits,
    compress_threshold_bytes: int,
    ops: FileOps = DEFAULT_FILE_OPS,
) -> list[Segment]:
    """Cut the log so that ``offset`` is its end; returns the segments that remain.

    ``limits`` are the log's read limits (the cut batch was written under them). The
    intent record stays: the caller cuts the epoch history, then ``finish_pending``.
    Everything kept is forced to disk on return.
    """
    keep = max(i for i, s in enumerate(segments) if s.base_offset <= offset)
    segment = segments[keep]
    if offset == segment.end_offset:  # cut exactly at this segment's end
        position, replacement = segment.size, b""
    else:
        position = segment.locate(offset)
        header, frame = segment.read_frame(
            position, None, limits.max_batch_bytes, reading_offset=offset
        )
        replacement = b""
        if header.base_offset < offset:
            try:
                replacement = reframe_prefix(
                    header,
                    memoryview(frame)[HEADER_SIZE:],
                    offset,
                    max_batch_bytes=limits.max_batch_bytes,
                    compress_threshold_bytes=compress_threshold_bytes,
                )
            except MalformedFrameError as e:
                reason = f"the batch to cut does not decode: {e}"
                raise CorruptLogError(
                    str(segment.path), position, header.base_offset, reason
                ) from e
    body = (
        _HEAD.pack(_MAGIC, 1, 0, offset, segment.base_offset, position, len(replacement))[9:]
        + replacement
    )
    crc = google_crc32c.value(body)
    write_atomic(directory / MARKER, _MAGIC + b"\x01" + crc.to_bytes(4, "little") + body, ops)
    for later in segments[keep + 1 :]:
        later.close()
    segment.close()
    _apply(directory, segment.base_offset, position, replacement, ops)
    segment.size = position + len(replacement)
    segment.end_offset = offset
    segment.index.cut(position)
    if replacement:
        segment.index.note(int.from_bytes(replacement[9:17], "little"), position)
    return segments[: keep + 1]


def _apply(
    directory: Path, segment_base: int, position: int, replacement: bytes, ops: FileOps
) -> None:
    """Delete later segments (newest first), cut the segment, write the replacement."""
    later = sorted(
        (base, name)
        for name in os.listdir(directory)
        if (base := parse_segment_name(name)) is not None and base > segment_base
    )
    for base, name in reversed(later):
        (directory / name).unlink()
        (directory / f"{base:020d}{INDEX_SUFFIX}").unlink(missing_ok=True)
    (directory / f"{segment_base:020d}{INDEX_SUFFIX}").unlink(missing_ok=True)
    fsync_dir(directory, ops)
    fd = os.open(directory / segment_name(segment_base), os.O_WRONLY)
    try:
        ops.ftruncate(fd, position)
        view = memoryview(replacement)
        while view:
            view = view[ops.pwrite(fd, view, position + len(replacement) - len(view)) :]
        ops.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class PendingTruncation:
    """A truncation intent record: what ``truncate_after`` decided before applying it."""

    target_offset: int
    segment_base: int
    position: int
    replacement: bytes


def read_pending(directory: Path) -> PendingTruncation | None:
    """The intent record left in ``directory``, if any; ``CorruptLogError`` if damaged."""
    path = directory / MARKER
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    ok = len(data) >= _HEAD.size and data[:4] == _MAGIC
    if ok:
        _, _, crc, target, segment_base, position, size = _HEAD.unpack_from(data)
        ok = google_crc32c.value(data[9:]) == crc and len(data) == _HEAD.size + size
    if not ok:
        raise CorruptLogError(str(path), 0, -1, "truncation intent record fails its checksum")
    return PendingTruncation(target, segment_base, position, data[_HEAD.size :])


def redo_pending(directory: Path, ops: FileOps = DEFAULT_FILE_OPS) -> int | None:
    """Apply a truncation a crash interrupted; returns its target offset, if any.

    The record stays until the caller has also cut the epoch history
    (``finish_pending``): a crash before that redoes the whole truncation.
    """
    pending = read_pending(directory)
    if pending is None:
        return None
    _apply(directory, pending.segment_base, pending.position, pending.replacement, ops)
    return pending.target_offset


def finish_pending(directory: Path, ops: FileOps = DEFAULT_FILE_OPS) -> None:
    """The truncation is complete everywhere (segments and epoch history): forget it."""
    remove_durably(directory / MARKER, ops)
