"""Frame codec: round trips, compression, typed errors for bad input, and the limit rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from walrep.errors import InvalidEventError, LimitExceededError, MalformedFrameError
from walrep.log.accept import check_batch, check_frames
from walrep.log.frame import (
    FLAG_LZ4,
    HEADER_SIZE,
    Event,
    FrameStatus,
    build_frame,
    decode_payload,
    encode_batch,
    inspect_frame,
    limit_violation,
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


# --- the limit rule: one function for the writer and the reader -----------------------------


@pytest.mark.parametrize(
    ("fields", "reason", "size"),
    [
        ((1, 0, 512, None), None, None),
        ((1, FLAG_LZ4, 516, 512), None, None),  # the lz4 size prefix on top of the batch
        ((0, 0, 10, None), "a batch holds at least one event", None),
        ((1, 0x02, 10, None), "unknown codec flags 0x02", None),
        ((1, 0, 513, None), "stored payload", 513),  # uncompressed: stored = uncompressed
        ((1, FLAG_LZ4, 517, None), "stored payload", 517),
        ((1, FLAG_LZ4, 3, None), "compressed payload shorter than its size prefix", None),
        ((1, FLAG_LZ4, 100, 513), "uncompressed payload", 513),
    ],
)
def test_limit_violation(
    fields: tuple[int, int, int, int | None], reason: str | None, size: int | None
) -> None:
    count, flags, payload_bytes, raw = fields
    violation = limit_violation(count, flags, payload_bytes, 512, raw)
    if reason is None:
        assert violation is None
        return
    assert violation is not None and violation.reason == reason and violation.size == size
    error = violation.error("batch of 1 events")
    assert isinstance(error, LimitExceededError if size is not None else MalformedFrameError)


def test_inspect_and_decode_refuse_an_lz4_size_prefix_over_the_limit() -> None:
    events = [Event("api", {"path": "/orders", "i": i}) for i in range(200)]
    batch = encode_batch(events, **LIMITS)
    assert batch.flags & FLAG_LZ4 and len(batch.payload) < 4096 < batch.uncompressed_bytes
    frame = build_frame(batch, base_offset=0, epoch=1, ingest_time_ms=0)
    status, header = inspect_frame(frame, 0, 4096)
    assert status is FrameStatus.OVER_LIMIT and header is not None  # CRC fine, limit not
    with pytest.raises(MalformedFrameError, match="uncompressed payload"):
        decode_payload(header, frame[HEADER_SIZE:], 4096)
    assert inspect_frame(frame, 0, batch.uncompressed_bytes)[0] is FrameStatus.OK


EVENTS = st.lists(
    st.builds(
        Event,
        st.sampled_from(["a", "web"]),
        st.dictionaries(st.sampled_from("xyz"), st.integers(0, 99) | st.text("ab", max_size=300)),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(
    events=EVENTS,
    written_under=st.integers(200, 5000),
    read_under=st.integers(200, 5000),
    threshold=st.integers(0, 3000),
)
def test_what_the_writer_accepts_is_exactly_what_the_reader_accepts(
    events: list[Event], written_under: int, read_under: int, threshold: int
) -> None:
    """A batch built under some limits is taken by ``check_batch`` (every append) exactly
    when ``inspect_frame``, ``check_frames`` and ``decode_payload`` take its frame."""
    try:
        batch = encode_batch(
            events,
            max_event_bytes=written_under,
            max_batch_bytes=written_under,
            compress_threshold_bytes=threshold,
        )
    except LimitExceededError:
        return
    frame = build_frame(batch, base_offset=7, epoch=1, ingest_time_ms=0)
    try:
        check_batch(batch, read_under)
        accepted = True
    except (LimitExceededError, MalformedFrameError):
        accepted = False
    status, header = inspect_frame(frame, 0, read_under)
    assert (status is FrameStatus.OK) is accepted, status
    try:
        check_frames(frame, first_offset=7, last_epoch=1, max_batch_bytes=read_under)
        assert accepted
    except LimitExceededError:
        assert not accepted
    if accepted:
        assert header is not None
        assert decode_payload(header, frame[HEADER_SIZE:], read_under) == events
