"""``walrep log dump`` and ``walrep log verify`` on real log directories."""

from __future__ import annotations

import json
import os
from pathlib import Path

import google_crc32c
from click.testing import CliRunner, Result

from tests.cli.logs import (
    BATCHES,
    BIG_EVENT_BYTES,
    PER_BATCH,
    frame_positions,
    segment_paths,
    snapshot,
    write_large_log,
)
from walrep.cli.main import cli
from walrep.log import ReplicaState, Wal
from walrep.log.frame import HEADER_SIZE

TOTAL_EVENTS = BATCHES * PER_BATCH


def run(*args: str | Path | int) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def event_offsets(output: str) -> list[int]:
    return [
        int(line.split()[0].removeprefix("offset="))
        for line in output.splitlines()
        if line.startswith("    offset=")
    ]


def flip_bit(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x10
    path.write_bytes(bytes(data))


def flip_in_sealed_segment(log_dir: Path) -> tuple[Path, int, int]:
    """Flip a payload bit of the second frame of the second segment: (segment, pos, offset)."""
    segment = segment_paths(log_dir)[1]
    position, offset = frame_positions(segment)[1]
    flip_bit(segment, position + HEADER_SIZE + 5)
    return segment, position, offset


# --- dump --------------------------------------------------------------------------------


def test_dump_prints_every_frame_and_event_with_epochs(log_dir: Path) -> None:
    result = run("log", "dump", log_dir)
    assert result.exit_code == 0, result.output
    assert event_offsets(result.output) == list(range(TOTAL_EVENTS))
    frames = [line for line in result.output.splitlines() if line.startswith("frame ")]
    assert len(frames) == BATCHES
    assert frames[0].startswith("frame offsets=[0,3) count=3 epoch=1 ")
    assert "frame offsets=[18,21) count=3 epoch=2 " in result.output
    assert "ingest_ms=1700000000000 ingest=2023-11-14T22:13:20.000Z" in frames[0]
    assert "codec=none" in frames[0] and "crc_ok=true" in frames[0]
    assert '    offset=4 stream=api producer=p1 seq=4 attributes={"i":4,' in result.output
    assert result.output.count("segment ") == len(segment_paths(log_dir))


def test_dump_from_to_is_half_open_and_cuts_batches(log_dir: Path) -> None:
    result = run("log", "dump", log_dir, "--from", 5, "--to", 8)
    assert result.exit_code == 0, result.output
    assert event_offsets(result.output) == [5, 6, 7]
    assert "frame offsets=[3,6)" in result.output and "frame offsets=[6,9)" in result.output
    assert "frame offsets=[0,3)" not in result.output


def test_dump_limit_caps_events(log_dir: Path) -> None:
    result = run("log", "dump", log_dir, "--from", 10, "--limit", 4)
    assert result.exit_code == 0, result.output
    assert event_offsets(result.output) == [10, 11, 12, 13]
    assert "limit reached" in result.output


def test_dump_json_lines(log_dir: Path) -> None:
    result = run("log", "dump", log_dir, "--json", "--from", 17, "--to", 19)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["base_offset"], r["end_offset"], r["epoch"]) for r in records] == [
        (15, 18, 1),
        (18, 21, 2),
    ]
    assert all(r["type"] == "frame" and r["crc_ok"] and r["codec"] == "none" for r in records)
    events = [e for r in records for e in r["events"]]
    assert [(e["offset"], e["seq"], e["producer_id"], e["stream"]) for e in events] == [
        (17, 17, "p1", "api"),
        (18, 18, "p1", "api"),
    ]
    assert events[0]["attributes"]["i"] == 17
    assert records[0]["ingest_time"] == "2023-11-14T22:13:20.005Z"


def test_dump_stats_per_segment_and_total(log_dir: Path) -> None:
    result = run("log", "dump", log_dir, "--stats")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert sum(line.startswith("segment ") for line in lines) == len(segment_paths(log_dir))
    total = lines[-1]
    assert total.startswith(f"total: segments={len(segment_paths(log_dir))} ")
    assert f"frames={BATCHES} events={TOTAL_EVENTS} " in total
    assert f"offsets=[0,{TOTAL_EVENTS})" in total and "epochs=1@0,2@18" in total
    assert event_offsets(result.output) == []  # summaries instead of events

    as_json = run("log", "dump", log_dir, "--stats", "--json")
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert records[-1]["type"] == "total" and records[-1]["events"] == TOTAL_EVENTS
    assert records[-1]["epochs"] == [
        {"epoch": 1, "first_offset": 0},
        {"epoch": 2, "first_offset": 18},
    ]
    assert sum(r["events"] for r in records[:-1]) == TOTAL_EVENTS


