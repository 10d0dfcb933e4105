"""``node_settings``: the one mapping from configuration to the cores' settings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from walrep.config import load_config
from walrep.errors import ConfigError
from walrep.log.config import FsyncPolicy, LogConfig
from walrep.node.settings import APPEND_OVERHEAD_BYTES, NodeSettings, node_settings
from walrep.replica.shipper import ShipperConfig

ROOT = Path(__file__).resolve().parents[2]


def test_the_example_config_maps_onto_every_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WALREP_CLUSTER_SECRET", "s3cret")
    config = load_config(ROOT / "conf" / "node2.yaml")
    s = node_settings(config)
    assert (s.group, s.node_id, s.secret) == ("group-1", "node2", b"s3cret")
    assert s.lease.lease_ttl_ms == 1000 and s.lease.heartbeat_interval_ms == 250
    assert s.call_timeout_ms == s.lease.valid_for_ms == 750
    assert s.shipper.heartbeat_interval_ms == 250 and s.shipper.ack_all and s.shipper.degrade
    assert (s.advertised_host, s.advertised_port) == ("127.0.0.1", 9894)  # port_offset 1
    assert s.receiver_buffer_events_max == config.deployment.event_buffer_capacity
    assert s.log.fsync_policy is FsyncPolicy.ALWAYS
    assert s.log.recent_frames_bytes == config.log.recent_frames_bytes == 8 * 1024 * 1024
    assert "s3cret" not in repr(s)


def test_a_missing_secret_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WALREP_CLUSTER_SECRET", raising=False)
    file = tmp_path / "n.yaml"
    file.write_text("node: {id: n1}\n")
    with pytest.raises(ConfigError, match="WALREP_CLUSTER_SECRET is not set"):
        node_settings(load_config(file))


BASE = NodeSettings(group="g", node_id="n", secret=b"s")


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (
            {"max_message_bytes": 1024 * 1024, "log": LogConfig(max_batch_bytes=4 * 1024 * 1024)},
            "max_message_bytes",
        ),
        (
            {
                "max_message_bytes": 1024 * 1024,
                "shipper": ShipperConfig(read_bytes_max=1024 * 1024),
            },
            "read_bytes_max",
        ),
        ({"receiver_buffer_bytes_max": 1024}, "buffer_bytes_max"),
        ({"call_timeout_ms": 5000}, "db_call_timeout_ms"),
        (
            {"shipper": ShipperConfig(heartbeat_interval_ms=1000, standby_timeout_ms=900)},
            "standby_timeout_ms",
        ),
        ({"reconnect_backoff_ms": (500, 100)}, "reconnect_backoff_max_ms"),
    ],
)
def test_relations_that_cannot_work_are_refused(change: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        replace(BASE, **change)  # type: ignore[arg-type]


def test_a_message_holds_exactly_a_maximal_frame() -> None:
    log = LogConfig(
        max_event_bytes=64 * 1024,
        max_batch_bytes=2 * 1024 * 1024,
        segment_bytes_max=4 * 1024 * 1024,
    )
    fits = APPEND_OVERHEAD_BYTES + 42 + log.max_payload_bytes
    small_reads = ShipperConfig(read_bytes_max=256 * 1024)
    sized = replace(BASE, log=log, shipper=small_reads, receiver_buffer_bytes_max=fits)
    assert replace(sized, max_message_bytes=fits).max_message_bytes == fits
    with pytest.raises(ConfigError, match=r"must hold one frame of log\.max_batch_bytes"):
        replace(sized, max_message_bytes=fits - 1)
