"""WAL frame codec: pure functions from events to bytes and back (no IO, no clock).

One frame holds one batch of consecutive events. All integers are little-endian.

Frame layout (header is ``HEADER_SIZE`` = 42 bytes)::

    pos  size  field
      0     4  magic            b"WALR"
      4     1  format version   1
      5     4  crc32c           CRC32C (Castagnoli) of bytes 9..42 of the header
                                followed by the payload (everything after this field)
      9     8  base offset      u64, offset of the first event in the batch
     17     4  event count      u32, >= 1
     21     8  epoch            u64, lease epoch of the writer
     29     8  ingest time ms   u64, milliseconds since the Unix epoch, set by the sequencer
     37     1  codec flags      bit 0: payload is lz4-block compressed; other bits zero
     38     4  payload length   u32, bytes of payload that follow the header
     42     n  payload

Payload, before compression: the UTF-8 JSON array (orjson) of the batch's events, one
JSON array per event::

    [stream, attributes]                     event without producer identity
    [stream, attributes, producer_id, seq]   event from an idempotent producer

When flag bit 0 is set the stored payload is ``u32 uncompressed length`` followed by
the lz4 block. Compression is used only above ``compress_threshold_bytes`` and only
when it makes the payload smaller.

Limits (``limit_violation``, the one rule every append path applies before writing and
every reader applies after reading): count >= 1, only known flags, a stored payload of
at most ``max_batch_bytes`` (plus the 4-byte size prefix when lz4; a compressed payload
holds at least that prefix), and an uncompressed size (the lz4 prefix, else the stored
length) of at most ``max_batch_bytes``. So a frame a writer accepted is never refused by
a reader with the same limits.

Checks, in order, when reading: magic and version (not covered by the CRC, compared to
constants), the header's limits, all bytes present, CRC32C, the lz4 size prefix against
the batch limit, then the decoded event count equals the header's count. A frame that
passes the CRC but fails to decode is reported as corrupt, never returned.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import google_crc32c
import lz4.block
import orjson

from walrep.errors import InvalidEventError, LimitExceededError, MalformedFrameError

MAGIC: Final = b"WALR"
FORMAT_VERSION: Final = 1
FLAG_LZ4: Final = 0x01
KNOWN_FLAGS: Final = FLAG_LZ4

_HEADER: Final = struct.Struct("<4sBIQIQQBI")
HEADER_SIZE: Final = _HEADER.size
CRC_START: Final = 9  # the CRC covers everything from this header position on
_LZ4_SIZE: Final = struct.Struct("<I")

assert HEADER_SIZE == 42, HEADER_SIZE
assert _HEADER.unpack(b"\0" * 5 + b"\xff" * 4 + b"\0" * 33)[2] == 0xFFFFFFFF  # crc at 5..9


class Event(list[Any]):
    """One event: its stream, its attributes and, optionally, its producer identity.

    An ``Event`` *is* its payload row — a read-only list ``[stream, attributes]`` or
    ``[stream, attributes, producer_id, seq]`` — so a batch is serialized by one
    ``orjson.dumps`` in C, with no per-event Python work on the append path. It is
    checked once, here: ``stream`` a non-empty str, ``attributes`` a dict with str keys
    (its values are checked by the encoder: JSON types only), ``producer_id`` (non-empty
    str) and ``seq`` (int >= 0) together or not at all. Mutating methods raise.
    """

    __slots__ = ()

    def __init__(
        self,
        stream: str,
        attributes: dict[str, Any],
        producer_id: str | None = None,
        seq: int | None = None,
    ) -> None:
        if type(stream) is not str or not stream:
            raise InvalidEventError(f"stream name must be a non-empty string, got {stream!r}")
        if not isinstance(attributes, dict):
            raise InvalidEventError(f"attributes must be a dict, got {type(attributes).__name__}")
        if producer_id is None and seq is None:
            list.__init__(self, (stream, attributes))
        elif type(producer_id) is str and producer_id and _is_seq(seq):
            list.__init__(self, (stream, attributes, producer_id, seq))
        else:
            raise InvalidEventError("producer_id (non-empty str) and seq (int >= 0) go together")

    @classmethod
    def _from_row(cls, row: list[Any]) -> Event:
        """An event from a row the decoder has already checked (no second check)."""
        event = list.__new__(cls)
        list.extend(event, row)
        return event

    @property
    def stream(self) -> str:
        return self[0]  # type: ignore[no-any-return]

    @property
    def attributes(self) -> dict[str, Any]:
        return self[1]  # type: ignore[no-any-return]

    @property
    def producer_id(self) -> str | None:
        return self[2] if len(self) == 4 else None

    @property
    def seq(self) -> int | None:
        return self[3] if len(self) == 4 else None

    def __repr__(self) -> str:
        producer = f", {self[2]!r}, {self[3]!r}" if len(self) == 4 else ""
        return f"Event({self[0]!r}, {self[1]!r}{producer})"

    def _read_only(self, *args: object, **kwargs: object) -> Any:
        raise TypeError("Event is read-only")

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only
    append = extend = insert = pop = remove = clear = sort = reverse = _read_only


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """A batch's payload, ready to be framed: the unit an "already-encoded" append takes."""

    payload: bytes
    count: int
    flags: int
    uncompressed_bytes: int