def test_dump_stops_at_damage_and_names_the_place(log_dir: Path) -> None:
    segment, position, offset = flip_in_sealed_segment(log_dir)
    result = run("log", "dump", log_dir)
    assert result.exit_code == 1
    assert event_offsets(result.output) == list(range(offset))
    assert f"damage: corrupt: {segment} at byte {position} (offset {offset}):" in result.output
    assert "CRC32C mismatch" in result.output
    assert "Traceback" not in result.output


def test_dump_json_reports_damage_as_a_record(log_dir: Path) -> None:
    segment, position, offset = flip_in_sealed_segment(log_dir)
    result = run("log", "dump", log_dir, "--json")
    assert result.exit_code == 1
    last = json.loads(result.stdout.splitlines()[-1])
    assert last["type"] == "damage" and last["kind"] == "corrupt"
    assert (last["path"], last["position"], last["offset"]) == (str(segment), position, offset)


def test_dump_of_torn_tail_prints_what_is_whole(log_dir: Path) -> None:
    last = segment_paths(log_dir)[-1]
    os.truncate(last, last.stat().st_size - 10)
    before = snapshot(log_dir)
    result = run("log", "dump", log_dir)
    assert result.exit_code == 3
    assert event_offsets(result.output) == list(range(TOTAL_EVENTS - PER_BATCH))
    assert f"damage: torn_tail: {last} at byte " in result.output
    assert snapshot(log_dir) == before


def test_dump_range_before_the_damage_is_clean(log_dir: Path) -> None:
    _, _, offset = flip_in_sealed_segment(log_dir)
    result = run("log", "dump", log_dir, "--to", offset)
    assert result.exit_code == 0, result.output
    assert event_offsets(result.output) == list(range(offset))


def test_dump_range_after_the_damage_is_readable(log_dir: Path) -> None:
    segment, position, offset = flip_in_sealed_segment(log_dir)
    resumed = offset + PER_BATCH  # only the damaged frame's events are lost
    result = run("log", "dump", log_dir, "--from", resumed)
    assert result.exit_code == 0, result.output
    assert event_offsets(result.stdout) == list(range(resumed, TOTAL_EVENTS))
    assert f"note: damage before --from {resumed}: corrupt: {segment} at byte {position}" in (
        result.stderr
    )
    inside = run("log", "dump", log_dir, "--from", resumed - 1)  # wants a lost offset
    assert inside.exit_code == 1
    assert event_offsets(inside.stdout) == []
    assert f"damage: corrupt: {segment} at byte {position} (offset {offset})" in inside.stdout


def test_dump_rejects_an_inverted_range(log_dir: Path) -> None:
    result = run("log", "dump", log_dir, "--from", 9, "--to", 3)
    assert result.exit_code == 2 and "--to 3 is below --from 9" in result.output


# --- verify ------------------------------------------------------------------------------


def test_verify_clean_log(log_dir: Path) -> None:
    result = run("log", "verify", log_dir)
    assert result.exit_code == 0, result.output
    assert "result: clean" in result.output
    assert f"events={TOTAL_EVENTS}" in result.output


def test_verify_bit_flip_in_sealed_segment(log_dir: Path) -> None:
    segment, position, offset = flip_in_sealed_segment(log_dir)
    before = snapshot(log_dir)
    result = run("log", "verify", log_dir)
    assert result.exit_code == 1, result.output
    assert f"corrupt: {segment} at byte {position} (offset {offset}): CRC32C mismatch" in (
        result.output
    )
    assert segment.name in result.output and "result: CORRUPT" in result.output
    assert snapshot(log_dir) == before


def test_verify_torn_tail_exits_3_and_changes_nothing(log_dir: Path) -> None:
    last = segment_paths(log_dir)[-1]
    position, offset = frame_positions(last)[-1]
    os.truncate(last, last.stat().st_size - 10)
    before = snapshot(log_dir)
    result = run("log", "verify", log_dir)
    assert result.exit_code == 3, result.output
    assert f"torn_tail: {last} at byte {position} (offset {offset})" in result.output
    assert "torn tail only" in result.output
    assert snapshot(log_dir) == before
    with Wal.open(log_dir) as wal:  # and open agrees: it truncates exactly that tail
        assert wal.log_end == offset and wal.recovery.torn_position == position


def test_verify_missing_segment_is_a_gap(log_dir: Path) -> None:
    middle = segment_paths(log_dir)[1]
    middle.unlink()
    middle.with_suffix(".idx").unlink()
    result = run("log", "verify", log_dir)
    assert result.exit_code == 1, result.output
    assert f"{segment_paths(log_dir)[1].name} at byte 0" in result.output
    assert "missing" in result.output


def test_verify_bad_epoch_history_checksum(log_dir: Path) -> None:
    flip_bit(log_dir / "epochs", 17)
    result = run("log", "verify", log_dir)
    assert result.exit_code == 1, result.output
    assert "epochs at byte 0: epoch history fails its checksum" in result.output


