"""Snapshot codec: pure functions from (meta, state bytes) to chunks and back (no IO).

The engine hands over its canonical state as opaque bytes together with a
``SnapshotMeta`` whose ``digest`` is ``blake2b(state, digest_size=16).hexdigest()``; so
a store can verify a snapshot without the engine. One snapshot is one *blob*; stores
keep it whole (a file) or cut into chunks of at most ``chunk_bytes`` (database rows).
All integers are big-endian.

Blob layout (the fixed header is ``HEADER_SIZE`` = 39 bytes)::

    pos  size  field
      0     4  magic            b"WSNP"
      4     2  format version   u16, 1
      6     4  crc32c           CRC32C (Castagnoli) of every byte after this field,
                                header rest, meta and payload, to the end of the blob
     10     1  codec            1 = lz4 frame (the only one)
     11     4  chunk bytes      u32, the size of every chunk but the last
     15     4  chunk count      u32, >= 1: ceil(blob length / chunk bytes)
     19     4  meta length      u32, <= META_BYTES_MAX
     23     8  state length     u64, uncompressed state bytes
     31     8  payload length   u64, compressed bytes that follow the meta
     39     m  meta             canonical JSON of SnapshotMeta (sorted keys, no spaces,
                                ASCII): {"app_versions": [[name, version], ...],
                                "created_ms", "digest", "epoch", "format_version", "offset"}
    39+m    p  payload          the state, lz4.frame-compressed

Chunk ``i`` is ``blob[i * chunk_bytes : (i + 1) * chunk_bytes]``.

Checks when decoding, in order, each failure a ``SnapshotCorruptError`` naming it:
at least a header; magic; format version; chunk count and chunk sizes against the
header; the lengths add up to the blob length; CRC32C; codec; the meta parses and its
fields have their types; the state length is within ``max_state_bytes``; the payload
decompresses to exactly ``state length`` bytes (bounded: never more is produced); the
blake2b digest of the state equals ``meta.digest``. Magic and version are outside the
CRC and compared to constants; every other byte is covered by it.

Memory: encoding holds the state, its compressed copy and the chunks (about three times
the state); decoding about the same. ``max_state_bytes`` bounds all of it.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

import google_crc32c
import lz4.frame

from walrep.engine.types import SnapshotMeta
from walrep.errors import SnapshotCorruptError, SnapshotTooLargeError

MAGIC: Final = b"WSNP"
FORMAT_VERSION: Final = 1
CODEC_LZ4_FRAME: Final = 1

_PREFIX: Final = struct.Struct(">4sHI")  # magic, version, crc
_FIELDS: Final = struct.Struct(">BIIIQQ")  # codec, chunk bytes, count, meta len, state, payload
CRC_START: Final = _PREFIX.size
HEADER_SIZE: Final = _PREFIX.size + _FIELDS.size

META_BYTES_MAX: Final = 64 * 1024
CHUNK_BYTES_DEFAULT: Final = 512 * 1024
CHUNK_BYTES_MIN: Final = 4 * 1024
CHUNK_BYTES_MAX: Final = 4 * 1024 * 1024
STATE_BYTES_MAX_DEFAULT: Final = 1024 * 1024 * 1024  # 1 GiB
DIGEST_HEX_CHARS: Final = 32  # blake2b, digest_size=16

# Every chunk is one row insert. MySQL/MariaDB's default max_allowed_packet is 16 MiB and
# the driver (PyMySQL's escaping, as aiomysql sends it) may double a binary value in the
# worst case, plus the statement around it: the largest chunk must fit twice with room.
MYSQL_DEFAULT_MAX_ALLOWED_PACKET: Final = 16 * 1024 * 1024
STATEMENT_OVERHEAD_BYTES: Final = 64 * 1024

assert HEADER_SIZE == 39, HEADER_SIZE
assert CRC_START == 10, CRC_START
assert CHUNK_BYTES_MIN >= HEADER_SIZE  # the first chunk always holds the whole header
assert CHUNK_BYTES_MIN <= CHUNK_BYTES_DEFAULT <= CHUNK_BYTES_MAX
assert 2 * CHUNK_BYTES_MAX + STATEMENT_OVERHEAD_BYTES <= MYSQL_DEFAULT_MAX_ALLOWED_PACKET

_DIGEST_RE: Final = re.compile(r"^[0-9a-f]{32}$")


def state_digest(state: bytes) -> str:
    """The digest the engine records for ``state`` (stores recompute it to verify)."""
    return hashlib.blake2b(state, digest_size=16).hexdigest()


def blob_bytes_max(max_state_bytes: int) -> int:
    """The largest blob a state of ``max_state_bytes`` can encode to (lz4's worst case)."""
    lz4_worst = max_state_bytes + max_state_bytes // 255 + 16 + 64  # + frame header/footer
    return HEADER_SIZE + META_BYTES_MAX + lz4_worst


def meta_to_json(meta: SnapshotMeta) -> bytes:
    """Canonical JSON of ``meta``: equal metas give equal bytes."""
    doc = {
        "app_versions": [[name, version] for name, version in meta.app_versions],
        "created_ms": meta.created_ms,
        "digest": meta.digest,
        "epoch": meta.epoch,
        "format_version": meta.format_version,
        "log_epoch": meta.log_epoch,
        "offset": meta.offset,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def meta_from_json(data: bytes) -> SnapshotMeta:
    """The meta stored as ``meta_to_json``; ``SnapshotCorruptError`` if it is not one."""
    try:
        doc = json.loads(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as e:
        raise SnapshotCorruptError(f"snapshot meta is not JSON: {e}") from e
    if not isinstance(doc, dict) or sorted(doc) != [
        "app_versions",
        "created_ms",
        "digest",
        "epoch",
        "format_version",
        "log_epoch",
        "offset",
    ]:
        raise SnapshotCorruptError(f"snapshot meta has the wrong keys: {_short(doc)}")
    versions = doc["app_versions"]
    if not isinstance(versions, list) or not all(
        isinstance(v, list) and len(v) == 2 and all(isinstance(s, str) for s in v) for v in versions
    ):
        raise SnapshotCorruptError(f"snapshot meta: app_versions {_short(versions)} is invalid")
    meta = SnapshotMeta(
        offset=_int(doc, "offset"),
        epoch=_int(doc, "epoch"),
        digest=doc["digest"] if isinstance(doc["digest"], str) else "",
        app_versions=tuple((name, version) for name, version in versions),
        format_version=_int(doc, "format_version"),
        log_epoch=_int(doc, "log_epoch"),
        created_ms=_int(doc, "created_ms"),
    )
    check_meta(meta)
    return meta


def check_meta(meta: SnapshotMeta) -> None:
    """``SnapshotCorruptError`` unless every field of ``meta`` is in its range."""
    for name in ("offset", "epoch", "format_version", "created_ms"):
        value = getattr(meta, name)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
            raise SnapshotCorruptError(f"snapshot meta: {name} {value!r} is not an int >= 0")
    if not isinstance(meta.digest, str) or not _DIGEST_RE.match(meta.digest):
        raise SnapshotCorruptError(
            f"snapshot meta: digest {meta.digest!r} is not {DIGEST_HEX_CHARS} lowercase hex"
        )


def encode(
    meta: SnapshotMeta,
    state: bytes,
    *,
    chunk_bytes: int = CHUNK_BYTES_DEFAULT,
    max_state_bytes: int = STATE_BYTES_MAX_DEFAULT,
) -> list[bytes]:
    """The snapshot as chunks of at most ``chunk_bytes`` (join them for one blob).

    Refuses (``SnapshotCorruptError``) a meta out of range or whose digest is not the
    state's, so a snapshot that could never be restored is never written; refuses
    (``SnapshotTooLargeError``) a state over ``max_state_bytes``.
    """
    assert CHUNK_BYTES_MIN <= chunk_bytes <= CHUNK_BYTES_MAX, chunk_bytes
    check_meta(meta)
    if len(state) > max_state_bytes:
        raise SnapshotTooLargeError("snapshot state", len(state), max_state_bytes)
    if state_digest(state) != meta.digest:
        raise SnapshotCorruptError(
            f"refusing to encode a snapshot at offset {meta.offset}: the state's digest "
            f"{state_digest(state)} is not meta.digest {meta.digest}"
        )
    meta_json = meta_to_json(meta)
    if len(meta_json) > META_BYTES_MAX:
        raise SnapshotTooLargeError("snapshot meta", len(meta_json), META_BYTES_MAX)
    payload = lz4.frame.compress(state, store_size=True)
    total = HEADER_SIZE + len(meta_json) + len(payload)
    count = -(-total // chunk_bytes)
    fields = _FIELDS.pack(
        CODEC_LZ4_FRAME, chunk_bytes, count, len(meta_json), len(state), len(payload)
    )
    crc = google_crc32c.value(fields)
    for part in (meta_json, payload):
        crc = google_crc32c.extend(crc, part)
    pieces = (_PREFIX.pack(MAGIC, FORMAT_VERSION, crc) + fields + meta_json, payload)
    chunks = [
        b"".join(_parts(pieces, start, start + chunk_bytes))
        for start in range(0, total, chunk_bytes)
    ]
    assert len(chunks) == count and sum(len(c) for c in chunks) == total
    return chunks


def decode(
    chunks: Sequence[bytes], *, max_state_bytes: int = STATE_BYTES_MAX_DEFAULT
) -> tuple[SnapshotMeta, bytes]:
    """``(meta, state)`` from the chunks ``encode`` made, checked as the module says."""
    if not chunks:
        raise SnapshotCorruptError("snapshot has no chunks")
    header = _header(chunks[0])
    chunk_bytes, count = header[1], header[2]
    if len(chunks) != count:
        raise SnapshotCorruptError(f"snapshot has {len(chunks)} chunks, its header says {count}")
    for index, chunk in enumerate(chunks):
        last = index == count - 1
        if len(chunk) > chunk_bytes or (not last and len(chunk) != chunk_bytes) or not chunk:
            raise SnapshotCorruptError(
                f"snapshot chunk {index} of {count} is {len(chunk)} bytes; "
                f"chunks are {chunk_bytes} bytes (the last at most)"
            )
    return _decode_pieces(chunks, header, max_state_bytes)


def decode_blob(
    blob: bytes | Sequence[bytes], *, max_state_bytes: int = STATE_BYTES_MAX_DEFAULT
) -> tuple[SnapshotMeta, bytes]:
    """``(meta, state)`` from a whole blob (a file), given as bytes or in pieces of any size.

    Checked like ``decode`` except for the chunk boundaries, which a file does not keep.
    """
    pieces = [blob] if isinstance(blob, bytes) else list(blob)
    return _decode_pieces(
        pieces, _header(b"".join(_parts(pieces, 0, HEADER_SIZE))), max_state_bytes
    )


def read_meta(head: bytes) -> SnapshotMeta:
    """The meta of a blob from its first bytes (at least ``HEADER_SIZE`` + meta length).

    Not CRC-checked (that needs the whole blob): for listing only; ``decode`` verifies.
    """
    meta_len = _header(head)[3]
    if len(head) < HEADER_SIZE + meta_len:
        raise SnapshotCorruptError(
            f"snapshot is {len(head)} bytes, shorter than its header and meta "
            f"({HEADER_SIZE + meta_len} bytes)"
        )
    return meta_from_json(head[HEADER_SIZE : HEADER_SIZE + meta_len])


def meta_prefix_bytes(head: bytes) -> int:
    """How many leading bytes ``read_meta`` needs, from the first ``HEADER_SIZE`` bytes."""
    return HEADER_SIZE + _header(head)[3]


# --- internals -----------------------------------------------------------------------


def _header(data: bytes) -> tuple[int, int, int, int, int, int]:
    """The fields after the CRC, once magic, version and the basic bounds are checked."""
    if len(data) < HEADER_SIZE:
        raise SnapshotCorruptError(
            f"snapshot is {len(data)} bytes, shorter than its {HEADER_SIZE}-byte header"
        )
    magic, version, _ = _PREFIX.unpack_from(data, 0)
    if magic != MAGIC:
        raise SnapshotCorruptError(f"snapshot magic is {magic!r}, not {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise SnapshotCorruptError(
            f"snapshot format version is {version}, this walrep reads {FORMAT_VERSION}"
        )
    codec, chunk_bytes, count, meta_len, state_len, payload_len = _FIELDS.unpack_from(
        data, CRC_START
    )
    if not CHUNK_BYTES_MIN <= chunk_bytes <= CHUNK_BYTES_MAX or count < 1:
        raise SnapshotCorruptError(
            f"snapshot header: chunk bytes {chunk_bytes} / chunk count {count} out of range"
        )
    if meta_len > META_BYTES_MAX:
        raise SnapshotCorruptError(
            f"snapshot header: meta length {meta_len} is over {META_BYTES_MAX} bytes"
        )
    return codec, chunk_bytes, count, meta_len, state_len, payload_len


def _decode_pieces(
    pieces: Sequence[bytes], header: tuple[int, int, int, int, int, int], max_state_bytes: int
) -> tuple[SnapshotMeta, bytes]:
    codec, chunk_bytes, count, meta_len, state_len, payload_len = header
    total = HEADER_SIZE + meta_len + payload_len
    size = sum(len(p) for p in pieces)
    if size != total:
        raise SnapshotCorruptError(
            f"snapshot is {size} bytes, its header says {total} "
            f"({HEADER_SIZE} header + {meta_len} meta + {payload_len} payload)"
        )
    if count != -(-total // chunk_bytes):
        raise SnapshotCorruptError(
            f"snapshot header: {count} chunks of {chunk_bytes} bytes cannot hold {total} bytes"
        )
    stored_crc = _PREFIX.unpack(b"".join(_parts(pieces, 0, _PREFIX.size)))[2]
    crc = 0
    for part in _parts(pieces, CRC_START, total):
        crc = google_crc32c.extend(crc, part)
    if crc != stored_crc:
        raise SnapshotCorruptError(
            f"snapshot CRC32C mismatch: stored {stored_crc:#010x}, computed {crc:#010x}"
        )
    if codec != CODEC_LZ4_FRAME:
        raise SnapshotCorruptError(f"snapshot codec {codec} is unknown")
    meta = meta_from_json(b"".join(_parts(pieces, HEADER_SIZE, HEADER_SIZE + meta_len)))
    if state_len > max_state_bytes:
        raise SnapshotTooLargeError("snapshot state", state_len, max_state_bytes)
    state = _decompress(_parts(pieces, HEADER_SIZE + meta_len, total), state_len)
    digest = state_digest(state)
    if digest != meta.digest:
        raise SnapshotCorruptError(
            f"snapshot digest mismatch: meta says {meta.digest}, the state hashes to {digest}"
        )
    return meta, state


def _parts(pieces: Sequence[bytes], start: int, end: int) -> Iterator[bytes]:
    """The bytes at positions ``[start, end)`` of the pieces joined, without joining them."""
    position = 0
    for piece in pieces:
        low, high = max(start - position, 0), min(end - position, len(piece))
        if low < high:
            yield piece if (low, high) == (0, len(piece)) else piece[low:high]
        position += len(piece)
        if position >= end:
            return


def _decompress(payload: Iterable[bytes], state_len: int) -> bytes:
    """Exactly ``state_len`` bytes from one lz4 frame fed in parts; never more are produced."""
    decompressor = lz4.frame.LZ4FrameDecompressor()
    out: list[bytes] = []
    produced = 0
    try:
        for part in payload:
            if decompressor.eof:
                raise SnapshotCorruptError("snapshot payload has bytes after its lz4 frame")
            piece = decompressor.decompress(part, max_length=state_len - produced + 1)
            out.append(piece)
            produced += len(piece)
            if produced > state_len or not (decompressor.needs_input or decompressor.eof):
                raise SnapshotCorruptError(
                    f"snapshot payload decompresses to more than the header's {state_len} bytes"
                )
    except RuntimeError as e:  # python-lz4 reports a bad frame as RuntimeError
        raise SnapshotCorruptError(f"snapshot payload does not decompress: {e}") from e
    if not decompressor.eof or decompressor.unused_data:
        raise SnapshotCorruptError("snapshot payload is not exactly one complete lz4 frame")
    if produced != state_len:
        raise SnapshotCorruptError(
            f"snapshot payload decompresses to {produced} bytes, the header says {state_len}"
        )
    return b"".join(out)


def _int(doc: dict[str, Any], key: str) -> int:
    value = doc[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise SnapshotCorruptError(f"snapshot meta: {key} {_short(value)} is not an int")
    return value


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
