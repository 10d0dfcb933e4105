"""``verify_log``: the report behind ``walrep log verify``, on damaged and odd directories."""

from __future__ import annotations

import os
from pathlib import Path

import google_crc32c
import pytest

from tests.cli.logs import (
    BATCHES,
    PER_BATCH,
    SMALL,
    event,
    frame_positions,
    segment_paths,
    snapshot,
    write_log,
)
from walrep.log import LogConfig, Wal
from walrep.log.frame import HEADER_SIZE, EncodedBatch, build_frame, encode_batch
from walrep.log.index import SparseIndex
from walrep.log.segment import segment_name
from walrep.log.truncate import _HEAD, _MAGIC, MARKER
from walrep.log.verify import VerifyStatus, verify_log
from walrep.log.walk import Finding, FindingKind, NotALogError

TOTAL_EVENTS = BATCHES * PER_BATCH


def damage(findings: tuple[Finding, ...]) -> list[Finding]:
    return [f for f in findings if f.kind is not FindingKind.INFO]


def test_clean_log_report_and_per_segment_stats(log_dir: Path) -> None:
    report = verify_log(log_dir)
    assert report.ok and report.status is VerifyStatus.CLEAN and report.findings == ()
    assert [s.path for s in report.segments] == segment_paths(log_dir)
    assert sum(s.counts.events for s in report.segments) == TOTAL_EVENTS
    first, second = report.segments[0], report.segments[1]
    assert first.counts.first_offset == 0
    assert second.counts.first_offset == first.counts.last_offset + 1  # type: ignore[operator]
    assert report.total.epochs == ((1, 0), (2, 18))
    assert report.total.frames == BATCHES and report.total.compression_ratio == 1.0
    assert report.file_bytes == sum(p.stat().st_size for p in segment_paths(log_dir))
    assert [(e.epoch, e.start_offset) for e in report.epoch_history] == [(1, 0), (2, 18)]


def test_scanning_resumes_after_damage(log_dir: Path) -> None:
    segment = segment_paths(log_dir)[0]
    position, offset = frame_positions(segment)[1]
    data = bytearray(segment.read_bytes())
    data[position + HEADER_SIZE + 7] ^= 1
    segment.write_bytes(bytes(data))
    report = verify_log(log_dir)
    assert report.status is VerifyStatus.CORRUPT and not report.ok
    [finding] = damage(report.findings)
    assert (finding.path, finding.position, finding.offset) == (segment, position, offset)
    # Only the damaged frame is missing from the counts: every later one was checked.
    assert report.total.events == TOTAL_EVENTS - PER_BATCH


def test_payload_that_passes_the_crc_but_does_not_decode(log_dir: Path) -> None:
    last = segment_paths(log_dir)[-1]
    bogus = EncodedBatch(b'[["api",{}]]', count=2, flags=0, uncompressed_bytes=12)
    with last.open("ab") as f:
        f.write(build_frame(bogus, base_offset=TOTAL_EVENTS, epoch=2, ingest_time_ms=0))
    report = verify_log(log_dir)
    [finding] = damage(report.findings)
    assert finding.kind is FindingKind.CORRUPT
    assert finding.offset == TOTAL_EVENTS and "does not decode" in finding.reason


def test_compressed_frames_are_counted_with_their_ratio(tmp_path: Path) -> None:
    config = LogConfig(
        segment_bytes_max=4096,
        max_batch_bytes=2048,
        max_event_bytes=512,
        compress_threshold_bytes=64,
    )
    report = verify_log(write_log(tmp_path / "log", config))
    assert report.ok
    assert report.total.compression_ratio is not None and report.total.compression_ratio > 2


def test_pending_truncation_is_information_and_excuses_what_it_cuts(log_dir: Path) -> None:
    first = segment_paths(log_dir)[0]
    position, target = frame_positions(first)[2]
    body = _HEAD.pack(_MAGIC, 1, 0, target, 0, position, 0)[9:]
    intent = _MAGIC + b"\x01" + google_crc32c.value(body).to_bytes(4, "little") + body
    (log_dir / MARKER).write_bytes(intent)
    later = segment_paths(log_dir)[1]  # damage in a segment the truncation deletes
    os.truncate(later, later.stat().st_size - 5)
    report = verify_log(log_dir)
    assert report.ok, report.findings
    reasons = [f.reason for f in report.findings]
    assert any(f"truncation to offset {target} is pending" in r for r in reasons)
    assert any(r.startswith("cut off by the pending truncation") for r in reasons)


def test_damaged_truncation_intent_is_corrupt(log_dir: Path) -> None:
    (log_dir / MARKER).write_bytes(b"WALT\x01garbage")
    report = verify_log(log_dir)
    assert report.status is VerifyStatus.CORRUPT


def write_history(directory: Path, lines: bytes) -> None:
    body = b"walrep-epochs 1\n" + lines
    (directory / "epochs").write_bytes(body + b"crc32c %08x\n" % google_crc32c.value(body))


