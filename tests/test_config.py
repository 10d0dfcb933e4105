"""Configuration: loading, environment overrides, errors, the example configs, seed import."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from walrep.config import WalrepConfig, load_config
from walrep.config.seed import import_seed, parse_seed, render, validate_without_env
from walrep.db import normalize_url
from walrep.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
CONF_FILES = sorted((ROOT / "conf").glob("**/*.yaml"))
SEED = ROOT / "tests" / "data" / "seed-deployment.yaml"
SEED_PASSWORDS = ["h2-Carb0n-secret", "Cl4ster-s3cret", "P3rsist-s3cret", "an4lytics-Pa55"]
_KEEP_ENV = ("WALREP_REQUIRE_SERVICES", "WALREP_TEST_")


@pytest.fixture(autouse=True)
def _no_walrep_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own WALREP_... variables must not change what these tests load."""
    for name in list(os.environ):
        if name.upper().startswith("WALREP_") and not name.upper().startswith(_KEEP_ENV):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str, name: str = "node.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- loading -------------------------------------------------------------------------


def test_minimal_file_gets_the_fast_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "node: {id: n1}\n"))
    assert config.node.id == "n1"
    assert config.cluster.heartbeat_interval_ms == 250
    assert config.cluster.lease_ttl_ms == 1000
    assert config.datasource(config.cluster.datasource).url.startswith("sqlite+aiosqlite://")
    assert config.event_sync_advertised == ("127.0.0.1", 9893)


def test_environment_overrides_a_nested_key_of_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "node: {id: n1}\ncluster: {heartbeat_interval_ms: 500, group_id: g}\n")
    monkeypatch.setenv("WALREP_CLUSTER__HEARTBEAT_INTERVAL_MS", "200")
    config = load_config(path)
    assert config.cluster.heartbeat_interval_ms == 200
    assert config.cluster.group_id == "g"  # the rest of the section still comes from the file
    assert config.cluster.lease_ttl_ms == 800


def test_error_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "node: {id: n1}\ncluster: {heartbeat_intervall_ms: 5}\n")
    with pytest.raises(ConfigError, match=r"node\.yaml: cluster\.heartbeat_intervall_ms: Extra"):
        load_config(path)


def test_error_from_the_environment_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WALREP_CLUSTER__HEARTBEAT_MAX_RETRY", "many")
    with pytest.raises(ConfigError, match=r"set by WALREP_CLUSTER__HEARTBEAT_MAX_RETRY"):
        load_config(write(tmp_path, "node: {id: n1}\n"))


def test_unknown_cluster_datasource_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "node: {id: n1}\ncluster: {datasource: NOPE}\n")
    with pytest.raises(ConfigError, match=r"cluster\.datasource 'NOPE' is not one of"):
        load_config(path)


def test_lease_timing_that_leaves_no_renew_is_an_error(tmp_path: Path) -> None:
    # TTL 500 - margin 250 leaves the leader no renew before it must fence itself.
    path = write(tmp_path, "node: {id: n1}\ncluster: {heartbeat_max_retry: 1}\n")
    with pytest.raises(ConfigError, match=r"cluster: lease_ttl_ms - safety_margin_ms must"):
        load_config(path)
    fixed = write(
        tmp_path, "node: {id: n1}\ncluster: {heartbeat_max_retry: 1, safety_margin_ms: 100}\n"
    )
    assert load_config(fixed).cluster.lease_timing().valid_for_ms == 400


def test_bad_yaml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "node: {id: n1\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_password_env_is_read_when_the_password_is_needed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path,
        "node: {id: n1}\n"
        "datasources: [{name: WALREP_DB, url: 'mysql://root@db/x', password_env: T_PW}]\n",
    )
    datasource = load_config(path).datasources[0]
    with pytest.raises(ConfigError, match="T_PW is not set"):
        datasource.resolved_password()
    monkeypatch.setenv("T_PW", "pw")
    assert datasource.resolved_password() == "pw"


# --- the example configs -------------------------------------------------------------


def test_there_are_example_configs() -> None:
    names = {str(p.relative_to(ROOT / "conf")) for p in CONF_FILES}
    assert {"node1.yaml", "node2.yaml"} <= names
    assert {"mariadb/node1.yaml", "mariadb/node2.yaml"} <= names
    assert {"postgresql/node1.yaml", "postgresql/node2.yaml"} <= names


@pytest.mark.parametrize("path", CONF_FILES, ids=lambda p: str(p.relative_to(ROOT / "conf")))
def test_example_config_loads(path: Path) -> None:
    config = load_config(path)
    for datasource in config.datasources:
        normalize_url(datasource.url)  # a database walrep has a driver for
    assert "# seed:" in path.read_text()  # keys carry their seed counterparts


