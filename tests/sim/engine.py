"""The engine in the simulator: the production ``Engine`` on every node, snapshots in a
simulated store, and the reference run that the digest invariant compares against.

Each node runs ``walrep.engine.Engine`` behind ``NodeCore``'s ``Apply`` effects, with the
same ``apply_committed`` as production. The active snapshots its engine now and then to
``SimSnapshots`` (fenced by epoch like the real stores); a node that boots restores the
newest snapshot it can use (at or below its persisted committed floor and its durable
end, at or above its log start) and replays the log after it, or replays from 0.

**Invariant 10**: the digest an engine reports at offset N (``DigestPoint``, every
``DIGEST_INTERVAL`` offsets) equals the digest of a *reference* engine that applied the
committed records ``[0, N)`` once, in one straight run. The reference advances lazily,
reading the committed prefix from the reporting node's log (invariants 1-2 keep committed
prefixes equal on all nodes); a forced takeover, which may write off committed events,
starts a new reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from walrep.engine.app import App, count, distinct_count, max_, sum_
from walrep.engine.core import DigestPoint, Engine
from walrep.engine.types import SnapshotMeta
from walrep.log.types import Record

DIGEST_INTERVAL = 25


def sim_app() -> App:
    """The simulator's app: its events are ``{"n", "by", "epoch"}`` (or a blob: rejected,
    and counted, deterministically), timed by ingest time."""
    app = App("sim", version="1")
    app.stream("sim", {"n": "long", "by": "string", "epoch": "long"})
    app.aggregation(
        "SimPerNode",
        from_="sim",
        group_by=["by"],
        aggregates=[count("events"), sum_("total", of="n"), max_("last", of="n")],
        carried=["epoch"],
        every=("sec", "hour"),
        retention={"sec": "5 sec", "min": "2 min"},
    )
    app.table("SimEpochs", from_="sim", key=["epoch"], values=[count("events")])
    app.aggregation(
        "SimDistinct",
        from_="sim",
        group_by=["epoch"],
        aggregates=[distinct_count("writers", of="by")],
        every=("sec", "min"),
    )
    return app


APPS = [sim_app()]


@dataclass
class SimSnapshots:
    """The snapshot store: fenced by epoch like the real ones (a lower epoch is refused)."""

    saved: list[tuple[SnapshotMeta, bytes]] = field(default_factory=list)
    fence_epoch: int = 0
    refused: int = 0

    def save(self, meta: SnapshotMeta, state: bytes) -> bool:
        if meta.epoch < self.fence_epoch:
            self.refused += 1
            return False
        self.fence_epoch = meta.epoch
        self.saved.append((meta, state))
        return True

    def newest(self, usable: Callable[[SnapshotMeta], bool]) -> tuple[SnapshotMeta, bytes] | None:
        """The newest snapshot (highest offset, then epoch) that ``usable`` accepts."""
        found = [s for s in self.saved if usable(s[0])]
        return max(found, key=lambda s: (s[0].offset, s[0].epoch), default=None)


class Reference:
    """A straight run over the committed history: the digest at every digest point."""

    def __init__(self) -> None:
        self.engine = Engine(APPS, digest_interval=DIGEST_INTERVAL, track_changes=False)
        self.digests: dict[int, str] = {}
        self.checked = 0
        self.unreadable = 0

    def digest_at(self, offset: int, records: list[Record] | None) -> str | None:
        """The reference digest at ``offset``; ``records`` continue the run from where it
        is (None: not readable from the reporting node, e.g. deleted by retention)."""
        if offset in self.digests:
            return self.digests[offset]
        if offset < self.engine.applied:
            return None  # passed before anyone reported it: nothing to compare
        if records is None:
            self.unreadable += 1
            return None
        for out in self.engine.apply(records):
            if isinstance(out, DigestPoint):
                self.digests[out.offset] = out.digest()
        return self.digests.get(offset)
