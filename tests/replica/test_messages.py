"""The replication wire codec: round trips, limits, refusals, and a decoder fuzz.

The decoder's only outcomes are a list of messages or ``PeerProtocolError``; a damaged
stream never yields a message that differs from what was encoded (the CRC32C would
have to collide, which no test here can hit by chance).
"""

from __future__ import annotations

import itertools
import json
import random
import struct
from typing import Any

import google_crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from walrep.errors import PeerProtocolError
from walrep.replica.messages import (
    PREFIX_BYTES,
    Ack,
    Append,
    Challenge,
    Error,
    Heartbeat,
    Hello,
    HelloOk,
    Message,
    MessageReader,
    MessageType,
    Reject,
    Truncate,
    encode,
)

U64 = 2**64 - 1
NONCE = bytes(range(16))
PROOF = bytes(range(32))

SAMPLES: list[Message] = [
    Challenge("p1", NONCE),
    Hello("g1", "a1", 7, 1234, NONCE, PROOF),
    HelloOk("p1", 1200, 6, 1150, 1100, PROOF),
    Reject("authentication failed"),
    Truncate(1000),
    Append(7, 1200, 34, 1100, b"WALR" + bytes(200)),
    Append(1, 0, 1, 0, b""),
    Ack(1234, 7, 1200),
    Heartbeat(1234),
    Error("divergence", "asked to truncate to 3, 5 is committed here"),
    Hello("gröup", "äctive", U64, U64, b"", b"\x00" * 128),  # extremes that must pass
]


def frame(body: bytes) -> bytes:
    """A wire frame around ``type + body`` with a correct CRC (for refusal tests)."""
    return struct.pack("<II", len(body), google_crc32c.value(body)) + body


def json_frame(message_type: int, values: Any) -> bytes:
    # The stdlib's json, not orjson: it writes integers beyond 64 bits.
    return frame(bytes([message_type]) + json.dumps(values).encode())


def feed_chunks(data: bytes, cuts: list[int], reader: MessageReader | None = None) -> list[Message]:
    reader = reader or MessageReader()
    out: list[Message] = []
    points = sorted({0, len(data), *(c for c in cuts if 0 < c < len(data))})
    for lo, hi in itertools.pairwise(points):
        out += reader.feed(data[lo:hi])
    return out


# --- round trips ---------------------------------------------------------------------------


def test_every_message_type_has_a_sample() -> None:
    assert {m.TYPE for m in SAMPLES} == set(MessageType)


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip_whole(message: Message) -> None:
    reader = MessageReader()
    assert reader.feed(encode(message)) == [message]
    assert reader.buffered_bytes == 0


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip_byte_by_byte(message: Message) -> None:
    data = encode(message)
    reader = MessageReader()
    out: list[Message] = []
    for i in range(len(data)):
        out += reader.feed(data[i : i + 1])
        if i < len(data) - 1:
            assert out == []
    assert out == [message]
    assert reader.buffered_bytes == 0


def test_all_samples_in_random_chunks() -> None:
    stream = b"".join(encode(m) for m in SAMPLES)
    rng = random.Random(20240611)
    for _ in range(200):
        cuts = [rng.randrange(len(stream)) for _ in range(rng.randrange(1, 40))]
        assert feed_chunks(stream, cuts) == SAMPLES


def test_empty_feeds_are_harmless() -> None:
    reader = MessageReader()
    assert reader.feed(b"") == []
    data = encode(SAMPLES[0])
    assert reader.feed(data[:3]) == []
    assert reader.feed(b"") == []
    assert reader.feed(data[3:]) == [SAMPLES[0]]


names = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
u64 = st.integers(0, U64)
small_bytes = st.binary(max_size=128)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Challenge, names, small_bytes),
    st.builds(Hello, names, names, u64, u64, small_bytes, small_bytes),
    st.builds(HelloOk, names, u64, u64, u64, u64, small_bytes),
    st.builds(Reject, names),
    st.builds(Truncate, u64),
    st.builds(Append, u64, u64, st.integers(0, 2**32 - 1), u64, st.binary(max_size=300)),
    st.builds(Ack, u64, u64, u64),
    st.builds(Heartbeat, u64),
    st.builds(Error, names, names),
)


@given(st.lists(messages, min_size=1, max_size=6), st.lists(st.integers(0, 4000), max_size=12))
def test_any_valid_messages_round_trip_in_any_chunks(batch: list[Message], cuts: list[int]) -> None:
    stream = b"".join(encode(m) for m in batch)
    assert feed_chunks(stream, cuts) == batch


# --- limits --------------------------------------------------------------------------------


