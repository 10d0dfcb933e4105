"""The recovery decision table, row by row, and fuzzing of the frame decoder.

``RECOVERY_TABLE`` maps (last segment?, frame complete?, CRC ok?) to an action. Each
reachable row is produced from constructed bytes through ``observe`` and
``scan_segment``, and end to end through ``Wal.open`` on real files; the two
IMPOSSIBLE rows are shown unreachable (also under Hypothesis). The codec's readers are
fuzzed: on any bytes they return a status or a value, or raise ``MalformedFrameError``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import lz4.block
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.log.helpers import SMALL, batch, copy_log, frame_positions, segment_files
from walrep.errors import CorruptLogError, MalformedFrameError
from walrep.log import Event, Wal
from walrep.log.frame import (
    FLAG_LZ4,
    HEADER_SIZE,
    MAGIC,
    FrameHeader,
    FrameStatus,
    build_frame,
    decode_payload,
    encode_batch,
    inspect_frame,
)
from walrep.log.recovery import RECOVERY_TABLE, Action, Observation, observe, scan_segment

MAX_PAYLOAD = 4096
LIMITS = {"max_event_bytes": 1024, "max_batch_bytes": 4000, "compress_threshold_bytes": 200}
Row = tuple[bool, bool, bool]


def frame(base: int, count: int = 2, epoch: int = 1, pad: int = 0) -> bytes:
    batch_ = encode_batch(
        [Event("s", {"i": base + i, "p": "x" * pad}) for i in range(count)], **LIMITS
    )
    return build_frame(batch_, base_offset=base, epoch=epoch, ingest_time_ms=77)


def flip(data: bytes, byte: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[byte] ^= 1 << bit
    return bytes(out)


A, B, C = frame(10), frame(12, pad=300), frame(14, epoch=2)
assert inspect_frame(B, 0, MAX_PAYLOAD)[1] is not None
assert inspect_frame(B, 0, MAX_PAYLOAD)[1].flags & FLAG_LZ4  # type: ignore[union-attr]

# Segments starting at offset 10 whose frame at byte len(A) is the one under test, each
# with the (complete?, CRC ok?) observation it must give there.
SAMPLES: dict[str, tuple[bytes, tuple[bool, bool]]] = {
    "intact middle frame": (A + B + C, (True, True)),
    "intact last frame": (A + B, (True, True)),
    "payload bit flipped, frame after": (A + flip(B, HEADER_SIZE + 5) + C, (True, False)),
    "payload bit flipped, last frame": (A + flip(B, len(B) - 1), (True, False)),
    "crc field bit flipped": (A + flip(B, 6, 3), (True, False)),
    "magic damaged": (A + flip(B, 1) + C, (True, False)),
    "count zeroed, frame after": (A + B[:17] + b"\0\0\0\0" + B[21:] + C, (True, False)),
    "base offset out of sequence": (A + frame(13), (True, False)),
    "epoch goes back": (frame(10, epoch=3) + frame(12, epoch=2), (True, False)),
    "garbage after last frame": (A + b"garbage, not zeros" * 3, (True, False)),
    "torn in the header": (A + B[:20], (False, False)),
    "torn in the payload": (A + B[:-1], (False, False)),
    "zeros after last frame": (A + b"\0" * 100, (False, False)),
    "last frame ends in zeros": (A + B[:60] + b"\0" * (len(B) - 60), (False, False)),
    "zeros from inside the header": (A + B[:7] + b"\0" * (len(B) - 7), (False, False)),
    "stray magic then zeros": (A + MAGIC + b"\0" * 50, (False, False)),
}
PROBE = len(A)  # "epoch goes back" probes its second frame, which also starts there


def observe_probe(data: bytes) -> Observation:
    first = inspect_frame(data, 0, MAX_PAYLOAD)[1]
    assert first is not None
    return observe(data, PROBE, first.end_offset, first.epoch, MAX_PAYLOAD)


def test_table_is_total_and_impossible_only_where_nothing_was_checked() -> None:
    both = (True, False)
    assert set(RECOVERY_TABLE) == {(a, b, c) for a in both for b in both for c in both}
    impossible = {k for k, v in RECOVERY_TABLE.items() if v is Action.IMPOSSIBLE}
    assert impossible == {(True, False, True), (False, False, True)}
    # Only a torn tail of the last segment is dropped; anything else damaged is refused.
    assert [k for k, v in RECOVERY_TABLE.items() if v is Action.TRUNCATE_TAIL] == [
        (True, False, False)
    ]


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_sample_gives_its_observation(name: str) -> None:
    data, (complete, crc_ok) = SAMPLES[name]
    seen = observe_probe(data)
    assert (seen.complete, seen.crc_ok) == (complete, crc_ok), seen.reason


@pytest.mark.parametrize(("row", "action"), sorted(RECOVERY_TABLE.items()), ids=str)
def test_every_row_of_the_table(row: Row, action: Action) -> None:
    last, complete, crc_ok = row
    samples = [data for data, obs in SAMPLES.values() if obs == (complete, crc_ok)]
    if action is Action.IMPOSSIBLE:
        assert samples == []  # and the property test below looks for one in vain
        return
    assert samples, row
    for data in samples:
        first = inspect_frame(data, 0, MAX_PAYLOAD)[1]
        assert first is not None
        result = scan_segment(data, base_offset=10, last_segment=last, max_batch_bytes=MAX_PAYLOAD)
        assert result.frames[0] == (0, first)
        if action is Action.KEEP:
            assert result.stop is None
            assert result.valid_bytes == len(data)
            assert result.frames[1][0] == PROBE
        else:
            assert result.stop is not None
            assert result.stop.action is action, (row, result.stop)
            assert (result.stop.position, result.stop.offset) == (PROBE, first.end_offset)
            assert result.valid_bytes == PROBE and result.end_offset == first.end_offset


# --- end to end through Wal.open -------------------------------------------------------


@pytest.fixture(scope="module")
def three_segments(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("e2e") / "log"
    with Wal.open(directory, SMALL) as wal:
        n = 0
        while (
            len(wal.segments()) < 3 or len(frame_positions(_last(wal), SMALL.max_batch_bytes)) < 3
        ):
            wal.append_sync(batch(n, 2 + n % 3, pad=40 * (n % 2)), epoch=1, ingest_time_ms=n)
            n = wal.log_end
    return directory


def _last(wal: Wal) -> bytes:
    return wal.segments()[-1][3].read_bytes()


Damage = Callable[[Path], tuple[Path, int, int]]  # -> (segment, frame position, base)


def _frames_of(path: Path) -> list[tuple[int, int, int]]:
    return frame_positions(path.read_bytes(), SMALL.max_batch_bytes)


def keep_last(d: Path) -> tuple[Path, int, int]:
    return segment_files(d)[-1], -1, -1


def keep_sealed(d: Path) -> tuple[Path, int, int]:
    sealed = segment_files(d)[1]
    sealed.with_suffix(".idx").unlink()  # so that open scans it
    return sealed, -1, -1


def crc_bad_last(d: Path) -> tuple[Path, int, int]:
    last = segment_files(d)[-1]
    pos, size, base = _frames_of(last)[1]
    last.write_bytes(flip(last.read_bytes(), pos + size - 2))
    return last, pos, base


def torn_last(d: Path) -> tuple[Path, int, int]:
    last = segment_files(d)[-1]
    pos, size, base = _frames_of(last)[-1]
    os.truncate(last, pos + size // 2)
    return last, pos, base


def crc_bad_sealed(d: Path) -> tuple[Path, int, int]:
    sealed = segment_files(d)[1]
    pos, _, base = _frames_of(sealed)[1]
    sealed.with_suffix(".idx").unlink()
    sealed.write_bytes(flip(sealed.read_bytes(), pos + 20))
    return sealed, pos, base


def torn_sealed(d: Path) -> tuple[Path, int, int]:
    sealed = segment_files(d)[1]
    pos, size, base = _frames_of(sealed)[-1]
    os.truncate(sealed, pos + size - 1)  # its index is stale now: open scans it
    return sealed, pos, base


E2E: list[tuple[Row, Damage]] = [
    ((True, True, True), keep_last),
    ((True, True, False), crc_bad_last),
    ((True, False, False), torn_last),
    ((False, True, True), keep_sealed),
    ((False, True, False), crc_bad_sealed),
    ((False, False, False), torn_sealed),
]


def test_end_to_end_cases_cover_every_reachable_row() -> None:
    reachable = {k for k, v in RECOVERY_TABLE.items() if v is not Action.IMPOSSIBLE}
    assert {row for row, _ in E2E} == reachable


@pytest.mark.parametrize(("row", "damage"), E2E, ids=lambda x: getattr(x, "__name__", str(x)))
def test_row_end_to_end(three_segments: Path, tmp_path: Path, row: Row, damage: Damage) -> None:
    with Wal.open(three_segments, SMALL) as wal:
        original = list(wal.read())
    work = copy_log(three_segments, tmp_path / "log")
    segment, pos, base = damage(work)
    action = RECOVERY_TABLE[row]
    if action is Action.CORRUPT:
        with pytest.raises(CorruptLogError) as info:
            Wal.open(work, SMALL)
        assert (info.value.segment, info.value.position, info.value.offset) == (
            str(segment),
            pos,
            base,
        )
        return
    with Wal.open(work, SMALL) as wal:
        report = wal.recovery
        if action is Action.KEEP:
            assert wal.log_end == len(original)
            assert report.torn_segment is None
            rebuilt = [] if row[0] else [segment.with_suffix(".idx").name]
            assert report.indexes_rebuilt == rebuilt
        else:
            assert (report.torn_segment, report.torn_position) == (str(segment), pos)
            assert wal.log_end == base
        assert list(wal.read()) == original[: wal.log_end]


# --- properties and fuzzing --------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)
EVENTS = st.lists(
    st.builds(
        Event,
        st.text(min_size=1, max_size=6),
        st.dictionaries(st.sampled_from("abc"), st.integers(0, 9) | st.just("zz" * 30)),
    ),
    min_size=1,
    max_size=6,
)
MUTATION = st.tuples(
    st.sampled_from(["flip", "set", "cut", "insert", "delete", "zero-tail"]),
    st.integers(0, 10_000),
    st.integers(0, 255),
)


def mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for kind, where, value in mutations:
        at = where % (len(out) + 1)
        if kind == "flip" and at < len(out):
            out[at] ^= 1 << (value % 8)
        elif kind == "set" and at < len(out):
            out[at] = value
        elif kind == "cut":
            del out[at:]
        elif kind == "insert":
            out[at:at] = bytes([value]) * (1 + value % 5)
        elif kind == "delete":
            del out[at : at + 1 + value % 5]
        elif kind == "zero-tail":
            out[at:] = b"\0" * (len(out) - at + value % 3)
    return bytes(out)


def check_decode(header: FrameHeader, payload: bytes) -> list[Event] | None:
    try:
        events = decode_payload(header, payload, 4000)
    except MalformedFrameError:
        return None
    assert len(events) == header.count
    assert all(isinstance(e, Event) for e in events)
    return events


def segment_of(event_batches: list[list[Event]]) -> tuple[bytes, list[tuple[int, FrameHeader]]]:
    data, frames, offset, epoch = b"", [], 5, 1
    for i, events in enumerate(event_batches):
        epoch += i % 2
        f = build_frame(
            encode_batch(events, **LIMITS), base_offset=offset, epoch=epoch, ingest_time_ms=i
        )
        header = inspect_frame(f, 0, MAX_PAYLOAD)[1]
        assert header is not None
        frames.append((len(data), header))
        data += f
        offset += len(events)
    return data, frames


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(
    buf=st.binary(max_size=200) | st.binary(max_size=200).map(lambda b: MAGIC + b"\x01" + b),
    data=st.data(),
)
def test_inspect_frame_is_total_on_arbitrary_bytes(buf: bytes, data: st.DataObject) -> None:
    pos = data.draw(st.integers(0, len(buf)))
    status, header = inspect_frame(buf, pos, MAX_PAYLOAD)
    assert isinstance(status, FrameStatus)
    if status in (FrameStatus.SHORT_HEADER, FrameStatus.BAD_MAGIC):
        assert header is None
    else:
        assert header is not None
        payload = buf[pos + HEADER_SIZE : pos + header.frame_bytes]
        if status is FrameStatus.OK:
            assert pos + header.frame_bytes <= len(buf)
        check_decode(header, payload)
    seen = observe(buf, pos, 0, 0, MAX_PAYLOAD)
    assert (seen.complete, seen.crc_ok) != (False, True)
    for last in (True, False):
        scan_segment(buf, base_offset=0, last_segment=last, max_batch_bytes=MAX_PAYLOAD)


def _payloads() -> st.SearchStrategy[bytes]:
    json_rows = st.lists(
        st.tuples(st.text(max_size=4), JSON) | JSON.map(lambda j: (j,)), max_size=5
    ).map(lambda rows: orjson.dumps([list(r) for r in rows]))
    plain = st.binary(max_size=120) | json_rows
    return (
        plain
        | plain.map(
            lambda raw: len(raw).to_bytes(4, "little") + lz4.block.compress(raw, store_size=False)
        )
        | st.binary(max_size=4).map(lambda b: b"\xff\xff\x00\x00" + b)
    )


@FUZZ
@given(payload=_payloads(), count=st.integers(0, 6), flags=st.integers(0, 255))
def test_decode_payload_returns_events_or_raises_malformed(
    payload: bytes, count: int, flags: int
) -> None:
    header = FrameHeader(0, count, 1, 0, flags, len(payload), 0)
    check_decode(header, payload)


@FUZZ
@given(batches=st.lists(EVENTS, min_size=1, max_size=4), mutations=st.lists(MUTATION, max_size=4))
def test_mutated_frames_are_never_taken_for_data(
    batches: list[list[Event]], mutations: list[tuple[str, int, int]]
) -> None:
    """Whatever the damage, a scan keeps only byte-exact original frames, in order."""
    original, frames = segment_of(batches)
    damaged = mutate(original, mutations)
    by_base = {
        h.base_offset: (original[p : p + h.frame_bytes], i) for i, (p, h) in enumerate(frames)
    }
    for pos in range(len(damaged)):
        status, header = inspect_frame(damaged, pos, MAX_PAYLOAD)
        if header is None:
            continue
        events = check_decode(header, damaged[pos + HEADER_SIZE : pos + header.frame_bytes])
        if status is FrameStatus.OK:  # passes its CRC: it is an original frame, byte for byte
            data, i = by_base[header.base_offset]
            assert damaged[pos : pos + header.frame_bytes] == data
            assert events == batches[i]
    for last in (True, False):
        result = scan_segment(
            damaged, base_offset=5, last_segment=last, max_batch_bytes=MAX_PAYLOAD
        )
        assert result.frames == frames[: len(result.frames)]
        assert damaged[: result.valid_bytes] == original[: result.valid_bytes]
        if result.stop is None:
            assert damaged == original[: len(damaged)] and result.valid_bytes == len(damaged)
        else:
            assert result.stop.action in (Action.CORRUPT, Action.TRUNCATE_TAIL)
            assert result.stop.action is Action.CORRUPT or last
        for p in range(0, len(damaged) + 1, 7):
            seen = observe(damaged, p, 5, 0, MAX_PAYLOAD)
            assert (seen.complete, seen.crc_ok) != (False, True)
