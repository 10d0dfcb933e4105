"""Snapshots as files in one directory of one node.

Files::

    snap-<offset:020d>-<epoch>.wsnap    one snapshot: the blob of ``format`` (chunks joined)
    fence                               the highest epoch that saved here (16 bytes:
                                        b"WFNC", u64 epoch, CRC32C of the first 12)
    .lock                               flock'ed by every change (saves, trims, setup)
    .snap-...wsnap.tmp, fence.tmp       temp files of a save in progress (removed by setup)

A save, under the lock, in this order: read the fence (the higher of the fence file and
the epochs in the file names) and refuse a lower epoch; write the snapshot to a temp
file and fsync it; if the epoch is new, replace the fence (temp, fsync, rename, fsync
dir); rename the temp file to its name and fsync the directory. So the fence is durable
before the snapshot it admits is visible, and a crash leaves the old set of snapshots
or the new one, never a partial file under a snapshot name.

Weaker than the database store, honestly: the directory is local to one node. Its
fence stops a stale writer *on this node* (an old process still running beside a new
one, a delayed save of a demoted active); it cannot see the peer's epochs, because the
peer has its own directory. Across nodes, one writer per epoch comes from the lease,
and a restored snapshot is checked against the node's epoch history by the caller's
``accept``. Use the ``db`` store when both nodes must read the same snapshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final, TypeVar

import google_crc32c

from walrep.engine.snapshots import format as fmt
from walrep.engine.snapshots.store import SnapshotId, SnapshotInfo, newest_first_key
from walrep.engine.types import SnapshotMeta
from walrep.errors import (
    SnapshotCorruptError,
    SnapshotError,
    SnapshotFencedError,
    SnapshotNotFoundError,
    SnapshotTooLargeError,
)
from walrep.log.fsutil import DEFAULT_FILE_OPS, FileOps, fsync_dir, write_atomic

T = TypeVar("T")
NAME_RE: Final = re.compile(r"^snap-(\d{20})-(\d{1,19})\.wsnap$")
FENCE_NAME: Final = "fence"
LOCK_NAME: Final = ".lock"
TMP_SUFFIX: Final = ".tmp"
_FENCE_HEAD: Final = struct.Struct(">4sQ")
_CRC: Final = struct.Struct(">I")
_FENCE_BYTES: Final = _FENCE_HEAD.size + _CRC.size
_FENCE_MAGIC: Final = b"WFNC"
_READ_BYTES: Final = 4 * 1024 * 1024


def snapshot_name(meta: SnapshotMeta) -> str:
    return f"snap-{meta.offset:020d}-{meta.epoch}.wsnap"


def fence_bytes(epoch: int) -> bytes:
    """The fence file's content for ``epoch`` (magic, epoch, CRC32C of both)."""
    head = _FENCE_HEAD.pack(_FENCE_MAGIC, epoch)
    return head + _CRC.pack(google_crc32c.value(head))


