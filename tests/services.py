"""Real database services for tests: reachable, or skipped — or failed under CI.

CI exports ``WALREP_REQUIRE_SERVICES=1``: then a service that is not reachable fails the
test instead of skipping it, so a green CI run always means the real servers were used.
URLs can be changed with ``WALREP_TEST_MARIADB_URL`` / ``WALREP_TEST_POSTGRES_URL``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from walrep.db import create_engine, normalize_url
from walrep.replica.sql_store import SqlStore

REQUIRE_SERVICES = os.environ.get("WALREP_REQUIRE_SERVICES") == "1"
MARIADB_URL = os.environ.get("WALREP_TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/test")
POSTGRES_URL = os.environ.get(
    "WALREP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
SERVICE_URLS = {"mariadb": MARIADB_URL, "postgresql": POSTGRES_URL}
TABLE_PREFIX = "wtest_"


def require_service(name: str) -> str:
    """The service's URL if its port answers; otherwise skip, or fail under CI."""
    url = SERVICE_URLS[name]
    parsed = make_url(url)
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 0), timeout=2):
            return url
    except OSError as e:
        message = f"{name} not reachable at {parsed.host}:{parsed.port}: {e}"
        if REQUIRE_SERVICES:
            pytest.fail(f"{message} (WALREP_REQUIRE_SERVICES=1: CI needs the real server)")
        pytest.skip(message)


def sql_store(backend: str, tmp_path: Path, *, call_timeout_ms: int = 5000) -> SqlStore:
    """A store on a real database: a SQLite file in ``tmp_path``, or MariaDB / PostgreSQL."""
    url = (
        f"sqlite:///{tmp_path / 'cluster.db'}" if backend == "sqlite" else require_service(backend)
    )
    return SqlStore(
        create_engine(normalize_url(url)),
        table_prefix=TABLE_PREFIX,
        call_timeout_ms=call_timeout_ms,
    )
