"""The snapshot codec: round trips, every named failure, and a decoder fuzz.

The fuzz's only allowed outcomes are "the value" or ``SnapshotCorruptError``.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import struct

import google_crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from walrep.engine.snapshots import format as fmt
from walrep.engine.types import SnapshotMeta
from walrep.errors import SnapshotCorruptError, SnapshotTooLargeError

SMALL_CHUNK = fmt.CHUNK_BYTES_MIN


def meta_for(state: bytes, *, offset: int = 100, epoch: int = 3) -> SnapshotMeta:
    return SnapshotMeta(
        offset=offset,
        epoch=epoch,
        digest=fmt.state_digest(state),
        app_versions=(("apim-analytics", "4.2.0"), ("other", "1")),
        format_version=1,
        created_ms=1_700_000_000_000,
    )


def incompressible(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def resealed(blob: bytes) -> bytes:
    """``blob`` with its CRC recomputed: damage the CRC cannot see, for deeper checks."""
    crc = google_crc32c.value(blob[fmt.CRC_START :])
    return blob[:6] + struct.pack(">I", crc) + blob[fmt.CRC_START :]


STATE = b"".join(b"key-%d=value-%d;" % (i, i * i) for i in range(3000))
META = meta_for(STATE)
CHUNKS = fmt.encode(META, STATE, chunk_bytes=SMALL_CHUNK)
BLOB = b"".join(CHUNKS)


# --- round trips ---------------------------------------------------------------------


def test_a_multi_chunk_incompressible_state_round_trips() -> None:
    state = incompressible(2 * 1024 * 1024 + 12_345)
    meta = meta_for(state)
    chunks = fmt.encode(meta, state)
    assert len(chunks) == 5
    assert all(len(c) == fmt.CHUNK_BYTES_DEFAULT for c in chunks[:-1])
    assert 0 < len(chunks[-1]) <= fmt.CHUNK_BYTES_DEFAULT
    assert fmt.decode(chunks) == (meta, state)
    assert fmt.decode_blob(b"".join(chunks)) == (meta, state)


@pytest.mark.parametrize("size", [0, 1, SMALL_CHUNK - fmt.HEADER_SIZE, 3 * SMALL_CHUNK])
def test_edge_sizes_round_trip(size: int) -> None:
    state = incompressible(size, seed=size)
    meta = meta_for(state)
    assert fmt.decode(fmt.encode(meta, state, chunk_bytes=SMALL_CHUNK)) == (meta, state)


def test_compressible_state_is_compressed() -> None:
    assert len(BLOB) < len(STATE) // 2
    assert fmt.decode(CHUNKS) == (META, STATE)


def test_meta_json_is_canonical_and_read_from_the_head() -> None:
    text = fmt.meta_to_json(META)
    assert text.startswith(b'{"app_versions":[["apim-analytics","4.2.0"],["other","1"]]')
    assert b" " not in text
    assert fmt.meta_from_json(text) == META
    head = BLOB[: fmt.meta_prefix_bytes(BLOB[: fmt.HEADER_SIZE])]
    assert fmt.read_meta(head) == META


def test_the_constants_keep_chunks_inside_mysqls_default_packet() -> None:
    assert 2 * fmt.CHUNK_BYTES_MAX + fmt.STATEMENT_OVERHEAD_BYTES <= 16 * 1024 * 1024
    assert fmt.blob_bytes_max(1000) >= len(fmt.encode(meta_for(b"x" * 1000), b"x" * 1000)[0])
    worst = incompressible(100_000)
    assert len(b"".join(fmt.encode(meta_for(worst), worst))) <= fmt.blob_bytes_max(len(worst))


# --- what encode refuses -------------------------------------------------------------


def test_encode_refuses_a_digest_that_is_not_the_states() -> None:
    wrong = SnapshotMeta(**{**META.__dict__, "digest": fmt.state_digest(b"other")})
    with pytest.raises(SnapshotCorruptError, match="digest"):
        fmt.encode(wrong, STATE)


def test_encode_refuses_a_state_over_the_limit() -> None:
    with pytest.raises(SnapshotTooLargeError) as info:
        fmt.encode(META, STATE, max_state_bytes=len(STATE) - 1)
    assert (info.value.size, info.value.limit) == (len(STATE), len(STATE) - 1)
    assert info.value.retriable is False


@pytest.mark.parametrize(
    ("field", "value"),
    [("offset", -1), ("epoch", True), ("digest", "ABC"), ("created_ms", 2**63)],
)
def test_encode_refuses_a_meta_out_of_range(field: str, value: object) -> None:
    bad = SnapshotMeta(**{**META.__dict__, field: value})
    with pytest.raises(SnapshotCorruptError, match=field):
        fmt.encode(bad, STATE)


# --- what decode names ---------------------------------------------------------------


def test_decode_names_a_wrong_magic() -> None:
    with pytest.raises(SnapshotCorruptError, match="magic"):
        fmt.decode([b"XSNP" + CHUNKS[0][4:], *CHUNKS[1:]])


def test_decode_names_a_wrong_version() -> None:
    with pytest.raises(SnapshotCorruptError, match="format version is 2"):
        fmt.decode([CHUNKS[0][:4] + b"\x00\x02" + CHUNKS[0][6:], *CHUNKS[1:]])


def test_decode_names_a_crc_mismatch() -> None:
    damaged = bytearray(BLOB)
    damaged[len(damaged) // 2] ^= 0x40
    with pytest.raises(SnapshotCorruptError, match="CRC32C mismatch"):
        fmt.decode_blob(bytes(damaged))


def test_decode_names_a_missing_or_extra_chunk() -> None:
    n = len(CHUNKS)
    assert n >= 3
    with pytest.raises(SnapshotCorruptError, match=f"has {n - 1} chunks, its header says {n}"):
        fmt.decode(CHUNKS[:1] + CHUNKS[2:])
    with pytest.raises(SnapshotCorruptError, match="chunks, its header says"):
        fmt.decode([*CHUNKS, b"x"])
    with pytest.raises(SnapshotCorruptError, match="no chunks"):
        fmt.decode([])


def test_decode_names_a_chunk_of_the_wrong_size() -> None:
    with pytest.raises(SnapshotCorruptError, match=f"chunk 0 of {len(CHUNKS)} is"):
        fmt.decode([CHUNKS[0][:-1], CHUNKS[0][-1:] + CHUNKS[1], *CHUNKS[2:]])


def test_decode_names_a_truncated_blob() -> None:
    with pytest.raises(SnapshotCorruptError, match="its header says"):
        fmt.decode_blob(BLOB[:-1])
    with pytest.raises(SnapshotCorruptError, match="header"):
        fmt.decode_blob(BLOB[:10])


def test_decode_names_a_digest_mismatch_behind_a_valid_crc() -> None:
    other = fmt.state_digest(b"something else").encode()
    forged = resealed(BLOB.replace(META.digest.encode(), other))
    with pytest.raises(SnapshotCorruptError, match="digest mismatch"):
        fmt.decode_blob(forged)


def test_decode_names_a_payload_longer_than_its_header_says() -> None:
    fields = bytearray(BLOB)
    state_len_at = fmt.CRC_START + 1 + 4 + 4 + 4
    struct.pack_into(">Q", fields, state_len_at, len(STATE) - 1)
    with pytest.raises(SnapshotCorruptError, match="decompresses to"):
        fmt.decode_blob(resealed(bytes(fields)))


def test_decode_names_broken_meta_json_behind_a_valid_crc() -> None:
    as_float = resealed(BLOB.replace(b'"offset":100', b'"offset":1e2'))
    with pytest.raises(SnapshotCorruptError, match=r"offset 100\.0 is not an int"):
        fmt.decode_blob(as_float)
    not_json = resealed(BLOB.replace(b'"epoch":3', b'"epoch":-'))
    with pytest.raises(SnapshotCorruptError, match="not JSON"):
        fmt.decode_blob(not_json)


def test_decode_refuses_a_state_over_the_callers_limit() -> None:
    with pytest.raises(SnapshotTooLargeError):
        fmt.decode(CHUNKS, max_state_bytes=len(STATE) - 1)


# --- fuzz ----------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decodes_or_is_corrupt(chunks: list[bytes]) -> None:
    try:
        meta, state = fmt.decode(chunks)
    except SnapshotCorruptError:
        return
    assert fmt.state_digest(state) == meta.digest  # a value is only ever a verified one


@FUZZ
@given(st.lists(st.binary(max_size=2 * SMALL_CHUNK), max_size=4))
def test_fuzz_random_chunks(chunks: list[bytes]) -> None:
    decodes_or_is_corrupt(chunks)


@FUZZ
@given(st.binary(max_size=512), st.integers(0, 2**32 - 1))
def test_fuzz_random_bytes_behind_a_valid_magic_and_version(tail: bytes, crc: int) -> None:
    decodes_or_is_corrupt([fmt.MAGIC + b"\x00\x01" + struct.pack(">I", crc) + tail])


@FUZZ
@given(st.integers(0, len(BLOB) - 1), st.integers(1, 255))
def test_fuzz_any_single_byte_flip_is_detected(position: int, mask: int) -> None:
    damaged = bytearray(BLOB)
    damaged[position] ^= mask
    blob = bytes(damaged)
    with pytest.raises(SnapshotCorruptError):
        fmt.decode([blob[i : i + SMALL_CHUNK] for i in range(0, len(blob), SMALL_CHUNK)])
    with pytest.raises(SnapshotCorruptError):
        fmt.decode_blob(blob)


@FUZZ
@given(st.integers(0, len(BLOB) - 1), st.binary(min_size=1, max_size=64))
def test_fuzz_a_spliced_blob_is_detected_or_equal(position: int, insert: bytes) -> None:
    blob = BLOB[:position] + insert + BLOB[position + len(insert) :]
    chunks = [blob[i : i + SMALL_CHUNK] for i in range(0, len(blob), SMALL_CHUNK)]
    with contextlib.suppress(SnapshotCorruptError):
        assert fmt.decode(chunks) == (META, STATE)


@FUZZ
@given(st.binary(min_size=0, max_size=600))
def test_fuzz_meta_json(data: bytes) -> None:
    with contextlib.suppress(SnapshotCorruptError):
        fmt.meta_from_json(data)


@FUZZ
@given(st.lists(st.integers(1, len(BLOB) - 1), max_size=6))
def test_a_blob_decodes_from_pieces_of_any_size(cuts: list[int]) -> None:
    points = [0, *sorted(set(cuts)), len(BLOB)]
    pieces = [BLOB[a:b] for a, b in itertools.pairwise(points)]
    assert fmt.decode_blob(pieces) == (META, STATE)
