"""What the node core asks its executor to do: one ordered list of effects per input.

The node core (``walrep.node.core.NodeCore``) is sans-IO: every input (a tick, bytes on a
connection, a store answer, a log result, a publisher's request) returns a list of these
effects. Three executors carry them out and nothing more: the asyncio process
(``walrep.node.runtime``), the deterministic simulator (``tests/sim``) and the transcript
harness (``tests/replica/harness.py``). None of them decides anything; a rule that exists
in one executor only is a bug.

Ordering rules (in the spirit of raft's ``Ready``: persist before send), stated once:

* Effects of one list are carried out **in list order**. An effect that reports back (a
  store call, an append, a read, a sync, a connect) is an asynchronous request: its
  result is fed back as a new input whenever it completes, and the effects that input
  returns go **after** everything already queued (executors keep one FIFO queue and
  never recurse). So a result never overtakes effects emitted before it was asked for.
* **fsync before ack**: the core emits a replication ``Ack`` or a publisher ``Acked``
  only for offsets the log reports durable (``log.durable_end``, read after the append or
  sync that made them so) and, on the active, committed (durable on every in-sync node).
* **Lease gate**: ``Acked`` is emitted only while this node holds the lease by its own
  clock (``now_ms`` of the input before the lease's own-clock deadline); when the lease
  is lost every waiting request gets ``Failed`` with a retriable ``NotActiveError``.
* ``PersistState`` is carried out synchronously and is durable before the next effect:
  a node never acts on a committed offset or epoch it could forget by crashing.
* ``Truncate`` is carried out before anything after it in the list; the core only asks for
  it above the committed offset it knows (and the log refuses below its persisted floor).
* ``Close(cid)`` ends a connection: nothing is sent on ``cid`` after it, and bytes still
  arriving on it are never fed back (executors drop them: connection ids are never reused).
* ``Apply`` covers only offsets that are committed and durable in the local log, asked in
  offset order, one at a time (the next only after ``applied_to`` reported the last):
  the engine never sees an uncommitted offset, and state is reproducible from the log.
* ``Fatal`` means the node failed locally (its own log or disk): the executor stops
  serving at once and reports the error; the core has already failed every waiter.
"""

from __future__ import annotations

from dataclasses import dataclass

from walrep.errors import WalrepError
from walrep.log.replica_state import ReplicaState
from walrep.log.types import AppendResult
from walrep.replica.lease import Observed
from walrep.replica.store import NodeInfo

# --- connections -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connect:
    """Open a TCP connection to the peer's event-sync port; report ``connect_done(cid)``."""

    cid: int
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Send:
    """Write ``data`` (whole encoded messages) to connection ``cid``."""

    cid: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """Close connection ``cid``; ``by_peer`` tells "the peer broke it" from "we closed it"."""

    cid: int
    reason: str
    by_peer: bool


# --- the log -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppendEvents:
    """Append publisher request ``request``'s events under ``epoch``; report ``appended``."""

    request: int
    epoch: int


@dataclass(frozen=True, slots=True)
class AppendFrames:
    """Append verbatim WAL frames received from the active; report ``appended(token)``."""

    token: int
    frames: bytes
    base_offset: int
    end_offset: int


@dataclass(frozen=True, slots=True)
class ReadFrames:
    """Read whole frames from ``from_offset`` (at least one, then up to ``max_bytes``);
    report ``frames_read(token, ...)``."""

    token: int
    from_offset: int
    max_bytes: int


@dataclass(frozen=True, slots=True)
class Sync:
    """Force everything written to disk; report ``synced``."""


@dataclass(frozen=True, slots=True)
class Apply:
    """Apply the committed records ``[from_offset, to_offset)`` to the engine, in order.

    The executor may apply fewer (a bounded chunk); it reports ``applied_to(offset)`` with
    the engine's new position, and the core asks for the rest.
    """

    from_offset: int
    to_offset: int


@dataclass(frozen=True, slots=True)
class RestoreEngine:
    """A cold standby's promotion under ``epoch``: load (do not install) an engine from
    the newest snapshot this node may restore, if it is ahead of the engine's position,
    and report ``engine_restored(epoch, its applied offset or None)``. The engine in use
    stays until ``AdoptEngine(epoch)``: the report of a promotion that was abandoned
    meanwhile is ignored, and its engine never installed."""

    epoch: int


@dataclass(frozen=True, slots=True)
class AdoptEngine:
    """Install the engine ``RestoreEngine(epoch)`` loaded (the core has moved its applied
    offset to that engine's); drop any other loaded one. Before the next ``Apply``."""

    epoch: int


@dataclass(frozen=True, slots=True)
class Truncate:
    """Drop every event at or after ``to_offset``; report ``truncated``."""

    to_offset: int


@dataclass(frozen=True, slots=True)
class PersistState:
    """Save the replica state beside the epoch history (durable before the next effect)."""

    state: ReplicaState


# --- the coordination store ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Acquire:
    expected_epoch: int
    force: bool
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class Renew:
    epoch: int
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class Release:
    epoch: int


@dataclass(frozen=True, slots=True)
class SetInSync:
    epoch: int
    standby: str
    in_sync: bool
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class PublishNode:
    info: NodeInfo


@dataclass(frozen=True, slots=True)
class ReadNodes:
    """The group's node rows (the active looks up the passive's event-sync address)."""


StoreOp = Acquire | Renew | Release | SetInSync | PublishNode | ReadNodes
# What each op answers (None always means: failed, timed out or unknown):
# Acquire -> (won, Observed); Renew / Release / SetInSync -> bool; PublishNode -> True;
# ReadNodes -> list[NodeRow].
AcquireResult = tuple[bool, Observed]


@dataclass(frozen=True, slots=True)
class StoreCall:
    """Run ``op`` against the coordination store within ``timeout_ms``; report
    ``store_done(call, result or None)``."""

    call: int
    op: StoreOp
    timeout_ms: int


# --- publishers and the outside ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Acked:
    """Publisher request ``request`` is committed under a held lease: answer it."""

    request: int
    result: AppendResult


@dataclass(frozen=True, slots=True)
class Failed:
    """Publisher request ``request`` failed; nothing of it is acknowledged."""

    request: int
    error: WalrepError


@dataclass(frozen=True, slots=True)
class RoleChanged:
    """The node's role changed (the executor opens or closes ports by role, and logs)."""

    old: str
    new: str
    epoch: int
    reason: str


@dataclass(frozen=True, slots=True)
class StepDone:
    """A promotion step finished (logged and exported with its duration)."""

    epoch: int
    step: str
    duration_ms: int


@dataclass(frozen=True, slots=True)
class Notice:
    """Something an operator should see in the log (``level``: info, warning, error)."""

    level: str
    message: str


@dataclass(frozen=True, slots=True)
class Fatal:
    """The node failed locally (its log, its disk): stop serving; ``error`` names it."""

    error: WalrepError


Effect = (
    Connect
    | Send
    | Close
    | AppendEvents
    | AppendFrames
    | ReadFrames
    | Sync
    | Apply
    | RestoreEngine
    | AdoptEngine
    | Truncate
    | PersistState
    | StoreCall
    | Acked
    | Failed
    | RoleChanged
    | StepDone
    | Notice
    | Fatal
)
