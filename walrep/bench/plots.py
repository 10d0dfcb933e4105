"""Plots of a results document (matplotlib, drawn off-screen to PNG files).

* ``ratios``: every headline figure with a reference, as walrep / reference (1.0: level
  with the limit or the peer), green where its target is met, red where missed, grey
  where it has none;
* ``failover``: the e2e scenario's failovers, one bar per run (SIGKILL to the first
  event accepted by the new active) with the median, and the median of each phase;
* ``latency``: the e2e open-loop case's worst ack latency per 100 ms of due time;
* ``memory``: both nodes' resident memory over the e2e load cases;
* ``recovery``: restart time (open the log, restore the snapshot, replay the tail)
  against the tail's length, beside the in-memory apply of that tail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or wanted

import matplotlib.pyplot as plt


def ratios(document: dict[str, Any], path: Path) -> bool:
    """The ratio chart; False (nothing written) when no figure has a ratio."""
    rows = [
        (f"{name}: {f['name']}", f["ratio"], f["met"])
        for name, run in document["scenarios"].items()
        if run["ok"]
        for f in run["figures"]
        if f["ratio"] is not None
    ]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(11, 0.32 * len(rows) + 1.2))
    colors = ["#2e7d32" if m else "#c62828" if m is False else "#757575" for _, _, m in rows]
    ax.barh(range(len(rows)), [r for _, r, _ in rows], color=colors)
    ax.set_yticks(range(len(rows)), [label[:90] for label, _, _ in rows], fontsize=7)
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("walrep / reference (same run; log scale)")
    m = document["machine"]
    ax.set_title(
        f"walrep bench, {m['date'][:10]}, {m['cpus_usable']} cores, {m['cpu_model']}", fontsize=9
    )
    return _save(fig, path)


def failover(document: dict[str, Any], path: Path) -> bool:
    """The failover chart; False when the e2e scenario did not run or has no failovers."""
    run = document["scenarios"].get("e2e")
    if not run or not run["ok"] or run["document"] is None:
        return False
    case = next((r for r in run["document"]["results"] if r["case"].startswith("failover")), None)
    if case is None or not case.get("all_ms"):
        return False
    times = case["all_ms"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6), width_ratios=[3, 1])
    left.bar(range(1, len(times) + 1), times, color="#1565c0")
    left.axhline(
        case["median_ms"], color="black", linewidth=0.8, label=f"median {case['median_ms']:.0f} ms"
    )
    left.set_xlabel("run")
    left.set_ylabel("SIGKILL to first accepted event (ms)")
    left.legend(fontsize=8)
    phases = case.get("phases_median_ms", {})
    bottom = 0.0
    for name, ms in phases.items():
        right.bar([0], [ms], bottom=bottom, label=f"{name} {ms:.0f} ms")
        bottom += ms
    right.set_xticks([])
    right.set_title("phases (median)", fontsize=9)
    right.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"failover, {case['runs']} runs (two node processes, SQLite)", fontsize=10)
    return _save(fig, path)


def _e2e_case(document: dict[str, Any], prefix: str) -> dict[str, Any] | None:
    run = document["scenarios"].get("e2e")
    if not run or not run["ok"] or run["document"] is None:
        return None
    found = [r for r in run["document"]["results"] if r["case"].startswith(prefix)]
    return found[0] if found else None


def latency(document: dict[str, Any], path: Path) -> bool:
    case = _e2e_case(document, "tcp x1 open loop")
    if case is None or not case.get("over_time"):
        return False
    t = [row[0] for row in case["over_time"]]
    worst = [row[2] for row in case["over_time"]]
    fig, ax = plt.subplots(figsize=(11, 3.4))
    ax.plot(t, worst, linewidth=0.8, color="#6a1b9a", label="worst ack latency per 100 ms")
    for key, style in (("p50_ms", ":"), ("p99_ms", "--")):
        if key in case:
            ax.axhline(
                case[key],
                linestyle=style,
                color="black",
                linewidth=0.8,
                label=f"{key[:-3]} {case[key]:.2f} ms (HDR, whole run)",
            )
    ax.set_xlabel("due time (s)")
    ax.set_ylabel("ms (from when each event was due)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title(f"{case['case']}: latency over time (no coordinated omission)", fontsize=10)
    return _save(fig, path)


def memory(document: dict[str, Any], path: Path) -> bool:
    case = _e2e_case(document, "memory")
    if case is None or not case.get("samples"):
        return False
    fig, ax = plt.subplots(figsize=(11, 3.4))
    t = [row[0] for row in case["samples"]]
    for i, name in enumerate(case["nodes"]):
        ax.plot(t, [row[i + 1] for row in case["samples"]], label=name)
    ax.set_xlabel("s")
    ax.set_ylabel("RSS (MB)")
    ax.legend(fontsize=8)
    ax.set_title(f"resident memory of both nodes during {case['during']}", fontsize=10)
    return _save(fig, path)


def recovery(document: dict[str, Any], path: Path) -> bool:
    run = document["scenarios"].get("recovery")
    if not run or not run["ok"] or run["document"] is None:
        return False
    rows = run["document"]["results"]
    if not rows:
        return False
    tails = [r["tail"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    bottom = [0.0] * len(rows)
    width = max(tails) / (2.5 * len(rows)) if max(tails) else 1.0
    for key, label in (
        ("open_log_s", "open the log"),
        ("restore_s", "restore the snapshot"),
        ("replay_s", "replay the tail"),
    ):
        values = [r[key] for r in rows]
        ax.bar(tails, values, width=width, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.plot(
        tails,
        [r["tail_apply_in_memory_s"] for r in rows],
        "k--",
        marker="o",
        label="in-memory apply of the tail",
    )
    ax.set_xlabel("events in the log after the snapshot")
    ax.set_ylabel("seconds")
    ax.legend(fontsize=8)
    ax.set_title("restart time against the log tail (API-M app)", fontsize=10)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> bool:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
