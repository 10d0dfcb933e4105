"""Carrying out store effects against a ``CoordinationStore``, and the store of a config.

``run_store_op`` is the one translation from a core's ``StoreOp`` to a store call; the
asyncio executor runs it under the effect's timeout (the simulator calls the same
function on its ``MemoryStore``). ``sql_store`` builds the ``SqlStore`` on the cluster
datasource of a configuration (the node and the operator commands share it).
"""

from __future__ import annotations

from walrep.config import WalrepConfig
from walrep.db import create_engine, normalize_url
from walrep.node.effects import (
    Acquire,
    PublishNode,
    ReadNodes,
    Release,
    Renew,
    SetInSync,
    StoreOp,
)
from walrep.replica.sql_store import SqlStore
from walrep.replica.store import CoordinationStore


async def run_store_op(store: CoordinationStore, group: str, node: str, op: StoreOp) -> object:
    """Run one store op; the result type per op is listed in ``walrep.node.effects``."""
    if isinstance(op, Acquire):
        return await store.try_acquire(group, node, op.expected_epoch, op.ttl_ms, force=op.force)
    if isinstance(op, Renew):
        return await store.renew(group, node, op.epoch, op.ttl_ms)
    if isinstance(op, Release):
        return await store.release(group, node, op.epoch)
    if isinstance(op, SetInSync):
        return await store.set_in_sync(group, node, op.epoch, op.standby, op.in_sync, op.ttl_ms)
    if isinstance(op, PublishNode):
        await store.publish_node(group, op.info)
        return True
    assert isinstance(op, ReadNodes), op
    return await store.nodes(group)


def sql_store(
    config: WalrepConfig, call_timeout_ms: int, *, pool_size: int | None = None
) -> SqlStore:
    """The coordination store on ``cluster.datasource`` (no tables are created here)."""
    datasource = config.datasource(config.cluster.datasource)
    url = normalize_url(
        datasource.url, username=datasource.username, password=datasource.resolved_password()
    )
    engine = create_engine(
        url,
        connect_timeout_ms=datasource.connect_timeout_ms,
        pool_size=pool_size or datasource.pool_size,
    )
    return SqlStore(
        engine, table_prefix=config.cluster.table_prefix, call_timeout_ms=call_timeout_ms
    )