def test_a_length_over_the_maximum_is_refused_before_the_body_arrives() -> None:
    reader = MessageReader(max_message_bytes=1024)
    with pytest.raises(PeerProtocolError, match="1025 bytes"):
        reader.feed(struct.pack("<II", 1025, 0))
    assert reader.buffered_bytes <= PREFIX_BYTES


def test_a_huge_length_is_refused_from_the_prefix_alone() -> None:
    reader = MessageReader(max_message_bytes=1024)
    assert reader.feed(struct.pack("<I", 2**32 - 1)) == []  # not even a whole prefix yet
    with pytest.raises(PeerProtocolError):
        reader.feed(b"\0\0\0\0" + b"x" * 100)


def test_a_message_of_exactly_the_maximum_is_accepted() -> None:
    message = Append(1, 0, 1, 0, b"x" * 1000)
    size = len(encode(message)) - PREFIX_BYTES
    assert MessageReader(max_message_bytes=size).feed(encode(message)) == [message]
    with pytest.raises(PeerProtocolError):
        MessageReader(max_message_bytes=size - 1).feed(encode(message))


def test_the_buffer_holds_at_most_one_message() -> None:
    message = Append(1, 0, 1, 0, b"x" * 1000)
    data = encode(message)
    reader = MessageReader(max_message_bytes=2048)
    assert reader.feed(data[:-1]) == []
    assert reader.buffered_bytes == len(data) - 1
    assert reader.feed(data[-1:] + data[:10]) == [message]
    assert reader.buffered_bytes == 10


def test_an_empty_message_is_refused() -> None:
    with pytest.raises(PeerProtocolError):
        MessageReader().feed(struct.pack("<II", 0, google_crc32c.value(b"")))


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize("type_byte", [0, 10, 127, 255])
def test_an_unknown_type_is_refused(type_byte: int) -> None:
    with pytest.raises(PeerProtocolError, match="unknown message type"):
        MessageReader().feed(frame(bytes([type_byte]) + b"{}"))


def test_a_crc_mismatch_is_refused() -> None:
    data = bytearray(encode(SAMPLES[1]))
    data[5] ^= 0x10  # in the CRC field itself
    with pytest.raises(PeerProtocolError, match="CRC32C"):
        MessageReader().feed(bytes(data))


def test_an_append_shorter_than_its_header_is_refused() -> None:
    with pytest.raises(PeerProtocolError, match="shorter than its header"):
        MessageReader().feed(frame(bytes([MessageType.APPEND]) + b"\x01" * 27))


GOOD_ACK = {"durable_offset": 3, "last_epoch": 1, "last_epoch_start": 0}
GOOD_CHALLENGE = {"node": "p1", "nonce": NONCE.hex()}


@pytest.mark.parametrize(
    ("message_type", "body"),
    [
        (MessageType.ACK, b"not json"),
        (MessageType.ACK, b""),
        (MessageType.ACK, b"[3, 1]"),
        (MessageType.ACK, b"null"),
        (MessageType.ACK, b"[" * 2000),
        (MessageType.ACK, b'{"durable_offset": 3, "last_epoch": 1'),
        (MessageType.ACK, b'{"durable_offset": 3, "last_epoch": 1} trailing'),
        (MessageType.ACK, b'{"durable_offset": 3, "last_epoch": NaN}'),
        (MessageType.ACK, b'{"durable_offset": "\xff", "last_epoch": 1}'),  # not UTF-8
    ],
)
def test_a_body_that_is_not_a_json_object_is_refused(message_type: int, body: bytes) -> None:
    with pytest.raises(PeerProtocolError):
        MessageReader().feed(frame(bytes([message_type]) + body))


@pytest.mark.parametrize(
    ("message_type", "values"),
    [
        (MessageType.ACK, {"durable_offset": 3}),  # missing
        (MessageType.ACK, {**GOOD_ACK, "extra": 1}),  # extra
        (MessageType.ACK, {"durable": 3, "last_epoch": 1}),  # misnamed
        (MessageType.ACK, {}),
        (MessageType.CHALLENGE, {"node": "p1"}),
        (MessageType.ERROR, {"code": "x", "message": "y", "more": "z"}),
    ],
)
def test_wrong_fields_are_refused(message_type: int, values: dict[str, Any]) -> None:
    with pytest.raises(PeerProtocolError, match="wrong fields"):
        MessageReader().feed(json_frame(message_type, values))


@pytest.mark.parametrize(
    "value",
    [-1, -(2**63), 2**64, 10**30, 1.0, 3.5, True, False, None, "3", [3], {"v": 3}],
    ids=repr,
)
def test_integers_must_be_unsigned_64_bit(value: object) -> None:
    with pytest.raises(PeerProtocolError, match="unsigned integer"):
        MessageReader().feed(json_frame(MessageType.ACK, {**GOOD_ACK, "durable_offset": value}))


