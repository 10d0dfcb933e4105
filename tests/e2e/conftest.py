"""Fixtures of the end-to-end event-sync tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.cluster import Nodes


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[Nodes]:
    cluster = Nodes(tmp_path)
    yield cluster
    await cluster.close()
