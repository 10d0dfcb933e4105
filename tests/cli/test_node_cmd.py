"""``walrep node start``: configuration problems are exit status 2 with a message naming
them, before anything is opened (the running node: tests/e2e/test_node_process.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.test_config_cmd import _no_walrep_env, assert_clean_failure, walrep, write

__all__ = ["_no_walrep_env"]  # the fixture clears WALREP_ variables for these tests too

CONFIG = """\
node: {{id: n1, data_dir: {root}/n1}}
engine: {{apps_dir: {root}/apps}}
datasources: [{{name: WALREP_DB, url: "sqlite+aiosqlite:///{root}/cluster.db"}}]
"""


def test_a_missing_ingest_token_is_refused_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WALREP_CLUSTER_SECRET", "s")
    path = write(tmp_path, CONFIG.format(root=tmp_path))
    result = walrep("node", "start", "-c", str(path))
    assert_clean_failure(result, 2, "WALREP_INGEST_TOKEN is not set", "ingest.auth: none")
    assert not (tmp_path / "n1").exists()  # no log directory was made


def test_an_invalid_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, CONFIG.format(root=tmp_path) + "ingest: {http_port: -1}\n")
    result = walrep("node", "start", "-c", str(path))
    assert_clean_failure(result, 2, "ingest.http_port")