def test_the_largest_u64_is_accepted() -> None:
    out = MessageReader().feed(json_frame(MessageType.ACK, {**GOOD_ACK, "durable_offset": U64}))
    assert out == [Ack(U64, 1, 0)]


@pytest.mark.parametrize(
    "value",
    ["zz", "abc", "0g" * 8, "ab" * 129, 1234, None, ["ab"], "\u00e9\u00e9"],
    ids=repr,
)
def test_a_nonce_that_is_not_short_hex_is_refused(value: object) -> None:
    with pytest.raises(PeerProtocolError, match="hex"):
        MessageReader().feed(json_frame(MessageType.CHALLENGE, {**GOOD_CHALLENGE, "nonce": value}))


@pytest.mark.parametrize("value", [3, None, True, ["p1"], {"n": "p1"}, "x" * 4097], ids=repr)
def test_a_string_field_must_be_a_short_string(value: object) -> None:
    with pytest.raises(PeerProtocolError, match="not a string"):
        MessageReader().feed(json_frame(MessageType.CHALLENGE, {**GOOD_CHALLENGE, "node": value}))


def test_a_proof_must_be_hex_too() -> None:
    values = {
        "node": "p1",
        "log_end": 0,
        "last_epoch": 0,
        "last_epoch_start": 0,
        "committed": 0,
        "proof": "no",
    }
    with pytest.raises(PeerProtocolError, match="hex"):
        MessageReader().feed(json_frame(MessageType.HELLO_OK, values))


# --- fuzz ----------------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(data: bytes, cuts: list[int], max_message_bytes: int = 4096) -> list[Message] | None:
    """The messages decoded, or None for ``PeerProtocolError``; anything else propagates."""
    try:
        return feed_chunks(data, cuts, MessageReader(max_message_bytes))
    except PeerProtocolError:
        return None


@FUZZ
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=8))
def test_arbitrary_bytes_give_messages_or_the_typed_error(data: bytes, cuts: list[int]) -> None:
    out = outcome(data, cuts)
    assert out is None or all(isinstance(m, tuple(type(s) for s in SAMPLES)) for m in out)


@FUZZ
@given(st.binary(max_size=400), st.sampled_from([*MessageType, 0, 99]))
def test_any_body_with_a_good_crc_gives_a_message_or_the_typed_error(
    body: bytes, type_byte: int
) -> None:
    # Past the CRC: this reaches the body parsers with arbitrary bytes.
    out = outcome(frame(bytes([type_byte]) + body), [])
    if out is not None:
        assert [m.TYPE for m in out] == [type_byte]


def first_damaged(batch: list[Message], original: bytes, damaged: bytes) -> int:
    """Index of the first message whose bytes the damage touched (``len(batch)``: none)."""
    common = min(len(original), len(damaged))
    at = next((i for i in range(common) if original[i] != damaged[i]), common)
    if at == len(original):
        return len(batch)  # only bytes after the last message changed
    end = 0
    for index, message in enumerate(batch):
        end += len(encode(message))
        if at < end:
            return index
    raise AssertionError("unreachable")


@FUZZ
@given(st.lists(messages, min_size=1, max_size=4), st.data())
def test_mutated_frames_are_refused_or_decode_to_what_was_sent(
    batch: list[Message], data: st.DataObject
) -> None:
    original = b"".join(encode(m) for m in batch)
    stream = bytearray(original)
    mutation = data.draw(st.sampled_from(["flip", "truncate", "length", "splice"]))
    if mutation == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            bit = data.draw(st.integers(0, len(stream) * 8 - 1))
            stream[bit // 8] ^= 1 << (bit % 8)
    elif mutation == "truncate":
        del stream[data.draw(st.integers(0, len(stream) - 1)) :]
    elif mutation == "length":
        starts = [0]
        for m in batch[:-1]:
            starts.append(starts[-1] + len(encode(m)))
        at = data.draw(st.sampled_from(starts))
        (length,) = struct.unpack_from("<I", stream, at)
        new = data.draw(st.integers(0, 2**32 - 1).filter(lambda n: n != length))
        struct.pack_into("<I", stream, at, new)
    else:
        at = data.draw(st.integers(0, len(stream)))
        stream[at:at] = data.draw(st.binary(min_size=1, max_size=20))
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=6))
    out = outcome(bytes(stream), cuts, max_message_bytes=1 << 16)
    if out is not None:
        # Only messages before the damage come out, each exactly as it was sent.
        assert out == batch[: len(out)]
        assert len(out) <= first_damaged(batch, original, bytes(stream))
