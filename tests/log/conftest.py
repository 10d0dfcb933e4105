"""Fixtures of the log tests: ``impl`` runs a test against ``Wal`` and ``MemoryLog``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.log.logs import Impl, MemoryImpl, WalImpl


@pytest.fixture(params=["wal", "memory"])
def impl(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Impl]:
    chosen: Impl = WalImpl(tmp_path) if request.param == "wal" else MemoryImpl()
    yield chosen
    chosen.close_all()
