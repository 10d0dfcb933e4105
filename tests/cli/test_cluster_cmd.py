"""``walrep cluster status | history | maintenance`` against real coordination databases.

The group's rows are made with the store the nodes use (``SqlStore.try_acquire``,
``publish_node``, ``set_in_sync``) in a real SQLite file, and once in MariaDB; then
the commands run through click exactly as an operator would run them.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from tests.services import TABLE_PREFIX, require_service
from walrep.cli.cluster_cmd import iso_utc
from walrep.cli.main import cli
from walrep.db import create_engine, normalize_url
from walrep.demo.procs import free_port
from walrep.replica.sql_store import SqlStore
from walrep.replica.store import NodeInfo

LONG_TTL_MS = 60_000
_KEEP_ENV = ("WALREP_REQUIRE_SERVICES", "WALREP_TEST_")


@pytest.fixture(autouse=True)
def _no_walrep_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("WALREP_") and not name.upper().startswith(_KEEP_ENV):
            monkeypatch.delenv(name)


class Cluster:
    """A config file for one node of a group, and direct access to the group's store."""

    def __init__(self, tmp_path: Path, url: str, *, prefix: str = "walrep_") -> None:
        self.url = url
        self.prefix = prefix
        self.group = f"g-{uuid.uuid4().hex[:10]}"
        self.config = tmp_path / "node1.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "node": {"id": "node1", "data_dir": str(tmp_path / "node1")},
                    "cluster": {
                        "group_id": self.group,
                        "datasource": "CLUSTER_DB",
                        "table_prefix": prefix,
                    },
                    "datasources": [{"name": "CLUSTER_DB", "url": url}],
                }
            )
        )

    def store_do(self, steps: Callable[[SqlStore], Awaitable[Any]]) -> Any:
        async def run() -> Any:
            store = SqlStore(
                create_engine(normalize_url(self.url)),
                table_prefix=self.prefix,
                call_timeout_ms=5000,
            )
            try:
                await store.setup()
                return await steps(store)
            finally:
                await store.close()

        return asyncio.run(run())

    def active_with_in_sync_standby(self) -> None:
        """node1 holds epoch 1; both nodes published; node2 recorded in-sync under epoch 1."""
        group = self.group

        async def steps(store: SqlStore) -> None:
            won, seen = await store.try_acquire(group, "node1", 0, LONG_TTL_MS)
            assert won and seen.epoch == 1
            await store.publish_node(
                group,
                NodeInfo("node1", "ACTIVE", "10.0.0.1", 9893, "http://10.0.0.1:9090", 1200, 1200),
            )
            await store.publish_node(
                group,
                NodeInfo("node2", "PASSIVE", "10.0.0.2", 9894, "http://10.0.0.2:9091", 1200, 1187),
            )
            assert await store.set_in_sync(group, "node1", 1, "node2", True, LONG_TTL_MS)

        self.store_do(steps)

    def walrep(self, *args: str) -> Result:
        return CliRunner().invoke(cli, [*args, "-c", str(self.config)])


@pytest.fixture
def sqlite_cluster(tmp_path: Path) -> Cluster:
    return Cluster(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'cluster.db'}")


