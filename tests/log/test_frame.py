"""Frame codec: round trips, compression, and typed errors for bad input."""

from __future__ import annotations

import pytest

from walrep.errors import InvalidEventError, LimitExceededError
from walrep.log.frame import (
    FLAG_LZ4,
    HEADER_SIZE,
    Event,
    FrameStatus,
    build_frame,
    decode_payload,
    encode_batch,
    inspect_frame,
)

LIMITS = {"max_event_bytes": 1024, "max_batch_bytes": 64 * 1024, "compress_threshold_bytes": 512}


def test_round_trip_with_and_without_producer_identity() -> None:
    events = [Event("api", {"status": 200, "ms": 1.5}), Event("api", {"x": None}, "p-1", 7)]
    batch = encode_batch(events, **LIMITS)
    frame = build_frame(batch, base_offset=10, epoch=3, ingest_time_ms=1234)
    status, header = inspect_frame(frame, 0, 2**20)
    assert status is FrameStatus.OK and header is not None
    assert (header.base_offset, header.count, header.epoch, header.ingest_time_ms) == (
        10,
        2,
        3,
        1234,
    )
    assert header.frame_bytes == len(frame)
    assert decode_payload(header, frame[HEADER_SIZE:], 2**20) == events


def test_large_batches_are_compressed_and_still_decode() -> None:
    events = [Event("api", {"path": "/orders", "i": i}) for i in range(200)]
    batch = encode_batch(events, **LIMITS)
    assert batch.flags & FLAG_LZ4 and len(batch.payload) < batch.uncompressed_bytes
    frame = build_frame(batch, base_offset=0, epoch=1, ingest_time_ms=0)
    _, header = inspect_frame(frame, 0, 2**20)
    assert header is not None
    assert decode_payload(header, frame[HEADER_SIZE:], 2**20) == events


@pytest.mark.parametrize(
    "args",
    [
        ("", {}),
        (7, {}),
        ("s", [("k", 1)]),
        ("s", {}, "p", None),
        ("s", {}, None, 3),
        ("s", {}, "p", -1),
        ("s", {}, "p", True),
        ("s", {}, "", 1),
    ],
)
def test_bad_events_are_refused_when_made(args: tuple[object, ...]) -> None:
    with pytest.raises(InvalidEventError):
        Event(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize("attributes", [{1: "non-str key"}, {"v": object()}, {"v": {2: 3}}])
def test_attributes_that_are_not_json_are_named_at_encoding(
    attributes: dict[object, object],
) -> None:
    good = Event("s", {"ok": 1})
    with pytest.raises(InvalidEventError) as info:
        encode_batch([good, Event("bad", attributes)], **LIMITS)  # type: ignore[arg-type]
    assert "'bad'" in str(info.value)


def test_events_are_read_only_rows() -> None:
    event = Event("s", {"a": 1}, "p", 2)
    assert (event.stream, event.attributes, event.producer_id, event.seq) == ("s", {"a": 1}, "p", 2)
    assert Event("s", {}).producer_id is None and repr(Event("s", {})) == "Event('s', {})"
    for mutate in (
        lambda: event.append(1),
        lambda: event.__setitem__(0, "x"),
        lambda: event.clear(),
    ):
        with pytest.raises(TypeError):
            mutate()
    with pytest.raises(InvalidEventError):
        encode_batch([["s", {}]], **LIMITS)  # type: ignore[list-item]


def test_oversized_event_and_batch_are_refused() -> None:
    with pytest.raises(LimitExceededError) as info:
        encode_batch([Event("s", {"v": "x" * 2000})], **LIMITS)
    assert info.value.limit == 1024
    with pytest.raises(LimitExceededError):
        encode_batch([Event("s", {"v": "x" * 900})] * 100, **LIMITS)
