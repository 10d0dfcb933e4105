"""Replication messages and their wire codec: pure functions, no IO.

Every message on the event-sync connection is one wire frame, integers little-endian::

    u32 length     bytes that follow the CRC field (type + body), <= max_message_bytes
    u32 crc32c     CRC32C of type + body
    u8  type       one of MessageType
    ... body       Append: u64 epoch | u64 base offset | u32 count | u64 commit offset |
                           WAL frames (verbatim, as stored)
                   every other type: one orjson object with the fields of its class

The decoder checks, in order: the length against the maximum (before buffering the
body, so a peer cannot make us hold more than one maximum message), the CRC, the type,
then the body's shape. Its only outcomes are messages or ``PeerProtocolError``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Final

import google_crc32c
import orjson

from walrep.errors import PeerProtocolError

_PREFIX: Final = struct.Struct("<II")
_APPEND: Final = struct.Struct("<QQIQ")
PREFIX_BYTES: Final = _PREFIX.size
APPEND_HEADER_BYTES: Final = _APPEND.size
DEFAULT_MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024


class MessageType(enum.IntEnum):
    CHALLENGE = 1
    HELLO = 2
    HELLO_OK = 3
    REJECT = 4
    TRUNCATE = 5
    APPEND = 6
    ACK = 7
    HEARTBEAT = 8
    ERROR = 9


@dataclass(frozen=True, slots=True)
class Challenge:
    """Passive -> active, first message of a connection: who I am, and my nonce."""

    TYPE: ClassVar = MessageType.CHALLENGE
    node: str
    nonce: bytes


@dataclass(frozen=True, slots=True)
class Hello:
    """Active -> passive: who I am, my epoch, my nonce, and my proof of the secret."""

    TYPE: ClassVar = MessageType.HELLO
    group: str
    node: str
    epoch: int
    log_end: int
    nonce: bytes
    proof: bytes


@dataclass(frozen=True, slots=True)
class HelloOk:
    """Passive -> active: accepted; my log, my last epoch, what I know is committed."""

    TYPE: ClassVar = MessageType.HELLO_OK
    node: str
    log_end: int
    last_epoch: int
    last_epoch_start: int  # where its last epoch begins in its log (KIP-279's question)
    committed: int
    proof: bytes


@dataclass(frozen=True, slots=True)
class Reject:
    TYPE: ClassVar = MessageType.REJECT
    reason: str


@dataclass(frozen=True, slots=True)
class Truncate:
    """Active -> passive: drop everything at or after ``to_offset`` (KIP-101 answer)."""

    TYPE: ClassVar = MessageType.TRUNCATE
    to_offset: int


@dataclass(frozen=True, slots=True)
class Append:
    """Active -> passive: WAL frames for ``[base_offset, base_offset + count)``."""

    TYPE: ClassVar = MessageType.APPEND
    epoch: int
    base_offset: int
    count: int
    commit_offset: int
    frames: bytes


@dataclass(frozen=True, slots=True)
class Ack:
    """Passive -> active: everything below ``durable_offset`` is fsynced here."""

    TYPE: ClassVar = MessageType.ACK
    durable_offset: int
    last_epoch: int
    last_epoch_start: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Either way when idle; from the active it carries the commit offset."""

    TYPE: ClassVar = MessageType.HEARTBEAT
    commit_offset: int


@dataclass(frozen=True, slots=True)
class Error:
    """The sender is about to close, and why (``code`` is machine-readable)."""

    TYPE: ClassVar = MessageType.ERROR
    code: str
    message: str


Message = Challenge | Hello | HelloOk | Reject | Truncate | Append | Ack | Heartbeat | Error
_CLASSES: dict[int, type[Any]] = {
    c.TYPE: c for c in (Challenge, Hello, HelloOk, Reject, Truncate, Append, Ack, Heartbeat, Error)
}
_BYTES_FIELDS = {"nonce", "proof"}
_U64_MAX = 2**64 - 1


def encode(message: Message) -> bytes:
    """One wire frame for ``message``."""
    if isinstance(message, Append):
        head = _APPEND.pack(
            message.epoch, message.base_offset, message.count, message.commit_offset
        )
        body = bytes([message.TYPE]) + head + message.frames
    else:
        values = {
            f.name: getattr(message, f.name).hex()
            if f.name in _BYTES_FIELDS
            else getattr(message, f.name)
            for f in fields(message)
        }
        body = bytes([message.TYPE]) + orjson.dumps(values)
    return _PREFIX.pack(len(body), google_crc32c.value(body)) + body


class MessageReader:
    """Incremental decoder for one connection; holds at most one message's bytes."""

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.max_message_bytes = max_message_bytes
        self._buffer = bytearray()
        self._error: PeerProtocolError | None = None

    def feed(self, data: bytes) -> list[Message]:
        """Messages completed by ``data``; ``PeerProtocolError`` on anything malformed.

        Messages decoded before a malformed one are returned first (an ``Error`` followed
        by junk still arrives); the error is raised by the next call.
        """
        if self._error is not None:
            raise self._error
        self._buffer += data
        out: list[Message] = []
        try:
            while len(self._buffer) >= PREFIX_BYTES:
                length, crc = _PREFIX.unpack_from(self._buffer)
                if length == 0 or length > self.max_message_bytes:
                    raise PeerProtocolError(
                        f"message of {length} bytes (limit {self.max_message_bytes})"
                    )
                if len(self._buffer) < PREFIX_BYTES + length:
                    break
                body = bytes(self._buffer[PREFIX_BYTES : PREFIX_BYTES + length])
                del self._buffer[: PREFIX_BYTES + length]
                if google_crc32c.value(body) != crc:
                    raise PeerProtocolError("message fails its CRC32C")
                out.append(decode_body(body))
        except PeerProtocolError as e:
            self._buffer.clear()
            if not out:
                raise
            self._error = e
        return out

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)


def decode_body(body: bytes) -> Message:
    """The message in ``type + body`` (CRC already checked)."""
    cls = _CLASSES.get(body[0])
    if cls is None:
        raise PeerProtocolError(f"unknown message type {body[0]}")
    if cls is Append:
        if len(body) < 1 + _APPEND.size:
            raise PeerProtocolError("Append shorter than its header")
        epoch, base, count, commit = _APPEND.unpack_from(body, 1)
        return Append(epoch, base, count, commit, body[1 + _APPEND.size :])
    try:
        values = orjson.loads(body[1:])
    except orjson.JSONDecodeError as e:
        raise PeerProtocolError(f"{cls.__name__} body is not JSON: {e}") from e
    if not isinstance(values, dict) or set(values) != {f.name for f in fields(cls)}:
        raise PeerProtocolError(f"{cls.__name__} body has the wrong fields")
    args = {}
    for f in fields(cls):
        value = values[f.name]
        if f.name in _BYTES_FIELDS:
            if not isinstance(value, str) or len(value) > 256:
                raise PeerProtocolError(f"{cls.__name__}.{f.name} is not a short hex string")
            try:
                value = bytes.fromhex(value)
            except ValueError as e:
                raise PeerProtocolError(f"{cls.__name__}.{f.name} is not hex") from e
        elif f.type == "int":
            if type(value) is not int or not 0 <= value <= _U64_MAX:
                raise PeerProtocolError(f"{cls.__name__}.{f.name} is not an unsigned integer")
        elif type(value) is not str or len(value) > 4096:
            raise PeerProtocolError(f"{cls.__name__}.{f.name} is not a string")
        args[f.name] = value
    message: Message = cls(**args)
    return message