def test_epoch_missing_from_history_in_a_sealed_segment_is_corrupt(log_dir: Path) -> None:
    write_history(log_dir, b"1 0\n")
    report = verify_log(log_dir)
    # Epoch 2 starts at offset 18, in the second of three segments: open only adds epochs
    # it finds in the newest one, so the history stays wrong.
    [finding] = damage(report.findings)
    assert finding.offset == 18 and "the history says epoch 1" in finding.reason


def test_epoch_missing_from_history_in_the_newest_segment_is_information(log_dir: Path) -> None:
    with Wal.open(log_dir, SMALL) as wal:
        wal.append_sync([event(TOTAL_EVENTS)], epoch=3, ingest_time_ms=0)
    write_history(log_dir, b"1 0\n2 18\n")
    report = verify_log(log_dir)
    assert report.ok
    [finding] = report.findings
    assert finding.offset == TOTAL_EVENTS and "open will add it" in finding.reason
    with Wal.open(log_dir, SMALL) as wal:  # as it says
        assert wal.epochs.epoch_at(TOTAL_EVENTS) == 3


def test_history_entries_past_the_log_end_are_information(log_dir: Path) -> None:
    write_history(log_dir, b"1 0\n2 18\n3 40\n")
    report = verify_log(log_dir)
    assert report.ok
    [finding] = report.findings
    assert finding.offset == 40 and "open will drop it" in finding.reason


def test_stale_files_are_information(log_dir: Path) -> None:
    (log_dir / "epochs.tmp").write_bytes(b"half")
    index = segment_paths(log_dir)[1].with_suffix(".idx")
    index.write_bytes(index.read_bytes()[:-1])
    (log_dir / "00000000000000009999.idx").write_bytes(b"orphan")
    report = verify_log(log_dir)
    assert report.ok
    reasons = sorted(f.reason for f in report.findings)
    assert reasons == [
        "index stale or damaged: open will rebuild it by scanning",
        "index without a segment (ignored)",
        "stale temp file: open will remove it",
    ]


def test_fresh_index_that_disagrees_with_the_frames_is_corrupt(log_dir: Path) -> None:
    segment = segment_paths(log_dir)[0]
    size = segment.stat().st_size
    idx = segment.with_suffix(".idx")
    loaded = SparseIndex.load(idx, SMALL.index_interval_bytes, base_offset=0, segment_bytes=size)
    assert loaded is not None
    index, end_offset, last_epoch = loaded
    # Fresh (right base and size), so open would trust it: verify must catch the lie.
    index.save(
        idx, base_offset=0, segment_bytes=size, end_offset=end_offset + 1, last_epoch=last_epoch
    )
    report = verify_log(log_dir)
    [finding] = damage(report.findings)
    assert finding.path == segment.with_suffix(".idx") and "open trusts the index" in finding.reason


def test_verify_never_writes(log_dir: Path) -> None:
    last = segment_paths(log_dir)[-1]
    os.truncate(last, last.stat().st_size - 3)
    before = snapshot(log_dir)
    assert verify_log(log_dir).status is VerifyStatus.TORN_TAIL
    assert snapshot(log_dir) == before
    assert not (log_dir / "LOCK").exists() or "LOCK" in before


def test_not_a_log_directory(tmp_path: Path) -> None:
    with pytest.raises(NotALogError):
        verify_log(tmp_path)
    with pytest.raises(NotALogError):
        verify_log(tmp_path / "missing")


def write_segment(directory: Path, base: int, frames: list[tuple[int, int, int]]) -> Path:
    """A hand-made segment of frames ``(base offset, count, epoch)``."""
    data = b""
    for offset, count, epoch in frames:
        events = [event(offset + i) for i in range(count)]
        batch = encode_batch(
            events, max_event_bytes=512, max_batch_bytes=4096, compress_threshold_bytes=4096
        )
        data += build_frame(batch, base_offset=offset, epoch=epoch, ingest_time_ms=0)
    path = directory / segment_name(base)
    path.write_bytes(data)
    return path


def test_epoch_going_down_across_segments_is_corrupt(tmp_path: Path) -> None:
    write_segment(tmp_path, 0, [(0, 2, 1), (2, 1, 3)])
    second = write_segment(tmp_path, 3, [(3, 2, 2)])
    [finding] = damage(verify_log(tmp_path).findings)
    assert (finding.path, finding.position, finding.offset) == (second, 0, 3)
    assert finding.reason.startswith("epoch 2 after epoch 3")


def test_overlapping_segments_are_corrupt(tmp_path: Path) -> None:
    write_segment(tmp_path, 0, [(0, 3, 1)])
    second = write_segment(tmp_path, 2, [(2, 2, 1)])
    report = verify_log(tmp_path)
    [finding] = damage(report.findings)
    assert (finding.path, finding.position, finding.offset) == (second, 0, 3)
    assert "previous one ends at 3 (overlap)" in finding.reason