@dataclass(frozen=True, slots=True)
class FrameHeader:
    base_offset: int
    count: int
    epoch: int
    ingest_time_ms: int
    flags: int
    payload_bytes: int
    crc: int

    @property
    def end_offset(self) -> int:
        """One past the last offset in the frame."""
        return self.base_offset + self.count

    @property
    def frame_bytes(self) -> int:
        return HEADER_SIZE + self.payload_bytes


class FrameStatus(enum.Enum):
    """What ``inspect_frame`` found at a position of a buffer."""

    OK = "ok"
    SHORT_HEADER = "fewer bytes than a header left"
    BAD_MAGIC = "magic or format version wrong"
    BAD_HEADER = "header fields out of range"
    SHORT_PAYLOAD = "payload runs past the end"
    BAD_CRC = "CRC32C mismatch"
    OVER_LIMIT = "uncompressed size over the batch limit"


@dataclass(frozen=True, slots=True)
class LimitViolation:
    """Why a batch or frame is outside the limits a reader applies (see ``limit_violation``).

    ``size`` and ``limit`` are set when a size limit is exceeded; else the frame's fields
    are out of range (no event, unknown flags, no room for the lz4 size prefix).
    """

    reason: str
    size: int | None = None
    limit: int = 0

    def error(self, what: str) -> LimitExceededError | MalformedFrameError:
        """The typed error for ``what`` (e.g. "batch of 3 events") breaking this limit."""
        if self.size is not None:
            return LimitExceededError(f"{what}: {self.reason}", self.size, self.limit)
        return MalformedFrameError(f"{what}: {self.reason}")


def limit_violation(
    count: int,
    flags: int,
    payload_bytes: int,
    max_batch_bytes: int,
    uncompressed_bytes: int | None = None,
) -> LimitViolation | None:
    """The limit rule of the format, shared by the writer and every reader; None if within.

    ``uncompressed_bytes`` is the lz4 size prefix (``lz4_size``) when it is known: the
    header alone cannot tell it. For an uncompressed payload the stored length is the
    uncompressed size, so its stored limit is ``max_batch_bytes`` itself.
    """
    if count < 1:
        return LimitViolation("a batch holds at least one event")
    if flags & ~KNOWN_FLAGS:
        return LimitViolation(f"unknown codec flags 0x{flags:02x}")
    compressed = flags & FLAG_LZ4
    stored_max = max_batch_bytes + _LZ4_SIZE.size if compressed else max_batch_bytes
    if payload_bytes > stored_max:
        return LimitViolation("stored payload", payload_bytes, stored_max)
    if compressed and payload_bytes < _LZ4_SIZE.size:
        return LimitViolation("compressed payload shorter than its size prefix")
    if uncompressed_bytes is not None and uncompressed_bytes > max_batch_bytes:
        return LimitViolation("uncompressed payload", uncompressed_bytes, max_batch_bytes)
    return None


def lz4_size(flags: int, buf: bytes | memoryview, payload_pos: int = 0) -> int | None:
    """The uncompressed size an lz4 payload at ``buf[payload_pos]`` declares (None: not lz4).

    The caller has checked that the 4-byte prefix is there (``limit_violation``).
    """
    if not flags & FLAG_LZ4:
        return None
    (size,) = _LZ4_SIZE.unpack_from(buf, payload_pos)
    return int(size)


def payload_violation(
    count: int,
    flags: int,
    buf: bytes | memoryview,
    payload_pos: int,
    payload_bytes: int,
    max_batch_bytes: int,
) -> LimitViolation | None:
    """``limit_violation`` of a payload whose bytes are at hand: the lz4 prefix included."""
    violation = limit_violation(count, flags, payload_bytes, max_batch_bytes)
    if violation is None and flags & FLAG_LZ4:
        raw = lz4_size(flags, buf, payload_pos)
        violation = limit_violation(count, flags, payload_bytes, max_batch_bytes, raw)
    return violation


