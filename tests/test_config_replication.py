"""Event-sync settings in the node configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from walrep.config import load_config
from walrep.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text("node:\n  id: n1\n" + text)
    return path


def test_replication_defaults_are_safe(tmp_path: Path) -> None:
    r = load_config(write(tmp_path, "")).deployment.replication
    assert (r.ack_policy, r.on_standby_loss, r.standby_timeout_ms) == ("all", "degrade", 1000)
    assert r.tls is None and r.secret_env == "WALREP_CLUSTER_SECRET"


def test_the_secret_comes_from_the_environment_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(
        write(tmp_path, "deployment:\n  replication:\n    secret_env: MY_SECRET\n")
    )
    monkeypatch.delenv("MY_SECRET", raising=False)
    with pytest.raises(ConfigError, match="MY_SECRET"):
        config.deployment.replication.secret()
    monkeypatch.setenv("MY_SECRET", "s3cret")
    assert config.deployment.replication.secret() == b"s3cret"
    assert "s3cret" not in repr(config)


def test_bad_policies_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"deployment\.replication\.ack_policy"):
        load_config(write(tmp_path, "deployment:\n  replication:\n    ack_policy: quorum\n"))
    with pytest.raises(ConfigError, match="on_standby_loss"):
        load_config(write(tmp_path, "deployment:\n  replication:\n    on_standby_loss: maybe\n"))


def test_environment_overrides_replication_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WALREP_DEPLOYMENT__REPLICATION__ON_STANDBY_LOSS", "block")
    assert load_config(write(tmp_path, "")).deployment.replication.on_standby_loss == "block"