def test_verify_epoch_history_that_disagrees_with_frames(log_dir: Path) -> None:
    body = b"walrep-epochs 1\n1 0\n2 24\n"
    (log_dir / "epochs").write_bytes(body + b"crc32c %08x\n" % google_crc32c.value(body))
    result = run("log", "verify", log_dir)
    assert result.exit_code == 1, result.output
    assert "epochs (offset 18): frames from offset 18" in result.output
    assert "have epoch 2, the history says epoch 1" in result.output


def test_verify_missing_index_is_only_a_note(log_dir: Path) -> None:
    index = segment_paths(log_dir)[0].with_suffix(".idx")
    index.unlink()
    result = run("log", "verify", log_dir)
    assert result.exit_code == 0, result.output
    assert f"info: {index}: no index: open will rebuild it" in result.output


def test_verify_reads_a_log_that_is_open_elsewhere(log_dir: Path) -> None:
    with Wal.open(log_dir) as wal:
        before = snapshot(log_dir)
        assert run("log", "verify", log_dir).exit_code == 0
        assert run("log", "dump", log_dir, "--stats").exit_code == 0
        assert snapshot(log_dir) == before
        assert wal.log_end == TOTAL_EVENTS


# --- the limits and replica state files ---------------------------------------------------


def test_dump_and_verify_read_a_log_under_the_limits_it_records(tmp_path: Path) -> None:
    """A 9 MiB event under ``max_batch_bytes = 12 MiB``: healthy, and said to be."""
    log_dir = write_large_log(tmp_path / "log")
    result = run("log", "verify", log_dir)
    assert result.exit_code == 0, result.output
    assert "findings: 0 corrupt, 0 torn_tail, 0 info; result: clean" in result.output
    assert f"limits max_event_bytes={10 * 2**20} max_batch_bytes={12 * 2**20}" in result.output
    dumped = run("log", "dump", log_dir, "--json", "--from", 1, "--to", 2)
    assert dumped.exit_code == 0, dumped.output
    [frame] = [json.loads(line) for line in dumped.stdout.splitlines()]
    assert frame["codec"] == "lz4" and frame["uncompressed_bytes"] > 9 * 2**20
    [big] = frame["events"]
    assert big["offset"] == 1 and len(big["attributes"]["blob"]) == BIG_EVENT_BYTES
    stats = run("log", "dump", log_dir, "--stats")
    assert stats.exit_code == 0 and "events=3 " in stats.output.splitlines()[-1]


def test_a_damaged_limits_file_is_corrupt(log_dir: Path) -> None:
    flip_bit(log_dir / "limits", 20)
    result = run("log", "verify", log_dir)
    assert result.exit_code == 1, result.output
    assert f"corrupt: {log_dir / 'limits'} at byte 0: limits file fails its checksum" in (
        result.output
    )
    dumped = run("log", "dump", log_dir)
    assert dumped.exit_code == 1
    assert f"damage: corrupt: {log_dir / 'limits'}: limits file fails its checksum" in (
        dumped.stdout
    )


def test_a_log_without_a_limits_file_is_read_with_the_defaults(log_dir: Path) -> None:
    (log_dir / "limits").unlink()
    result = run("log", "verify", log_dir)
    assert result.exit_code == 0, result.output
    assert f"info: {log_dir / 'limits'}: no limits file" in result.output
    dumped = run("log", "dump", log_dir)
    assert dumped.exit_code == 0
    assert "the default limits apply" in dumped.stderr
    assert event_offsets(dumped.stdout) == list(range(TOTAL_EVENTS))


def test_verify_checks_the_replica_state(log_dir: Path) -> None:
    with Wal.open(log_dir) as wal:
        wal.save_replica_state(ReplicaState(committed_floor=TOTAL_EVENTS, highest_epoch=3))
    result = run("log", "verify", log_dir)
    assert result.exit_code == 0, result.output
    assert f"replica committed_floor={TOTAL_EVENTS} highest_epoch=3" in result.output
    last = segment_paths(log_dir)[-1]
    position, offset = frame_positions(last)[-1]
    os.truncate(last, position)  # the last batch, committed, is gone
    result = run("log", "verify", log_dir)
    assert result.exit_code == 1, result.output
    assert f"replica-state (offset {offset}): committed floor {TOTAL_EVENTS} is above" in (
        result.output
    )
    flip_bit(log_dir / "replica-state", 25)
    result = run("log", "verify", log_dir)
    assert result.exit_code == 1 and "replica state fails its checksum" in result.output


# --- usage errors ------------------------------------------------------------------------


def test_missing_directory(tmp_path: Path) -> None:
    for command in ("dump", "verify"):
        result = run("log", command, tmp_path / "nope")
        assert result.exit_code == 2 and "does not exist" in result.output
        assert "Traceback" not in result.output


def test_not_a_log_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    for command in ("dump", "verify"):
        result = run("log", command, tmp_path)
        assert result.exit_code == 2, result.output
        assert "not a log directory" in result.output
        assert isinstance(result.exception, SystemExit)