def assert_clean_failure(result: Result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


# --- status --------------------------------------------------------------------------


def test_status_shows_lease_nodes_and_in_sync_standby(sqlite_cluster: Cluster) -> None:
    sqlite_cluster.active_with_in_sync_standby()
    result = sqlite_cluster.walrep("cluster", "status")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert f"group:        {sqlite_cluster.group}" in lines
    assert "lease holder: node1" in lines
    assert "epoch:        1" in lines
    expires = next(line for line in lines if line.startswith("expires in:"))
    left = int(expires.split()[2])
    assert 0 < left <= LONG_TTL_MS and "(database clock)" in expires
    assert "maintenance:  off (automatic failover)" in lines
    node1 = next(line for line in lines if line.strip().startswith("node1 "))
    assert node1.split()[:4] == ["node1", "ACTIVE", "10.0.0.1:9893", "http://10.0.0.1:9090"]
    assert node1.split()[-2:] == ["1200", "1200"]
    node2 = next(line for line in lines if line.strip().startswith("node2 "))
    assert node2.split()[:3] == ["node2", "PASSIVE", "10.0.0.2:9894"]
    assert node2.split()[-2:] == ["1200", "1187"]
    assert "  node2  recorded under epoch 1" in lines
    assert "stale" not in result.stdout


def test_status_json(sqlite_cluster: Cluster) -> None:
    sqlite_cluster.active_with_in_sync_standby()
    result = sqlite_cluster.walrep("cluster", "status", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["group"] == sqlite_cluster.group
    lease = out["lease"]
    assert (lease["holder"], lease["epoch"], lease["maintenance"], lease["expired"]) == (
        "node1",
        1,
        False,
        False,
    )
    assert lease["expires_in_ms"] == lease["expires_at_ms"] - out["db_now_ms"]
    assert [n["node_id"] for n in out["nodes"]] == ["node1", "node2"]
    node2 = out["nodes"][1]
    assert (node2["role"], node2["event_sync"], node2["log_end"], node2["acked"]) == (
        "PASSIVE",
        "10.0.0.2:9894",
        1200,
        1187,
    )
    assert node2["heartbeat_age_ms"] >= 0
    assert out["in_sync"] == [{"node_id": "node2", "epoch": 1, "current": True}]


def test_status_marks_expired_lease_and_stale_in_sync_record(sqlite_cluster: Cluster) -> None:
    sqlite_cluster.active_with_in_sync_standby()
    group = sqlite_cluster.group

    async def reacquire_briefly(store: SqlStore) -> None:
        # The last holder re-takes the lease (epoch 2) with a 1 ms TTL and lets it lapse:
        # node2's in-sync record is from epoch 1 and no longer counts.
        won, seen = await store.try_acquire(group, "node1", 1, 1)
        assert won and seen.epoch == 2
        await asyncio.sleep(0.05)

    sqlite_cluster.store_do(reacquire_briefly)
    result = sqlite_cluster.walrep("cluster", "status")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "epoch:        2" in lines
    expires = next(line for line in lines if line.startswith("expires in:"))
    assert expires.startswith("expires in:   expired (") and expires.endswith(" ms ago)")
    assert "  node2  recorded under epoch 1 (stale: older epoch)" in lines

    out = json.loads(sqlite_cluster.walrep("cluster", "status", "--json").stdout)
    assert out["lease"]["expired"] is True and out["lease"]["expires_in_ms"] <= 0
    assert out["in_sync"] == [{"node_id": "node2", "epoch": 1, "current": False}]


def test_status_of_a_group_without_holder(sqlite_cluster: Cluster) -> None:
    sqlite_cluster.store_do(lambda store: store.db_now_ms())  # tables, but no group rows
    result = sqlite_cluster.walrep("cluster", "status")
    assert result.exit_code == 0, result.output
    assert "lease holder: (none: the group has never had a holder)" in result.stdout
    assert "(none has published itself)" in result.stdout
    assert "(none: no standby may take over automatically)" in result.stdout


# --- history -------------------------------------------------------------------------


def test_history_newest_first_with_time_and_reason(sqlite_cluster: Cluster) -> None:
    sqlite_cluster.active_with_in_sync_standby()
    group = sqlite_cluster.group
    before_ms = int(time.time() * 1000)

    async def forced_failover(store: SqlStore) -> int:
        won, _ = await store.try_acquire(group, "node1", 1, 1)  # epoch 2, lapses at once
        assert won
        await asyncio.sleep(0.05)
        won, seen = await store.try_acquire(group, "node2", 2, LONG_TTL_MS, force=True)
        assert won and seen.epoch == 3
        return seen.db_now_ms

    sqlite_cluster.store_do(forced_failover)
    result = sqlite_cluster.walrep("cluster", "history")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:5] == ["EPOCH", "TIME", "(UTC)", "FROM", "→"]
    epochs = [line.split()[0] for line in lines[1:]]
    assert epochs == ["3", "2", "1"]
    assert "node1 → node2" in lines[1] and "FORCED takeover by node2" in lines[1]
    assert "node1 → node1" in lines[2] and "re-acquired by the last holder" in lines[2]
    assert "(none) → node1" in lines[3] and "first holder of the group" in lines[3]

    limited = sqlite_cluster.walrep("cluster", "history", "--limit", "1", "--json")
    assert limited.exit_code == 0, limited.output
    rows = json.loads(limited.stdout)
    assert len(rows) == 1
    row = rows[0]
    assert (row["epoch"], row["from_node"], row["to_node"]) == (3, "node1", "node2")
    assert row["at"] == iso_utc(row["at_ms"]) and row["at"].endswith("Z")
    # SQLite's clock is this host's clock: the row's time is "now", in UTC.
    assert abs(row["at_ms"] - before_ms) < 60_000
    assert row["at"] in result.stdout


def test_iso_utc() -> None:
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"


# --- maintenance ---------------------------------------------------------------------


def test_maintenance_on_and_off(sqlite_cluster: Cluster) -> None:
    sqlite_cluster.active_with_in_sync_standby()
    group = sqlite_cluster.group
    on = sqlite_cluster.walrep("cluster", "maintenance", "on")
    assert on.exit_code == 0, on.output
    assert on.stdout.startswith("maintenance: on")
    assert "automatic failover paused" in on.stdout and "holder node1, epoch 1" in on.stdout
    assert (
        "maintenance:  on (automatic failover paused)"
        in sqlite_cluster.walrep("cluster", "status").stdout
    )

    async def read(store: SqlStore) -> bool:
        return (await store.read_lease(group)).maintenance

    assert sqlite_cluster.store_do(read) is True

    off = sqlite_cluster.walrep("cluster", "maintenance", "off")
    assert off.exit_code == 0, off.output
    assert off.stdout.startswith("maintenance: off")
    assert sqlite_cluster.store_do(read) is False


def test_maintenance_needs_on_or_off(sqlite_cluster: Cluster) -> None:
    result = sqlite_cluster.walrep("cluster", "maintenance", "maybe")
    assert result.exit_code == 2
    assert "Traceback" not in result.output


# --- failures ------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["status"], ["history"], ["maintenance", "on"]])
def test_missing_sqlite_file_is_not_created(sqlite_cluster: Cluster, command: list[str]) -> None:
    result = sqlite_cluster.walrep("cluster", *command)
    assert_clean_failure(result, 1, "coordination database", "does not exist")
    assert not (sqlite_cluster.config.parent / "cluster.db").exists()


def test_database_without_tables_is_reported(sqlite_cluster: Cluster) -> None:
    (sqlite_cluster.config.parent / "cluster.db").touch()
    result = sqlite_cluster.walrep("cluster", "status")
    assert_clean_failure(result, 1, "no walrep coordination tables", "walrep_lease")


def test_unreachable_database_exits_1_without_traceback(tmp_path: Path) -> None:
    # Port 1 on the loopback: nothing listens, the connection is refused at once.
    cluster = Cluster(tmp_path, "mysql://root:Hidden-s3cret@127.0.0.1:1/test")
    for command in (["status"], ["history"], ["maintenance", "on"]):
        result = cluster.walrep("cluster", *command, "--timeout-ms", "3000")
        assert_clean_failure(result, 1, "coordination database mysql://root:***@127.0.0.1:1/test")
        assert "Hidden-s3cret" not in result.output


def test_invalid_config_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("node: {id: n1}\ncluster: {datasource: NOPE}\n")
    result = CliRunner().invoke(cli, ["cluster", "status", "-c", str(path)])
    assert_clean_failure(result, 2, "cluster.datasource 'NOPE'")


def test_unset_password_variable_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "pw.yaml"
    path.write_text(
        "node: {id: n1}\n"
        "datasources: [{name: WALREP_DB, url: 'mysql://root@127.0.0.1:1/x', "
        "password_env: T_UNSET_PW}]\n"
    )
    result = CliRunner().invoke(cli, ["cluster", "status", "-c", str(path)])
    assert_clean_failure(result, 2, "T_UNSET_PW is not set")


# --- MariaDB -------------------------------------------------------------------------


def test_status_history_maintenance_on_mariadb(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, require_service("mariadb"), prefix=TABLE_PREFIX)
    cluster.active_with_in_sync_standby()

    status = cluster.walrep("cluster", "status", "--json")
    assert status.exit_code == 0, status.output
    out = json.loads(status.stdout)
    assert out["group"] == cluster.group
    assert (out["lease"]["holder"], out["lease"]["epoch"]) == ("node1", 1)
    assert 0 < out["lease"]["expires_in_ms"] <= LONG_TTL_MS
    assert [(n["node_id"], n["role"]) for n in out["nodes"]] == [
        ("node1", "ACTIVE"),
        ("node2", "PASSIVE"),
    ]
    assert out["in_sync"] == [{"node_id": "node2", "epoch": 1, "current": True}]

    text = cluster.walrep("cluster", "status")
    assert text.exit_code == 0, text.output
    assert "lease holder: node1" in text.stdout

    history = cluster.walrep("cluster", "history")
    assert history.exit_code == 0, history.output
    assert "(none) → node1" in history.stdout

    on = cluster.walrep("cluster", "maintenance", "on")
    assert on.exit_code == 0, on.output
    assert json.loads(cluster.walrep("cluster", "status", "--json").stdout)["lease"]["maintenance"]
    off = cluster.walrep("cluster", "maintenance", "off")
    assert off.exit_code == 0, off.output


# --- list ----------------------------------------------------------------------------


def _listed_pair(cluster: Cluster) -> None:
    """node1 holds epoch 1, node2 in sync; both admin URLs refuse connections."""
    group = cluster.group

    async def steps(store: SqlStore) -> None:
        assert (await store.try_acquire(group, "node1", 0, LONG_TTL_MS))[0]
        closed = f"http://127.0.0.1:{free_port()}"
        await store.publish_node(
            group, NodeInfo("node1", "ACTIVE", "127.0.0.1", 9893, closed, 1200, 1200)
        )
        await store.publish_node(
            group, NodeInfo("node2", "PASSIVE", "127.0.0.1", 9894, closed, 1187, 1187)
        )
        await store.publish_node(
            group, NodeInfo("node3", "PASSIVE", "127.0.0.1", 9895, "", 900, 900)
        )
        assert await store.set_in_sync(group, "node1", 1, "node2", True, LONG_TTL_MS)

    cluster.store_do(steps)


def test_list_from_the_database_when_no_node_answers(sqlite_cluster: Cluster) -> None:
    _listed_pair(sqlite_cluster)
    result = sqlite_cluster.walrep("cluster", "list", "--timeout-ms", "2000")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"group {sqlite_cluster.group}: node1 holds the lease under epoch 1"
    assert lines[1].split() == [
        "NODE",
        "ROLE",
        "EPOCH",
        "LOG",
        "END",
        "LAG",
        "IN",
        "SYNC",
        "HEARTBEAT",
    ]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert rows["node1"][:6] == ["node1", "ACTIVE", "(unreachable)", "1", "1200", "-"]
    assert rows["node2"][:7] == ["node2", "PASSIVE", "(unreachable)", "-", "1187", "13", "yes"]
    assert rows["node3"][:7] == ["node3", "PASSIVE", "(unreachable)", "-", "900", "300", "no"]


def test_list_json(sqlite_cluster: Cluster) -> None:
    _listed_pair(sqlite_cluster)
    result = sqlite_cluster.walrep("cluster", "list", "--json", "--timeout-ms", "2000")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["holder"], doc["epoch"], doc["maintenance"]) == ("node1", 1, False)
    by_node = {n["node_id"]: n for n in doc["nodes"]}
    assert by_node["node1"]["in_sync"] is None and by_node["node1"]["epoch"] == 1
    assert by_node["node2"]["in_sync"] is True and by_node["node2"]["lag_events"] == 13
    assert by_node["node3"]["in_sync"] is False and by_node["node3"]["reachable"] is False
    assert all(n["heartbeat_age_ms"] >= 0 and not n["stale"] for n in doc["nodes"])


def test_pause_and_resume(sqlite_cluster: Cluster) -> None:
    _listed_pair(sqlite_cluster)
    paused = sqlite_cluster.walrep("cluster", "pause")
    assert paused.exit_code == 0, paused.output
    assert paused.stdout.startswith("maintenance: on — automatic failover paused")
    listed = sqlite_cluster.walrep("cluster", "list", "--timeout-ms", "500")
    assert "(maintenance: automatic failover paused)" in listed.stdout.splitlines()[0]
    resumed = sqlite_cluster.walrep("cluster", "resume")
    assert resumed.exit_code == 0, resumed.output
    assert resumed.stdout.startswith("maintenance: off — automatic failover active")
