"""The HA group as JSON: what ``walrep cluster status|history --json`` print and what
the admin API's ``GET /cluster`` and ``GET /history`` answer (one copy of each shape)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from walrep.replica.lease import Observed
from walrep.replica.store import HistoryRow, NodeRow

_EPOCH_START: Final = datetime(1970, 1, 1, tzinfo=UTC)


def iso_utc(at_ms: int) -> str:
    """``2024-05-01T12:00:00.123Z`` from milliseconds since the Unix epoch."""
    moment = _EPOCH_START + timedelta(milliseconds=at_ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def group_document(
    group: str, lease: Observed, nodes: Iterable[NodeRow], in_sync: Mapping[str, int]
) -> dict[str, Any]:
    """The lease (on the database's clock), every node's published row, the in-sync
    standbys (``current``: recorded under the lease's epoch, so it may take over)."""
    expires_in_ms = lease.expires_at_ms - lease.db_now_ms
    return {
        "group": group,
        "db_now_ms": lease.db_now_ms,
        "lease": {
            "holder": lease.holder,
            "epoch": lease.epoch,
            "expires_at_ms": lease.expires_at_ms,
            "expires_in_ms": expires_in_ms,
            "expired": expires_in_ms <= 0,
            "maintenance": lease.maintenance,
        },
        "nodes": [
            {
                "node_id": row.info.node_id,
                "role": row.info.role,
                "event_sync": f"{row.info.event_sync_host}:{row.info.event_sync_port}",
                "admin_url": row.info.admin_url,
                "heartbeat_at_ms": row.heartbeat_at_ms,
                "heartbeat_age_ms": row.heartbeat_age_ms,
                "log_end": row.info.log_end,
                "acked": row.info.acked,
            }
            for row in nodes
        ],
        "in_sync": [
            {"node_id": node, "epoch": epoch, "current": epoch == lease.epoch}
            for node, epoch in sorted(in_sync.items())
        ],
    }


def history_document(rows: Iterable[HistoryRow]) -> list[dict[str, Any]]:
    """Lease changes, in the order given (the store gives newest first)."""
    return [
        {
            "epoch": r.epoch,
            "at_ms": r.at_ms,
            "at": iso_utc(r.at_ms),
            "from_node": r.from_node,
            "to_node": r.to_node,
            "reason": r.reason,
        }
        for r in rows
    ]