def encode_event(event: Event, max_event_bytes: int) -> bytes:
    """Encode one event as its JSON array; raise a typed error for bad or oversized input."""
    if type(event) is not Event:
        raise InvalidEventError(f"not an Event: {type(event).__name__}")
    try:
        encoded = orjson.dumps(event)
    except TypeError as e:  # orjson.JSONEncodeError is a TypeError
        raise InvalidEventError(f"event on stream {event.stream!r} is not JSON: {e}") from e
    if len(encoded) > max_event_bytes:
        raise LimitExceededError(f"event on stream {event.stream!r}", len(encoded), max_event_bytes)
    return encoded


def _is_seq(seq: object) -> bool:
    return isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq < 2**63


def encode_batch(
    events: Sequence[Event],
    *,
    max_event_bytes: int,
    max_batch_bytes: int,
    compress_threshold_bytes: int,
) -> EncodedBatch:
    """Encode events into one payload; nothing is returned unless every event is valid.

    Hot path: one ``orjson.dumps`` of the whole batch (events are already rows), then
    lz4. Only when that fails, or the batch is larger than one event may be, is each
    event encoded on its own, to name the offending event.
    """
    if not events:
        raise InvalidEventError("a batch needs at least one event")
    if set(map(type, events)) != {Event}:
        bad = next(e for e in events if type(e) is not Event)
        raise InvalidEventError(f"not an Event: {type(bad).__name__}")
    try:
        raw = orjson.dumps(events)
    except TypeError:  # some attribute is not JSON (a non-str key, an object): name it
        for event in events:
            encode_event(event, max_event_bytes)
        raise
    if len(raw) > max_event_bytes:  # then one event might be too: check each
        for event in events:
            encode_event(event, max_event_bytes)
    return pack_payload(raw, len(events), max_batch_bytes, compress_threshold_bytes)


def pack_payload(
    raw: bytes, count: int, max_batch_bytes: int, compress_threshold_bytes: int
) -> EncodedBatch:
    """Compress an encoded JSON array if that pays off, and check the batch limit."""
    if len(raw) > max_batch_bytes:
        raise LimitExceededError(f"batch of {count} events", len(raw), max_batch_bytes)
    if len(raw) >= compress_threshold_bytes:
        # store_size=True prefixes the u32 little-endian uncompressed size: our layout.
        stored: bytes = lz4.block.compress(raw, store_size=True)
        if len(stored) < len(raw):
            return EncodedBatch(stored, count, FLAG_LZ4, len(raw))
    return EncodedBatch(raw, count, 0, len(raw))


def frame_crc(header_tail: bytes | memoryview, payload: bytes | memoryview) -> int:
    """CRC32C over the header after the CRC field, then the payload."""
    # google_crc32c takes only bytes: views are copied here, at the one boundary.
    head = header_tail if isinstance(header_tail, bytes) else bytes(header_tail)
    body = payload if isinstance(payload, bytes) else bytes(payload)
    return int(google_crc32c.extend(google_crc32c.value(head), body))


def parse_header(frame: bytes | memoryview, pos: int = 0) -> FrameHeader:
    """The header fields at ``pos``, unchecked: for frames this process just built."""
    _, _, crc, base, count, epoch, ingest, flags, size = _HEADER.unpack_from(frame, pos)
    return FrameHeader(base, count, epoch, ingest, flags, size, crc)


def build_header(
    batch: EncodedBatch, *, base_offset: int, epoch: int, ingest_time_ms: int
) -> tuple[bytes, FrameHeader]:
    """The header for ``batch`` (to be written right before its payload), and its fields.

    The CRC covers the header after the CRC field and the payload, exactly as written.
    """
    assert batch.count >= 1 and base_offset >= 0 and epoch >= 0 and ingest_time_ms >= 0
    size = len(batch.payload)
    rest = (base_offset, batch.count, epoch, ingest_time_ms, batch.flags, size)
    crc = frame_crc(_HEADER.pack(MAGIC, FORMAT_VERSION, 0, *rest)[CRC_START:], batch.payload)
    fields = FrameHeader(base_offset, batch.count, epoch, ingest_time_ms, batch.flags, size, crc)
    return _HEADER.pack(MAGIC, FORMAT_VERSION, crc, *rest), fields


def build_frame(batch: EncodedBatch, *, base_offset: int, epoch: int, ingest_time_ms: int) -> bytes:
    """Header + payload as one bytes object, CRC computed over the exact bytes written."""
    header, _ = build_header(
        batch, base_offset=base_offset, epoch=epoch, ingest_time_ms=ingest_time_ms
    )
    return header + batch.payload


