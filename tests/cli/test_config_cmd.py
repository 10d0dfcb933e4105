"""``walrep config check`` and ``walrep config import``, through the real click command."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from walrep.cli.main import cli
from walrep.config import load_config
from walrep.config.seed import validate_without_env

ROOT = Path(__file__).resolve().parent.parent.parent
SEED = ROOT / "tests" / "data" / "seed-deployment.yaml"
SEED_PASSWORDS = ["h2-Carb0n-secret", "Cl4ster-s3cret", "P3rsist-s3cret", "an4lytics-Pa55"]
_KEEP_ENV = ("WALREP_REQUIRE_SERVICES", "WALREP_TEST_")


@pytest.fixture(autouse=True)
def _no_walrep_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("WALREP_") and not name.upper().startswith(_KEEP_ENV):
            monkeypatch.delenv(name)


def walrep(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def write(tmp_path: Path, text: str, name: str = "node.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_clean_failure(result: Result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


# --- check ---------------------------------------------------------------------------


def test_check_prints_the_effective_config_and_derived_figures() -> None:
    result = walrep("config", "check", "-c", str(ROOT / "conf" / "node2.yaml"))
    assert result.exit_code == 0, result.output
    effective = yaml.safe_load(result.stdout)  # the derived figures are YAML comments
    assert effective["node"] == {"id": "node2", "data_dir": "data/node2"}
    assert effective["port_offset"] == 1
    assert effective["cluster"]["heartbeat_interval_ms"] == 250
    out = result.stdout
    assert "lease TTL:" in out and "1000 ms = heartbeat_interval_ms 250 x" in out
    assert "safety margin:         250 ms (default: one heartbeat)" in out
    assert "failover detection:    1100 ms worst case" in out
    assert "event-sync advertised: 127.0.0.1:9894 (port 9893 + port_offset 1)" in out


def test_check_json_has_config_and_derived() -> None:
    result = walrep("config", "check", "--json", "-c", str(ROOT / "conf" / "node1.yaml"))
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    derived = out["derived"]
    assert derived["lease_ttl_ms"] == 1000
    assert derived["safety_margin_ms"] == 250
    assert derived["failover_detection_worst_ms"] == 1100
    assert derived["event_sync_advertised"] == "127.0.0.1:9893"
    assert out["config"]["node"]["id"] == "node1"


def test_check_redacts_passwords_and_url_passwords(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
node: {id: n1}
cluster: {datasource: A}
datasources:
  - {name: A, url: 'mysql://root:Url-s3cret@db:3306/x', password: File-s3cret}
  - {name: B, url: 'jdbc:postgresql://db/x?user=u&password=Query-s3cret'}
""",
    )
    result = walrep("config", "check", "-c", str(path))
    assert result.exit_code == 0, result.output
    for secret in ["Url-s3cret", "File-s3cret", "Query-s3cret"]:
        assert secret not in result.output
    effective = yaml.safe_load(result.stdout)
    assert effective["datasources"][0]["url"] == "mysql://root:***@db:3306/x"
    assert effective["datasources"][0]["password"] == "***"
    assert effective["datasources"][1]["url"].endswith("password=***")
    as_json = walrep("config", "check", "--json", "-c", str(path))
    assert "s3cret" not in as_json.output


def test_check_bad_key_exits_2_naming_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, "node: {id: n1}\ncluster: {heartbeat_intervall_ms: 5}\n")
    result = walrep("config", "check", "-c", str(path))
    assert_clean_failure(result, 2, str(path), "cluster.heartbeat_intervall_ms")


def test_check_bad_yaml_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, "node: {id: n1\n")
    assert_clean_failure(walrep("config", "check", "-c", str(path)), 2, str(path), "not valid YAML")


def test_check_unknown_datasource_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, "node: {id: n1}\ncluster: {datasource: NOPE}\n")
    result = walrep("config", "check", "-c", str(path))
    assert_clean_failure(result, 2, str(path), "cluster.datasource 'NOPE' is not one of")


def test_check_missing_file_exits_2(tmp_path: Path) -> None:
    result = walrep("config", "check", "-c", str(tmp_path / "absent.yaml"))
    assert_clean_failure(result, 2, "cannot read")