@pytest.mark.parametrize("variant", ["", "mariadb/", "postgresql/"])
def test_example_pairs_form_one_group_on_distinct_ports(variant: str) -> None:
    one = load_config(ROOT / "conf" / f"{variant}node1.yaml")
    two = load_config(ROOT / "conf" / f"{variant}node2.yaml")
    assert one.node.id != two.node.id
    assert one.node.data_dir != two.node.data_dir
    assert one.cluster.group_id == two.cluster.group_id
    assert one.cluster == two.cluster
    assert one.datasources == two.datasources
    assert one.event_sync_advertised != two.event_sync_advertised
    assert two.port_offset > 0


# --- seed import (pure) --------------------------------------------------------------


def seed_import(text: str | None = None, **kwargs: str) -> tuple[dict[str, Any], list[str]]:
    seed = parse_seed(text if text is not None else SEED.read_text())
    config, notes = import_seed(seed, **kwargs)
    return config, notes


def test_seed_import_maps_the_guide_deployment() -> None:
    config, notes = seed_import()
    model = validate_without_env(config)
    assert isinstance(model, WalrepConfig)
    assert model.node.id == "wso2-am_analytics"
    assert model.cluster.group_id == "group-1"
    assert model.cluster.datasource == "WSO2_CLUSTER_DB"
    # The seed's timings are kept, and a note tells what they mean and what walrep's are.
    assert (model.cluster.heartbeat_interval_ms, model.cluster.heartbeat_max_retry) == (5000, 5)
    assert model.cluster.event_polling_interval_ms == 5000
    timing = next(n for n in notes if n.startswith("cluster.config.strategyConfig ("))
    assert "lease TTL of 30000 ms" in timing and "35000 ms" in timing
    assert "heartbeat_interval_ms 250" in timing
    assert model.deployment.type == "ha"
    assert model.deployment.passive_node_details_wait_timeout_ms == 300_000
    assert model.deployment.passive_node_details_retry_sleep_ms == 500
    assert model.deployment.event_buffer_capacity == 20_000
    assert model.event_sync_advertised == ("localhost", 9893)
    cluster_db = model.datasource("WSO2_CLUSTER_DB")
    assert cluster_db.url == "mysql://localhost:3306/WSO2_CLUSTER_DB"
    assert cluster_db.username == "root"
    assert cluster_db.password is None
    assert cluster_db.password_env == "WALREP_DB_PASSWORD_WSO2_CLUSTER_DB"
    # H2 (the WSO2 default) becomes a SQLite file, with a note.
    assert model.datasource("WSO2_CARBON_DB").url == "sqlite+aiosqlite:///data/WSO2_CARBON_DB.db"
    assert any("H2 is not supported" in n for n in notes)


def test_seed_import_notes_every_ignored_key() -> None:
    _, notes = seed_import()
    text = "\n".join(notes)
    for key in [
        "byteBufferExtractorThreadPoolSize",
        "bossThreads",
        "workerThreads",
        "maxActive",
        "maxTotal",
        "maxIdle",
        "maxWait",
        "minEvictableIdleTimeMillis",
        "coordinationStrategyClass",
        "driverClassName",
        "connectionTestQuery",
        "isAutoCommit",
        "jndiConfig",
        "useSSL",
    ]:
        assert key in text, key
    thread_pool = next(n for n in notes if "byteBufferExtractorThreadPoolSize" in n)
    assert "one asyncio loop" in thread_pool and "ignored" in thread_pool
    # state.persistence is mapped now (tests/engine/test_snapshot_stores.py checks the
    # values); only the unit change of intervalInMin is worth a note.
    assert "state.persistence.intervalInMin (1): interval_s 60" in notes
    assert any("wso2.transport.http" in n and "siddhi" in n for n in notes)


def test_seed_import_writes_no_password_and_says_what_to_export() -> None:
    config, notes = seed_import()
    rendered = render(import_seed(parse_seed(SEED.read_text())), source="seed.yaml")
    for secret in SEED_PASSWORDS:
        assert secret not in rendered
        assert secret not in "\n".join(notes)
    body = "\n".join(line for line in rendered.splitlines() if not line.startswith("#"))
    assert "password:" not in body
    assert all("password" not in d for d in config["datasources"])
    assert config["state_persistence"] == {
        "enabled": True,
        "interval_s": 60,
        "revisions_to_keep": 2,
        "store": "db",
        "datasource": "PERSISTENCE_DB",
        "table": "PERSISTENCE_TABLE",
    }
    assert any("export WALREP_DB_PASSWORD_WSO2_CLUSTER_DB=" in n for n in notes)
    # The rendered text is the config, its notes as comments.
    assert yaml.safe_load(rendered) == config


