"""Fixtures of the end-to-end tests: a cluster on a shared SQLite file, or on a server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.cluster import Cluster
from tests.services import require_service


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Nodes on one SQLite file in ``tmp_path`` (two store instances on one file behave
    like two processes)."""
    c = Cluster(tmp_path)
    yield c
    await c.close()


@pytest.fixture(params=["sqlite", "mariadb", "postgresql"])
async def any_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    """The same, on each real store (a server that is not reachable skips, or fails in CI)."""
    backend = str(request.param)
    if backend != "sqlite":
        require_service(backend)
    c = Cluster(tmp_path, backend)
    yield c
    await c.close()