def reframe_prefix(
    header: FrameHeader,
    payload: bytes | memoryview,
    end_offset: int,
    *,
    max_batch_bytes: int,
    compress_threshold_bytes: int,
) -> bytes:
    """The frame of the batch's events below ``end_offset``: what a truncation keeps of it.

    Same base offset, epoch and ingest time; encoded again, in the smallest of three
    forms: by the rule of any batch, lz4 whatever the size, lz4 in high-compression mode
    (all read back the same way). The smallest, because the prefix replaces the frame in
    its segment: stored raw under the compression threshold it could be larger than the
    compressed frame it replaces and push the segment past ``segment_bytes_max`` (found by
    the log's model test). ``MalformedFrameError`` if the payload does not decode.
    """
    assert header.base_offset < end_offset < header.end_offset, (header, end_offset)
    events = decode_payload(header, payload, max_batch_bytes)[: end_offset - header.base_offset]
    raw = orjson.dumps(events)  # the events of a checked frame: each within its limits
    batch = pack_payload(raw, len(events), max_batch_bytes, compress_threshold_bytes)
    for stored in (
        lz4.block.compress(raw, store_size=True),
        lz4.block.compress(raw, store_size=True, mode="high_compression", compression=12),
    ):
        if len(stored) < len(batch.payload):
            batch = EncodedBatch(stored, batch.count, FLAG_LZ4, len(raw))
    return build_frame(
        batch,
        base_offset=header.base_offset,
        epoch=header.epoch,
        ingest_time_ms=header.ingest_time_ms,
    )


def inspect_frame(
    buf: bytes | memoryview, pos: int, max_batch_bytes: int
) -> tuple[FrameStatus, FrameHeader | None]:
    """Check the frame starting at ``buf[pos]``: the header (if readable) and a status.

    Pure and total: any bytes give a status, never an exception. The limits are those
    of ``limit_violation`` with ``max_batch_bytes``.
    """
    if len(buf) - pos < HEADER_SIZE:
        return FrameStatus.SHORT_HEADER, None
    magic, version, crc, base, count, epoch, ingest, flags, size = _HEADER.unpack_from(buf, pos)
    if magic != MAGIC or version != FORMAT_VERSION:
        return FrameStatus.BAD_MAGIC, None
    header = FrameHeader(base, count, epoch, ingest, flags, size, crc)
    if base + count >= 2**63 or limit_violation(count, flags, size, max_batch_bytes) is not None:
        return FrameStatus.BAD_HEADER, header
    end = pos + HEADER_SIZE + size
    if end > len(buf):
        return FrameStatus.SHORT_PAYLOAD, header
    if frame_crc(buf[pos + CRC_START : pos + HEADER_SIZE], buf[pos + HEADER_SIZE : end]) != crc:
        return FrameStatus.BAD_CRC, header
    if payload_violation(count, flags, buf, pos + HEADER_SIZE, size, max_batch_bytes) is not None:
        return FrameStatus.OVER_LIMIT, header  # the header was fine: the lz4 size prefix is not
    return FrameStatus.OK, header


def decode_payload(
    header: FrameHeader, payload: bytes | memoryview, max_batch_bytes: int
) -> list[Event]:
    """Decode a CRC-checked payload into events; ``MalformedFrameError`` if it is not one.

    The limits are checked again first (``limit_violation``), so no bytes beyond them are
    ever allocated.
    """
    data = bytes(payload)
    violation = payload_violation(header.count, header.flags, data, 0, len(data), max_batch_bytes)
    if violation is not None:
        raise MalformedFrameError(f"payload outside the limits: {violation.reason}")
    raw_size = lz4_size(header.flags, data)
    if raw_size is not None:
        try:
            data = lz4.block.decompress(data[_LZ4_SIZE.size :], uncompressed_size=raw_size)
        except lz4.block.LZ4BlockError as e:
            raise MalformedFrameError(f"lz4 block does not decompress: {e}") from e
    try:
        rows = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise MalformedFrameError(f"payload is not JSON: {e}") from e
    if not isinstance(rows, list) or len(rows) != header.count:
        raise MalformedFrameError(f"payload does not hold {header.count} events")
    return [_event_from_row(row) for row in rows]


def _event_from_row(row: object) -> Event:
    if isinstance(row, list):
        if len(row) == 2 and isinstance(row[0], str) and row[0] and isinstance(row[1], dict):
            return Event._from_row(row)
        if (
            len(row) == 4
            and isinstance(row[0], str)
            and row[0]
            and isinstance(row[1], dict)
            and isinstance(row[2], str)
            and row[2]
            and _is_seq(row[3])
        ):
            return Event._from_row(row)
    raise MalformedFrameError("payload element is not an event")
