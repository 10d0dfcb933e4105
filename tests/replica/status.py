"""The ``status`` step's lines: what each node's core and log say, and the store's rows.

Read-only: role, epoch, the lease by the node's own clock, log and commit, persisted
replica state; on the active its shipper (connection, standby record, acked,
unprotected offsets) and admission counts; on a passive each open connection's
receiver; then the store's lease and in-sync records.
"""

from __future__ import annotations

from tests.replica import fmt
from tests.replica.executor import Slot, World, run_now
from walrep.replica import lease as lm


def status_lines(world: World) -> list[str]:
    lines: list[str] = []
    for slot in world.slots.values():
        lines += _node(world, slot)
    group = world.slot("a").settings.group
    seen = run_now(world.store.read_lease(group))
    records = run_now(world.store.in_sync_nodes(group))
    in_sync = " ".join(f"{n}@e{e}" for n, e in sorted(records.items())) or "nobody"
    lines.append(f"store: {fmt.lease(seen)}; in sync: {in_sync}")
    return lines


def _node(world: World, slot: Slot) -> list[str]:
    name, log = slot.name, slot.log
    if slot.crashed is not None:
        return [f"{name}: down (crashed); {fmt.state(slot.crashed.replica_state)}"]
    if slot.core is None:
        return [f"{name}: not started"]
    core = slot.core
    m = core.lease
    lease = (
        f"lease valid until {m.valid_until_ms}"
        if m.phase is lm.Phase.LEADER
        else f"lease {m.phase.value}"
    )
    lines = [
        f"{name}: {core.role.value} epoch={core.epoch} {lease} log=[{log.log_start},"
        f"{log.log_end}) durable={log.durable_end} committed={core.committed}"
        f" {fmt.state(log.replica_state)}"
    ]
    term = core.term
    if term is not None:
        s = term.shipper
        lines.append(
            f"{name}: shipper conn={s.conn.value} standby={s.standby} {s.standby_state.value}"
            f" acked={s.acked} unprotected={s.unprotected_offsets}"
            f" appends pending={term.pending} queued={len(term.queued)}"
        )
    for cid, inbound in sorted(core.receiving.conns.items()):
        if not inbound.open:
            continue
        conn = world.find(slot, cid)
        number = f"c{conn.number}" if conn is not None else f"cid {cid}"
        r = inbound.receiver
        slot_mark = " (writer)" if core.receiving.slot == cid else ""
        lines.append(
            f"{name}: receiving {number}{slot_mark} phase={r.phase.value}"
            f" committed={r.committed} told={r.told_committed}"
            f" wants_data={fmt.flag(r.wants_data())}"
        )
    return lines