def test_seed_import_accepts_the_guides_list_form_and_nested_keys() -> None:
    guide_style = """
- wso2.carbon: {id: si-1}
- cluster.config:
    enabled: true
    groupId: group-1
    strategyConfig: {datasource: WSO2_CLUSTER_DB, heartbeatInterval: 1000}
- deployment.config: {type: ha}
- wso2.datasources:
    dataSources:
      - name: WSO2_CLUSTER_DB
        definition:
          configuration: {jdbcUrl: 'jdbc:postgresql://db:5432/cluster', username: si}
"""
    nested = """
wso2:
  carbon: {id: si-1}
  datasources:
    dataSources:
      - name: WSO2_CLUSTER_DB
        definition:
          configuration: {jdbcUrl: 'jdbc:postgresql://db:5432/cluster', username: si}
cluster: {config: {enabled: true, groupId: group-1,
  strategyConfig: {datasource: WSO2_CLUSTER_DB, heartbeatInterval: 1000}}}
deployment: {config: {type: ha}}
"""
    first, _ = seed_import(guide_style)
    second, _ = seed_import(nested)
    assert first == second
    assert first["datasources"] == [
        {"name": "WSO2_CLUSTER_DB", "url": "postgresql://db:5432/cluster", "username": "si"}
    ]


def test_seed_import_node_id_option_replaces_the_carbon_id() -> None:
    config, notes = seed_import(node_id="node2")
    assert config["node"]["id"] == "node2"
    assert any("replaced by --node-id node2" in n for n in notes)


def test_seed_import_keeps_the_listening_port_under_a_port_offset() -> None:
    text = SEED.read_text().replace("offset: 0", "offset: 1").replace("port: 9893", "port: 9894")
    model = validate_without_env(seed_import(text)[0])
    server = model.deployment.event_sync_server
    assert model.port_offset == 1
    assert server.port + model.port_offset == 9894  # where the node listens, as before


def test_seed_import_credentials_in_the_url_are_moved_out() -> None:
    text = SEED.read_text().replace(
        "jdbc:mysql://localhost:3306/WSO2_CLUSTER_DB?useSSL=false",
        "jdbc:mysql://localhost:3306/WSO2_CLUSTER_DB?user=si&password=InUrl-s3cret",
    )
    text = text.replace("          username: root\n          password: Cl4ster-s3cret\n", "")
    config, notes = seed_import(text)
    rendered = render(import_seed(parse_seed(text)), source="seed.yaml")
    assert "InUrl-s3cret" not in rendered and "InUrl-s3cret" not in "\n".join(notes)
    cluster_db = next(d for d in config["datasources"] if d["name"] == "WSO2_CLUSTER_DB")
    assert cluster_db["url"] == "mysql://localhost:3306/WSO2_CLUSTER_DB"
    assert cluster_db["username"] == "si"
    assert cluster_db["password_env"] == "WALREP_DB_PASSWORD_WSO2_CLUSTER_DB"


def test_seed_import_env_placeholder_password_becomes_password_env() -> None:
    text = SEED.read_text().replace("password: Cl4ster-s3cret", "password: ${env:CLUSTER_DB_PW}")
    config, _ = seed_import(text)
    cluster_db = next(d for d in config["datasources"] if d["name"] == "WSO2_CLUSTER_DB")
    assert cluster_db["password_env"] == "CLUSTER_DB_PW"


def test_seed_import_one_retry_gets_a_safety_margin_that_validates() -> None:
    text = SEED.read_text().replace("heartbeatMaxRetry: 5", "heartbeatMaxRetry: 1")
    config, notes = seed_import(text)
    model = validate_without_env(config)
    assert model.cluster.safety_margin_ms == 2500
    assert any("safety_margin_ms set to 2500" in n for n in notes)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("datasource: WSO2_CLUSTER_DB", "datasource: MISSING_DB"), "names 'MISSING_DB'"),
        (("type: ha", "type: distributed"), "deployment.config.type 'distributed'"),
        (("id: wso2-am_analytics", "name2: x"), "wso2.carbon.id is missing"),
        (("heartbeatInterval: 5000", "heartbeatInterval: -1"), "from seed key cluster.config"),
    ],
)
def test_seed_import_errors_name_the_seed_key(change: tuple[str, str], message: str) -> None:
    text = SEED.read_text().replace(*change, 1)
    with pytest.raises(ConfigError, match=message):
        seed_import(text)


def test_seed_import_without_deployment_config_is_a_single_node() -> None:
    config, notes = seed_import("wso2.carbon: {id: solo}\n")
    model = validate_without_env(config)
    assert model.deployment.type == "single"
    assert model.node.id == "solo"
    assert any("deployment.config: absent" in n for n in notes)
