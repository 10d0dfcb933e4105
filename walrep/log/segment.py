"""One segment file of the log: frames for offsets ``[base_offset, end_offset)``.

Named by its base offset, 20 digits: ``00000000000000000042.wal``, with its sparse
index beside it (``.idx``). Only the newest segment is written; writes append at the
end through one file descriptor, reads use ``os.pread`` on another, so readers never
move a shared file position and never see bytes beyond ``size`` (the published size,
raised only after the bytes are written). Writes, truncations and forces go through the
log's ``FileOps`` (the fault-injection seam).

``needs_roll`` is the one rule for when a frame starts a new segment; ``MemoryLog``
applies it too, so the same appends give both the same segments.
"""

from __future__ import annotations

import os
from pathlib import Path

from walrep.errors import CorruptLogError
from walrep.log.frame import HEADER_SIZE, FrameHeader, FrameStatus, inspect_frame
from walrep.log.fsutil import DEFAULT_FILE_OPS, FileOps
from walrep.log.index import SparseIndex

SUFFIX = ".wal"
INDEX_SUFFIX = ".idx"
_IOV_MAX = 1024


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}{SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    stem = name[: -len(SUFFIX)]
    if name.endswith(SUFFIX) and len(stem) == 20 and stem.isdigit():
        return int(stem)
    return None


def needs_roll(segment_bytes: int, frame_bytes: int, segment_bytes_max: int) -> bool:
    """Whether a frame of ``frame_bytes`` goes into a new segment, not the active one.

    ``segment_bytes`` is where the frame would start in the active segment. A frame
    never makes a segment exceed ``segment_bytes_max``, unless the segment is empty
    (``LogConfig`` makes every frame fit an empty segment).
    """
    return segment_bytes > 0 and segment_bytes + frame_bytes > segment_bytes_max


class Segment:
    def __init__(
        self,
        directory: Path,
        base_offset: int,
        index_interval_bytes: int,
        ops: FileOps = DEFAULT_FILE_OPS,
    ) -> None:
        self.ops = ops
        self.base_offset = base_offset
        self.path = directory / segment_name(base_offset)
        self.index_path = directory / (f"{base_offset:020d}{INDEX_SUFFIX}")
        self.end_offset = base_offset
        self.size = 0
        self.last_epoch = 0
        self.index = SparseIndex(index_interval_bytes)
        self._read_fd: int | None = None
        self._write_fd: int | None = None

    # --- file handles ------------------------------------------------------------

    def create(self) -> None:
        """Create the empty file; the caller makes the directory entry durable."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)

    def _reader(self) -> int:
        if self._read_fd is None:
            self._read_fd = os.open(self.path, os.O_RDONLY)
        return self._read_fd

    def _writer(self) -> int:
        if self._write_fd is None:
            self._write_fd = os.open(self.path, os.O_WRONLY)
        return self._write_fd

    def close(self) -> None:
        for fd in (self._read_fd, self._write_fd):
            if fd is not None:
                os.close(fd)
        self._read_fd = self._write_fd = None

    def close_writer(self) -> None:
        if self._write_fd is not None:
            os.close(self._write_fd)
            self._write_fd = None

    # --- writing -----------------------------------------------------------------

    def write_at_end(self, chunks: list[bytes] | list[bytes | memoryview]) -> int:
        """Write ``chunks`` at byte ``size`` (not yet published); return the bytes written."""
        fd = self._writer()
        position, total = self.size, 0
        pwritev = self.ops.pwritev
        for i in range(0, len(chunks), _IOV_MAX):
            views = [memoryview(c) for c in chunks[i : i + _IOV_MAX]]
            first = 0  # views[first:] are still to be written (a short write resumes)
            while first < len(views):
                n = pwritev(fd, views[first:] if first else views, position)
                position += n
                total += n
                while first < len(views) and n >= len(views[first]):
                    n -= len(views[first])
                    first += 1
                if first < len(views) and n:
                    views[first] = views[first][n:]
        return total

    def sync(self) -> None:
        self.ops.fdatasync(self._writer())

    def dup_writer(self) -> int:
        """A second descriptor of the file, to force it without holding the log's lock.

        It stays valid when the segment is sealed or deleted; the caller closes it.
        """
        return os.dup(self._writer())

    def truncate(self, position: int) -> None:
        """Cut the file at ``position`` and force it; the caller fixes the metadata."""
        fd = self._writer()
        self.ops.ftruncate(fd, position)
        self.ops.fsync(fd)

    # --- reading -----------------------------------------------------------------

    def read_bytes(self, position: int, count: int) -> bytes:
        fd = self._reader()
        parts, want = [], count
        while want:
            part = self.ops.pread(fd, want, position + count - want)
            if not part:
                break
            parts.append(part)
            want -= len(part)
        return b"".join(parts)

    def read_all(self) -> bytes:
        return self.path.read_bytes()

    def read_frame(
        self,
        position: int,
        expected_offset: int | None,
        max_batch_bytes: int,
        *,
        reading_offset: int | None = None,
    ) -> tuple[FrameHeader, bytes]:
        """The checked frame at ``position``: its header and its whole bytes.

        Raises ``CorruptLogError`` naming this segment if the frame is not intact, is
        not wholly below the published size, or does not start at ``expected_offset``.
        """
        head = self.read_bytes(position, HEADER_SIZE)
        status, header = inspect_frame(head, 0, max_batch_bytes)
        reason = status.value
        fits = header is not None and position + header.frame_bytes <= self.size
        if status is FrameStatus.SHORT_PAYLOAD and header is not None and fits:
            frame = self.read_bytes(position, header.frame_bytes)
            status, header = inspect_frame(frame, 0, max_batch_bytes)
            reason = status.value
            if status is FrameStatus.OK and header is not None:
                if expected_offset is None or header.base_offset == expected_offset:
                    return header, frame
                reason = f"frame starts at offset {header.base_offset}"
        elif status is not FrameStatus.SHORT_PAYLOAD:
            reason = f"{status.value} (or empty payload)" if status is FrameStatus.OK else reason
        else:
            reason = "frame runs past the written end of the segment"
        # Name the offset the caller was after when no exact base offset was expected.
        offset = next((o for o in (expected_offset, reading_offset) if o is not None), -1)
        raise CorruptLogError(str(self.path), position, offset, f"unreadable frame: {reason}")

    def locate(self, offset: int) -> int:
        """Byte position of the frame that holds ``offset`` (headers only, no CRC check)."""
        assert self.base_offset <= offset < self.end_offset, (offset, self.base_offset)
        position = self.index.floor(offset)
        while True:
            head = self.read_bytes(position, HEADER_SIZE)
            status, header = inspect_frame(head, 0, 2**32)
            if header is None or status not in (FrameStatus.SHORT_PAYLOAD, FrameStatus.OK):
                raise CorruptLogError(str(self.path), position, offset, "index points at no frame")
            if header.end_offset > offset:
                return position
            position += header.frame_bytes