class FileSnapshotStore:
    """The snapshots of this node in ``directory`` (created by ``setup``)."""

    def __init__(
        self,
        directory: Path,
        *,
        chunk_bytes: int = fmt.CHUNK_BYTES_DEFAULT,
        max_state_bytes: int = fmt.STATE_BYTES_MAX_DEFAULT,
        file_ops: FileOps = DEFAULT_FILE_OPS,
    ) -> None:
        self.directory = directory
        self.chunk_bytes = chunk_bytes
        self.max_state_bytes = max_state_bytes
        self.ops = file_ops
        self._lock = asyncio.Lock()  # one change at a time in this process; flock across

    # --- plumbing ---------------------------------------------------------------------------

    async def _run(self, what: str, call: Callable[[], T], *, change: bool) -> T:
        """``call`` in a worker thread (file IO and fsync block); OSError -> SnapshotError."""
        try:
            if change:
                async with self._lock:
                    return await asyncio.to_thread(self._locked, call)
            return await asyncio.to_thread(call)
        except OSError as e:
            raise SnapshotError(f"snapshot directory {self.directory}: {what}: {e}") from e

    def _locked(self, call: Callable[[], T]) -> T:
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return call()
        finally:
            os.close(fd)  # releases the flock

    def _names(self) -> Iterator[tuple[str, int, int]]:
        """``(name, epoch, offset)`` of every snapshot file."""
        with os.scandir(self.directory) as entries:
            for entry in entries:
                match = NAME_RE.match(entry.name)
                if match is not None:
                    yield entry.name, int(match.group(2)), int(match.group(1))

    # --- the protocol -----------------------------------------------------------------------

    async def setup(self) -> None:
        """Create the directory; remove temp files a crashed save left behind."""

        def create() -> None:
            parent = self.directory.parent
            if not self.directory.is_dir():
                self.directory.mkdir(parents=True, exist_ok=True)
                fsync_dir(parent, self.ops)

        def clean() -> None:
            stale = [p for p in self.directory.iterdir() if p.name.endswith(TMP_SUFFIX)]
            for path in stale:
                path.unlink()
            if stale:
                fsync_dir(self.directory, self.ops)

        await self._run("create", create, change=False)
        await self._run("remove temp files", clean, change=True)

    async def save(self, meta: SnapshotMeta, state: bytes) -> SnapshotId:
        chunks = await asyncio.to_thread(
            fmt.encode,
            meta,
            state,
            chunk_bytes=self.chunk_bytes,
            max_state_bytes=self.max_state_bytes,
        )
        name = snapshot_name(meta)
        await self._run("save " + name, lambda: self._save(meta, name, chunks), change=True)
        return SnapshotId(name)

    def _save(self, meta: SnapshotMeta, name: str, chunks: list[bytes]) -> None:
        stored_fence = self._read_fence()
        fence = max([stored_fence, *(epoch for _, epoch, _ in self._names())])
        if meta.epoch < fence:
            raise SnapshotFencedError(meta.epoch, fence, f"directory {self.directory}")
        tmp = self.directory / f".{name}{TMP_SUFFIX}"
        try:
            self._write_synced(tmp, chunks)
            if meta.epoch > stored_fence:
                write_atomic(self.directory / FENCE_NAME, fence_bytes(meta.epoch), self.ops)
            os.replace(tmp, self.directory / name)
        except BaseException as e:
            try:
                tmp.unlink(missing_ok=True)
            except OSError as cleanup:
                e.add_note(f"and the temp file {tmp} could not be removed: {cleanup}")
            raise
        fsync_dir(self.directory, self.ops)

    def _write_synced(self, path: Path, chunks: list[bytes]) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[self.ops.write(fd, view) :]
            self.ops.fsync(fd)  # the data is durable before the rename makes it visible
        finally:
            os.close(fd)

    def _read_fence(self) -> int:
        path = self.directory / FENCE_NAME
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return 0
        if len(data) == _FENCE_BYTES:
            magic, epoch = _FENCE_HEAD.unpack_from(data)
            (crc,) = _CRC.unpack_from(data, _FENCE_HEAD.size)
            if magic == _FENCE_MAGIC and crc == google_crc32c.value(data[: _FENCE_HEAD.size]):
                return int(epoch)
        # Fail closed: a damaged fence might have held a higher epoch than any file name.
        raise SnapshotCorruptError(
            f"snapshot fence {path} is damaged ({len(data)} bytes): refusing to save; "
            "an operator must check the directory and remove or rewrite the fence"
        )

    async def list(self) -> list[SnapshotInfo]:
        def scan() -> list[SnapshotInfo]:
            found = sorted(
                self._names(), key=lambda n: newest_first_key(n[1], n[2], 0), reverse=True
            )
            return [
                SnapshotInfo(SnapshotId(name), epoch, offset, self._head_meta(name))
                for name, epoch, offset in found
            ]

        return await self._run("list", scan, change=False)

    def _head_meta(self, name: str) -> SnapshotMeta | None:
        """The stored meta from the file's first bytes, or None if it cannot be read."""
        try:
            with open(self.directory / name, "rb") as f:
                head = f.read(fmt.HEADER_SIZE)
                head += f.read(max(fmt.meta_prefix_bytes(head) - len(head), 0))
            return fmt.read_meta(head)
        except (SnapshotCorruptError, OSError):  # damaged or unreadable: load() says which
            return None

    async def load(self, snapshot_id: SnapshotId) -> tuple[SnapshotMeta, bytes]:
        match = NAME_RE.match(snapshot_id)
        if match is None:
            raise SnapshotNotFoundError(f"{snapshot_id!r} is not a snapshot file name")
        path = self.directory / snapshot_id

        def read() -> tuple[SnapshotMeta, bytes]:
            try:
                limit = fmt.blob_bytes_max(self.max_state_bytes)
                parts = _read_parts(path, limit, self.ops)
            except FileNotFoundError as e:
                raise SnapshotNotFoundError(f"no snapshot file {path}") from e
            try:
                meta, state = fmt.decode_blob(parts, max_state_bytes=self.max_state_bytes)
            except SnapshotCorruptError as e:
                raise SnapshotCorruptError(f"snapshot file {path}: {e}") from e
            named = (int(match.group(2)), int(match.group(1)))
            if named != (meta.epoch, meta.offset):
                raise SnapshotCorruptError(
                    f"snapshot file {path}: its name says epoch {named[0]} offset {named[1]}, "
                    f"its meta epoch {meta.epoch} offset {meta.offset}"
                )
            return meta, state

        return await self._run("load " + snapshot_id, read, change=False)

    async def trim(self, keep: int) -> int:
        assert keep >= 1, keep

        def remove() -> int:
            found = sorted(
                self._names(), key=lambda n: newest_first_key(n[1], n[2], 0), reverse=True
            )
            doomed = [name for name, _, _ in found[keep:]]
            for name in doomed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.directory / name)
            if doomed:
                fsync_dir(self.directory, self.ops)
            return len(doomed)

        return await self._run("trim", remove, change=True)

    async def close(self) -> None:
        """Nothing to release: every call opens and closes its own files."""


def _read_parts(path: Path, limit: int, ops: FileOps) -> list[bytes]:
    """The file in parts of ``_READ_BYTES`` (decoding needs no joined copy)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise SnapshotTooLargeError(f"snapshot file {path}", size, limit)
        parts: list[bytes] = []
        position = 0
        while position < size:
            part = ops.pread(fd, min(_READ_BYTES, size - position), position)
            if not part:
                break  # shrank under us: decoding reports the short blob
            parts.append(part)
            position += len(part)
        return parts
    finally:
        os.close(fd)
