"""Durable file-system steps, and the one seam through which the log writes and forces.

``FileOps`` holds every call by which the log changes or forces a file (``pwritev``,
``write``, ``pwrite``, ``ftruncate``, ``fdatasync``, ``fsync``), and the ``pread`` of its
segment reads; the default calls ``os``.
Tests pass a ``FileOps`` whose methods raise ``OSError`` to simulate a failing disk
(``Wal.open(..., file_ops=...)``); nothing else of the log calls those ``os`` functions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


class FileOps:
    """File writes and forces of one log (override a method to inject faults)."""

    def pwritev(self, fd: int, buffers: Sequence[bytes | memoryview], offset: int) -> int:
        return os.pwritev(fd, buffers, offset)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        return os.write(fd, data)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def ftruncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def pread(self, fd: int, count: int, offset: int) -> bytes:
        return os.pread(fd, count, offset)


DEFAULT_FILE_OPS = FileOps()


def fsync_dir(directory: Path, ops: FileOps = DEFAULT_FILE_OPS) -> None:
    """Make creations, renames and unlinks in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ops.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, ops: FileOps = DEFAULT_FILE_OPS) -> None:
    """Replace ``path`` with ``data``: write a temp file, fsync it, rename, fsync the dir.

    A crash leaves either the old content or the new one, never a mix.
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[ops.write(fd, view) :]
        ops.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent, ops)


def remove_durably(path: Path, ops: FileOps = DEFAULT_FILE_OPS) -> None:
    """Unlink ``path`` if present and make the unlink durable before returning."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    fsync_dir(path.parent, ops)
