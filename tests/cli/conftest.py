"""Fixtures of the CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.logs import segment_paths, write_log


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    directory = write_log(tmp_path / "log")
    assert len(segment_paths(directory)) >= 3
    return directory
