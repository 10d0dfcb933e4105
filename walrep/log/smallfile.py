"""Small checksummed text files beside the segments: ``epochs``, ``limits``, ``replica-state``.

Each file is a head line naming its kind and version, some lines, and a trailer::

    <kind> <version>
    <line>
    ...
    crc32c <8 hex digits: CRC32C of every line above, newline included>

It is replaced atomically (``fsutil.write_atomic``: temp file, fsync, rename, fsync of
the directory), so a crash leaves the old content or the new one. A file that fails its
checksum, or whose lines do not parse, is ``CorruptLogError`` naming the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import google_crc32c

from walrep.errors import CorruptLogError
from walrep.log.fsutil import DEFAULT_FILE_OPS, FileOps, write_atomic

# Far above any of the three files (an epoch history of ~100k epochs): a bound on reads.
MAX_FILE_BYTES = 4 * 1024 * 1024


def encode_lines(head: str, lines: Sequence[str]) -> bytes:
    """The file's bytes: ``head``, one line each, and the checksum trailer."""
    body = "".join(f"{line}\n" for line in (head, *lines)).encode()
    return body + b"crc32c %08x\n" % google_crc32c.value(body)


def decode_lines(data: bytes, head: str, name: str, what: str) -> list[str]:
    """The lines after the head; ``CorruptLogError(name, ...)`` unless the checksum verifies."""
    body, _, trailer = data.rpartition(b"crc32c ")
    try:
        ok = (
            body.startswith(f"{head}\n".encode())
            and trailer.endswith(b"\n")
            and int(trailer, 16) == google_crc32c.value(body)
        )
        lines = body.decode().splitlines()[1:] if ok else []
    except (ValueError, UnicodeDecodeError):
        ok = False
    if not ok:
        raise CorruptLogError(name, 0, -1, f"{what} fails its checksum")
    return lines


def read_lines(path: Path, head: str, what: str) -> list[str] | None:
    """The lines of the file at ``path``; None if there is no such file."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(data) > MAX_FILE_BYTES:
        raise CorruptLogError(str(path), 0, -1, f"{what} is over {MAX_FILE_BYTES} bytes")
    return decode_lines(data, head, str(path), what)


def write_lines(
    path: Path, head: str, lines: Sequence[str], ops: FileOps = DEFAULT_FILE_OPS
) -> None:
    """Replace the file at ``path`` atomically and durably."""
    write_atomic(path, encode_lines(head, lines), ops)


def parse_counters(lines: Sequence[str], names: Sequence[str], name: str, what: str) -> list[int]:
    """Values of ``<name> <non-negative int>`` lines, exactly ``names`` in that order."""
    values = []
    try:
        pairs = [line.split(" ") for line in lines]
        if [p[0] for p in pairs] != list(names) or any(len(p) != 2 for p in pairs):
            raise ValueError(f"expected the fields {', '.join(names)}")
        for _, text in pairs:
            if not text.isdigit():
                raise ValueError(f"not a non-negative integer: {text!r}")
            values.append(int(text))
    except ValueError as e:
        raise CorruptLogError(name, 0, -1, f"{what} does not parse: {e}") from e
    return values
