"""The limits a log records in its directory (``limits``), and the rules ``Wal.open`` follows.

A reader must accept whatever the writer could write: a healthy log holding a 9 MiB
event, written under ``max_batch_bytes = 12 MiB``, is read back by ``Wal.open`` without
that config, by ``Wal.open`` with the default config, and by ``walrep log verify``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from tests.log.helpers import TINY, batch, dir_snapshot
from walrep.errors import CorruptLogError, LimitExceededError
from walrep.log import Event, LogConfig, LogLimits, Wal
from walrep.log.frame import FLAG_LZ4
from walrep.log.limits import FILE_NAME, load_limits
from walrep.log.verify import VerifyStatus, verify_log

MIB = 1024 * 1024
LARGE = LogConfig(max_event_bytes=10 * MIB, max_batch_bytes=12 * MIB)


def nine_mib_event(compressible: bool) -> Event:
    text = "ab" * (9 * MIB // 2) if compressible else os.urandom(9 * MIB // 2).hex()
    return Event("big", {"blob": text})


@pytest.mark.parametrize("compressible", [True, False], ids=["lz4", "stored plain"])
def test_a_9_mib_event_under_12_mib_limits_reads_back_everywhere(
    tmp_path: Path, compressible: bool
) -> None:
    config = (
        LARGE if compressible else dataclasses.replace(LARGE, compress_threshold_bytes=16 * MIB)
    )
    big = nine_mib_event(compressible)
    with Wal.open(tmp_path / "log", config) as wal:
        wal.append_sync(batch(0, 2), epoch=1)
        wal.append_sync([big], epoch=1)
        wal.append_sync(batch(3, 2), epoch=1)
        flags = [f.header.flags & FLAG_LZ4 for f in wal.frames()]
    assert flags[1] == (FLAG_LZ4 if compressible else 0)
    assert load_limits(tmp_path / "log") == LogLimits(10 * MIB, 12 * MIB)

    with Wal.open(tmp_path / "log") as wal:  # no config: the recorded limits
        assert wal.recovery.lines() == []
        assert [r.event for r in wal.read(2, 3)] == [big]
        assert wal.config.max_batch_bytes == 12 * MIB
        wal.append_sync([big], epoch=1)  # and it may append such events too
    with Wal.open(tmp_path / "log", LogConfig()) as wal:  # default limits for appends
        assert wal.limits == LogLimits(10 * MIB, 12 * MIB)  # reads keep the recorded ones
        assert [r.event for r in wal.read(5, 6)] == [big]
        with pytest.raises(LimitExceededError):
            wal.append_sync([big], epoch=1)
        wal.truncate_after(6)  # re-framing needs no more than the recorded limits
        assert wal.log_end == 6
    report = verify_log(tmp_path / "log")
    assert report.status is VerifyStatus.CLEAN and report.findings == ()
    assert report.total.events == 6


def test_a_new_log_records_its_config_and_reopens_with_it(tmp_path: Path) -> None:
    with Wal.open(tmp_path / "log", TINY) as wal:
        wal.append_sync(batch(0, 2), epoch=1)
    assert load_limits(tmp_path / "log") == LogLimits(512, 1024)
    text = (tmp_path / "log" / FILE_NAME).read_text()
    assert text.startswith("walrep-limits 1\nformat_version 1\nmax_event_bytes 512\n")
    with Wal.open(tmp_path / "log") as wal:
        assert wal.limits == LogLimits(512, 1024)
        with pytest.raises(LimitExceededError):  # the recorded limits apply to appends too
            wal.append_sync([Event("s", {"v": "x" * 600})], epoch=1)


def test_larger_configured_limits_are_recorded_before_anything_is_written(tmp_path: Path) -> None:
    with Wal.open(tmp_path / "log", TINY) as wal:
        wal.append_sync(batch(0, 2), epoch=1)
    wider = dataclasses.replace(
        TINY, segment_bytes_max=8192, max_event_bytes=2048, max_batch_bytes=4096
    )
    with Wal.open(tmp_path / "log", wider) as wal:
        assert load_limits(tmp_path / "log") == LogLimits(2048, 4096)  # already on open
        wal.append_sync([Event("s", {"v": "x" * 1500})], epoch=1)
    with Wal.open(tmp_path / "log", TINY) as wal:  # smaller again: reads keep the max
        assert wal.limits == LogLimits(2048, 4096)
        assert wal.config.max_event_bytes == 512
        assert [r.offset for r in wal.read()] == [0, 1, 2]
    assert load_limits(tmp_path / "log") == LogLimits(2048, 4096)


def test_a_log_without_the_file_was_written_under_the_defaults(tmp_path: Path) -> None:
    with Wal.open(tmp_path / "log", TINY) as wal:
        wal.append_sync(batch(0, 2), epoch=1)
    (tmp_path / "log" / FILE_NAME).unlink()  # as a log from before the file existed
    report = verify_log(tmp_path / "log")
    assert report.ok and report.limits == LogLimits()
    [finding] = report.findings
    assert finding.path.name == FILE_NAME and "default limits" in finding.reason
    with Wal.open(tmp_path / "log", TINY) as wal:
        assert wal.limits == LogLimits()  # max(defaults, configured)
    assert load_limits(tmp_path / "log") == LogLimits()


def test_a_damaged_limits_file_is_corrupt_and_named(tmp_path: Path) -> None:
    with Wal.open(tmp_path / "log", TINY) as wal:
        wal.append_sync(batch(0, 2), epoch=1)
    path = tmp_path / "log" / FILE_NAME
    for damaged in (
        path.read_bytes().replace(b"1024", b"1025"),  # checksum no longer matches
        b"walrep-limits 1\nmax_batch_bytes 9\ncrc32c 00000000\n",
        b"",
    ):
        path.write_bytes(damaged)
        before = dir_snapshot(tmp_path / "log")
        with pytest.raises(CorruptLogError) as info:
            Wal.open(tmp_path / "log", TINY)
        assert info.value.segment == str(path)
        assert dir_snapshot(tmp_path / "log") == before
        report = verify_log(tmp_path / "log")
        assert report.status is VerifyStatus.CORRUPT
        assert [f.path for f in report.findings] == [path]