def test_check_unsupported_database_exits_2(tmp_path: Path) -> None:
    path = write(
        tmp_path, "node: {id: n1}\ndatasources: [{name: WALREP_DB, url: 'oracle://h/x'}]\n"
    )
    result = walrep("config", "check", "-c", str(path))
    assert_clean_failure(result, 2, "datasources.0.url", "unsupported database 'oracle'")


def test_check_inconsistent_lease_timing_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, "node: {id: n1}\ncluster: {heartbeat_max_retry: 1}\n")
    result = walrep("config", "check", "-c", str(path))
    assert_clean_failure(result, 2, "cluster: lease_ttl_ms - safety_margin_ms must exceed")


def test_check_shows_an_environment_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WALREP_CLUSTER__HEARTBEAT_INTERVAL_MS", "200")
    result = walrep("config", "check", "-c", str(ROOT / "conf" / "node1.yaml"))
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["cluster"]["heartbeat_interval_ms"] == 200
    assert "lease TTL:             800 ms = heartbeat_interval_ms 200" in result.stdout
    assert "failover detection:    900 ms" in result.stdout


def test_check_bad_environment_override_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WALREP_CLUSTER__HEARTBEAT_INTERVAL_MS", "0")
    result = walrep("config", "check", "-c", str(ROOT / "conf" / "node1.yaml"))
    assert_clean_failure(result, 2, "set by WALREP_CLUSTER__HEARTBEAT_INTERVAL_MS")


def test_check_warns_about_an_unset_password_variable(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "node: {id: n1}\n"
        "datasources: [{name: WALREP_DB, url: 'mysql://db/x', password_env: T_UNSET_PW}]\n",
    )
    result = walrep("config", "check", "-c", str(path))
    assert result.exit_code == 0, result.output
    assert "warning: datasource WALREP_DB: password_env T_UNSET_PW is not set" in result.stderr


# --- import --------------------------------------------------------------------------


def test_import_to_stdout_validates_and_has_no_password() -> None:
    result = walrep("config", "import", str(SEED))
    assert result.exit_code == 0, result.output
    for secret in SEED_PASSWORDS:
        assert secret not in result.output
    config = yaml.safe_load(result.stdout)
    model = validate_without_env(config)
    assert model.cluster.datasource == "WSO2_CLUSTER_DB"
    assert "byteBufferExtractorThreadPoolSize" in result.stdout  # in the notes (comments)
    assert "export WALREP_DB_PASSWORD_WSO2_CLUSTER_DB=" in result.stdout


def test_import_to_a_file_then_check_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "node1.yaml"
    result = walrep("config", "import", str(SEED), "-o", str(out), "--node-id", "node1")
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stderr
    assert "note: deployment.config.byteBufferExtractorThreadPoolSize (5)" in result.stderr
    text = out.read_text()
    for secret in SEED_PASSWORDS:
        assert secret not in text and secret not in result.output
    config = load_config(out)
    assert config.node.id == "node1"
    assert config.cluster.heartbeat_interval_ms == 5000

    check = walrep("config", "check", "-c", str(out))
    assert check.exit_code == 0, check.output
    assert "failover detection:    35000 ms worst case" in check.stdout
    assert "password_env WALREP_DB_PASSWORD_WSO2_CLUSTER_DB is not set" in check.stderr
    monkeypatch.setenv("WALREP_DB_PASSWORD_WSO2_CLUSTER_DB", "x")
    assert "WSO2_CLUSTER_DB is not set" not in walrep("config", "check", "-c", str(out)).stderr

    again = walrep("config", "import", str(SEED), "-o", str(out))
    assert_clean_failure(again, 2, "exists: give --force")
    forced = walrep("config", "import", str(SEED), "-o", str(out), "--force")
    assert forced.exit_code == 0, forced.output
    assert load_config(out).node.id == "wso2-am_analytics"


def test_import_of_an_unusable_seed_exits_2(tmp_path: Path) -> None:
    seed = write(tmp_path, SEED.read_text().replace("type: ha", "type: distributed"), "dep.yaml")
    result = walrep("config", "import", str(seed))
    assert_clean_failure(result, 2, "deployment.config.type 'distributed' is not supported")
    broken = write(tmp_path, "cluster.config: [\n", "broken.yaml")
    assert_clean_failure(walrep("config", "import", str(broken)), 2, "not valid YAML")
