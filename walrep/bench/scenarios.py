"""The scenarios ``walrep bench`` runs, and the headline figures of each.

A scenario is a script in ``benchmarks/`` (it measures walrep and, in the same run, the
limit or the peer beside it) plus how the harness passes its settings and which figures
of the document it writes (``--json PATH``) go into the table: each ``Figure`` is walrep's
value, the reference beside it (the physical limit, or a peer) and their ratio, all from
that one run, with the target and whether it is met.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

Doc = dict[str, Any]
T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    """What the harness's options ask of every scenario (None: the scenario's default)."""

    duration_s: float | None = None
    rate: float | None = None
    batch: int | None = None
    quick: bool = False
    budget: bool = False  # ``walrep bench all``: every scenario within about 10 minutes

    def pick(self, full: T, budget: T, quick: T) -> T:
        """The value of this run's profile: a smoke run, ``all``'s budget, or a full run."""
        return quick if self.quick else budget if self.budget else full


@dataclass(frozen=True)
class Figure:
    scenario: str
    name: str
    value: float
    unit: str
    reference: str | None = None
    reference_value: float | None = None
    ratio: float | None = None
    target: str | None = None
    met: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Scenario:
    name: str
    script: str
    title: str
    args: Callable[[Settings], list[str]]
    figures: Callable[[Doc], list[Figure]]


def _num(text: Any) -> float | None:
    try:
        return float(str(text).split()[0].rstrip("x"))
    except (ValueError, IndexError):
        return None


# --- log append and replication: summary rows with ratio_to_raw -----------------------------


def _ratio_rows(scenario: str, doc: Doc, reference: str, targets: dict[str, float]) -> list[Figure]:
    out = []
    for row in doc.get("summary", []):
        ratio = row.get("ratio_to_raw")
        if ratio is None:
            continue
        mode = f", {row['mode']}" if row.get("mode") else ""
        name = f"{row['label']} x{row['batch']}{mode}"
        key = f"{row.get('case', row.get('impl'))}/{row['batch']}"
        goal = targets.get(key)
        out.append(
            Figure(
                scenario,
                name,
                float(row["events_per_s"]),
                "events/s",
                reference,
                float(row["events_per_s"]) / ratio if ratio else None,
                float(ratio),
                f">= {goal:.2f} of raw" if goal is not None else None,
                None if goal is None else ratio >= goal,
            )
        )
    return out


def _log_append(doc: Doc) -> list[Figure]:
    targets = {"append/1000": 0.6, "encoded/1000": 0.7}
    return _ratio_rows("log-append", doc, "raw os.write + fdatasync", targets)


def _replication(doc: Doc) -> list[Figure]:
    targets = {"walrep/1000": 0.7}
    return _ratio_rows("replication", doc, "raw pair (fdatasync + TCP)", targets)


def _seconds_args(s: Settings) -> list[str]:
    seconds = s.duration_s if s.duration_s is not None else s.pick(3.0, 1.0, 0.3)
    return ["--seconds", f"{seconds:g}", "--repeat", str(s.pick(3, 1, 1))]


# --- coordination ----------------------------------------------------------------------------


def _coordination(doc: Doc) -> list[Figure]:
    out = []
    for row in doc.get("table", []):
        what, limit, ratio = row["what"], row.get("limit", ""), _num(row.get("ratio"))
        if not limit or ratio is None or what.startswith("(diag)"):
            continue
        unit = "ms"
        ref = "implied by the timings" if "impl" in str(limit) else "raw CAS UPDATE"
        out.append(
            Figure(
                "coordination",
                f"{row['backend']}: {what} (p50)",
                float(row["p50"]),
                unit,
                ref,
                _num(limit),
                ratio,
            )
        )
    return out


def _coordination_args(s: Settings) -> list[str]:
    return s.pick([], ["--quick"], ["--quick", "--iterations", "50", "--failovers", "2"])


# --- engine and replay -----------------------------------------------------------------------


def _engine(doc: Doc) -> list[Figure]:
    out = []
    targets = doc.get("targets", {})
    for row in doc.get("apply", []):
        if row["case"] not in ("apim", "count"):
            continue
        rate = float(row["apply_events_per_s"])
        goal = targets.get(row["case"])
        out.append(
            Figure(
                "engine",
                f"{row['case']} apply from memory",
                rate,
                "events/s",
                "orjson decode of the same events",
                float(row["decode_events_per_s"]),
                rate / float(row["decode_events_per_s"]),
                f">= {goal:,.0f} events/s" if goal else None,
                None if not goal else rate >= goal,
            )
        )
    return out


def _engine_args(s: Settings) -> list[str]:
    return s.pick([], ["--quick"], ["--quick", "--keys", "10000"])


def _replay(doc: Doc) -> list[Figure]:
    rate = doc["events_per_s"]
    ratio = doc["replay_rate_over_apply"]
    verify = doc["verify_time_over_state"]
    return [
        Figure(
            "replay",
            "replay state (read, check, apply)",
            rate["replay"],
            "events/s",
            "engine in-memory apply",
            rate["apply"],
            ratio,
            ">= 0.90 of apply",
            ratio >= 0.9,
        ),
        Figure(
            "replay",
            "read only (LogSource)",
            rate["read"],
            "events/s",
            "orjson decode of the same events",
            rate["decode"],
            rate["read"] / rate["decode"],
        ),
        Figure(
            "replay",
            "verify, time",
            doc["seconds"]["verify"]["median"],
            "s",
            "state, time",
            doc["seconds"]["state"]["median"],
            verify,
            "<= 2x state",
            verify <= 2.0,
        ),
    ]


def _replay_args(s: Settings) -> list[str]:
    events = s.pick(1_000_000, 200_000, 20_000)
    return ["--events", str(events), "--repeat", str(s.pick(3, 1, 1))]


# --- end to end ------------------------------------------------------------------------------


def _e2e(doc: Doc) -> list[Figure]:
    cases = {r["case"]: r for r in doc.get("results", [])}
    out = []
    for mine, peer, goal in (
        ("http x500", "nats x500", 50_000.0),
        ("tcp x500", "nats x500", 200_000.0),
        ("tcp x1", "nats x1", 60_000.0),
    ):
        if mine in cases:
            rate = float(cases[mine]["events_per_s"])
            other = cases.get(peer)
            ref = float(other["events_per_s"]) if other else None
            out.append(
                Figure(
                    "e2e",
                    f"{mine} (fsync on both nodes)",
                    rate,
                    "events/s",
                    f"NATS JetStream {peer.split()[1]} ({other['settings']})" if other else None,
                    ref,
                    rate / ref if ref else None,
                    f">= {goal:,.0f} events/s",
                    rate >= goal,
                )
            )
    loop = next((r for c, r in cases.items() if c.startswith("tcp x1 open loop")), None)
    if loop:
        for key in ("p50_ms", "p99_ms", "p99.9_ms"):
            if key in loop:
                out.append(
                    Figure(
                        "e2e",
                        f"{loop['case']}: ack latency {key[:-3]} (HDR)",
                        float(loop[key]),
                        "ms",
                    )
                )
    memory = cases.get("memory (RSS of both nodes under load)")
    if memory:
        for node, peak in memory["max_mb"].items():
            if peak is not None:
                out.append(Figure("e2e", f"{node} peak RSS under load", float(peak), "MB"))
    fail = cases.get("failover (SIGKILL to first ack)")
    if fail:
        for key, goal in (("median_ms", 1000.0), ("p99_ms", 2000.0)):
            value = float(fail[key])
            out.append(
                Figure(
                    "e2e",
                    f"failover {key.split('_')[0]} ({fail['runs']} runs)",
                    value,
                    "ms",
                    None,
                    None,
                    None,
                    f"<= {goal:,.0f} ms",
                    value <= goal,
                )
            )
    switch = cases.get("switchover (longest gap between acks)")
    if switch:
        value = float(switch["median_ms"])
        out.append(
            Figure(
                "e2e",
                "switchover unavailability (median)",
                value,
                "ms",
                None,
                None,
                None,
                "<= 100 ms",
                value <= 100.0,
            )
        )
    return out


def _e2e_args(s: Settings) -> list[str]:
    seconds = s.duration_s if s.duration_s is not None else s.pick(5.0, 2.0, 1.0)
    args = [
        "--seconds",
        f"{seconds:g}",
        "--failovers",
        str(s.pick(20, 20, 2)),
        "--switchovers",
        str(s.pick(5, 3, 1)),
    ]
    if s.rate is not None:
        args += ["--rate", f"{s.rate:g}"]
    return args


def _sql_peers(doc: Doc) -> list[Figure]:
    rows = {r["case"]: r for r in doc["results"]}
    mine = rows["walrep append"]
    out = []
    for peer in ("sqlite", "mariadb", "postgresql"):
        row = rows.get(peer)
        if row is None:
            continue
        name = f"walrep append x{doc['batch']} beside {peer} inserts (1 tx per batch)"
        if "skipped" in row:
            out.append(
                Figure(
                    "sql-peers",
                    name,
                    mine["events_per_s"],
                    "events/s",
                    f"{peer}: skipped ({row['skipped']})",
                )
            )
            continue
        out.append(
            Figure(
                "sql-peers",
                name,
                mine["events_per_s"],
                "events/s",
                row["settings"],
                row["events_per_s"],
                mine["events_per_s"] / row["events_per_s"],
            )
        )
    return out


def _sql_args(s: Settings) -> list[str]:
    seconds = s.duration_s if s.duration_s is not None else s.pick(3.0, 2.0, 0.5)
    args = ["--seconds", f"{seconds:g}", "--repeat", str(s.pick(3, 1, 1))]
    return args + (["--batch", str(s.batch)] if s.batch is not None else [])


def _recovery(doc: Doc) -> list[Figure]:
    out = []
    for row in doc["results"]:
        if row["tail"] == 0:
            out.append(
                Figure(
                    "recovery",
                    "restart with no tail (open log + restore snapshot)",
                    row["total_s"],
                    "s",
                )
            )
            continue
        out.append(
            Figure(
                "recovery",
                f"restart with a tail of {row['tail']:,} events",
                row["total_s"],
                "s",
                "in-memory apply of that tail",
                row["tail_apply_in_memory_s"],
                row["total_s"] / row["tail_apply_in_memory_s"],
            )
        )
    return out


def _recovery_args(s: Settings) -> list[str]:
    tails = s.pick("0,50000,100000,200000,400000", "0,20000,50000,100000", "0,5000")
    return ["--tails", tails]


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "log-append",
            "log_append.py",
            "log append vs raw write + fdatasync",
            _seconds_args,
            _log_append,
        ),
        Scenario(
            "replication",
            "replication.py",
            "replicated append vs a raw TCP + fdatasync pair",
            _seconds_args,
            _replication,
        ),
        Scenario(
            "sql-peers",
            "sql_peers.py",
            "walrep append vs SQLite, MariaDB, PostgreSQL inserts",
            _sql_args,
            _sql_peers,
        ),
        Scenario(
            "coordination",
            "coordination.py",
            "lease calls vs raw CAS; failover, switchover",
            _coordination_args,
            _coordination,
        ),
        Scenario(
            "engine", "engine_apply.py", "engine apply vs orjson decode", _engine_args, _engine
        ),
        Scenario(
            "replay", "replay.py", "replay vs in-memory apply and orjson", _replay_args, _replay
        ),
        Scenario(
            "recovery",
            "recovery.py",
            "restart time against the log tail since the snapshot",
            _recovery_args,
            _recovery,
        ),
        Scenario(
            "e2e",
            "node_e2e.py",
            "two node processes, API-M app; NATS JetStream beside",
            _e2e_args,
            _e2e,
        ),
    )
}
