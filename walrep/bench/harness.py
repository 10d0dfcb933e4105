"""Running scenarios, collecting one results document, rewriting the README table.

Every scenario runs in a fresh process (``python benchmarks/<script> ... --json PATH``),
one at a time (they measure the machine: two at once would measure each other), its
output lines kept in a log beside the results and shown on the terminal as it runs. A
scenario that fails (exit status, no document) is recorded as failed with the tail of
its output: never a figure it did not measure. The results document carries the
machine (cores, CPU model, file system, load before and after), versions, the settings,
and per scenario its command, duration, figures and whole document.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import walrep
from walrep.bench.machine import cpu_model
from walrep.bench.scenarios import SCENARIOS, Figure, Scenario, Settings

TABLE_BEGIN: Final = "<!-- walrep bench: table begin (generated: `walrep bench all`) -->"
TABLE_END: Final = "<!-- walrep bench: table end -->"
TAIL_LINES: Final = 20


def repo_root() -> Path:
    """The source checkout holding ``benchmarks/`` (the scenarios live there)."""
    root = Path(walrep.__file__).resolve().parent.parent
    if not (root / "benchmarks").is_dir():
        raise FileNotFoundError(
            f"walrep bench runs from a source checkout: {root / 'benchmarks'} is missing"
        )
    return root


@dataclass
class ScenarioRun:
    name: str
    command: list[str]
    seconds: float = 0.0
    ok: bool = False
    error: str | None = None
    figures: list[Figure] = field(default_factory=list)
    document: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "command": " ".join(self.command),
            "seconds": round(self.seconds, 1),
            "ok": self.ok,
            "error": self.error,
            "figures": [f.to_json() for f in self.figures],
            "document": self.document,
        }


def _command(root: Path, scenario: Scenario, settings: Settings, out: Path) -> list[str]:
    script = root / "benchmarks" / scenario.script
    return [sys.executable, str(script), *scenario.args(settings), "--json", str(out)]


def run_scenario(
    root: Path,
    scenario: Scenario,
    settings: Settings,
    log_path: Path,
    on_line: Callable[[str], None] = lambda _: None,
) -> ScenarioRun:
    """Run one scenario in a fresh process (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="walrep-bench-") as tmp:
        out = Path(tmp) / "result.json"
        command = _command(root, scenario, settings, out)
        run = ScenarioRun(scenario.name, command)
        tail: list[str] = []
        started = time.monotonic()
        with log_path.open("a") as log:
            log.write(f"$ {' '.join(command)}\n")
            with subprocess.Popen(
                command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                stdin=subprocess.DEVNULL,
            ) as proc:  # fmt: skip
                assert proc.stdout is not None
                for line in proc.stdout:
                    log.write(line)
                    tail = [*tail[-(TAIL_LINES - 1) :], line.rstrip()]
                    if line.strip():
                        on_line(line.rstrip())
                status = proc.wait()
        run.seconds = time.monotonic() - started
        if status != 0 or not out.exists():
            run.error = f"exit status {status}: " + " | ".join(tail[-5:])
            return run
        run.document = json.loads(out.read_text())
    try:
        run.figures = scenario.figures(run.document)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        run.error = f"its document lacks a figure: {type(e).__name__}: {e}"
        return run
    run.ok = True
    return run


def machine(root: Path) -> dict[str, Any]:
    cpu = cpu_model()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    return {
        "host": socket.gethostname(),
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_start": os.getloadavg(),
        "walrep": walrep.__version__,
        "walrep_commit": commit or "?",
    }


def results_document(
    settings: Settings, runs: Sequence[ScenarioRun], info: dict[str, Any]
) -> dict[str, Any]:
    info = {**info, "loadavg_end": os.getloadavg()}
    return {
        "harness": "walrep bench",
        "machine": info,
        "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
        "scenarios": {r.name: r.to_json() for r in runs},
    }


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "events/s" or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.1f}"


def table(document: dict[str, Any], results_name: str) -> str:
    """The README table: walrep beside its limit or peer, as ratios, from one run."""
    m = document["machine"]
    lines = [
        f"Measured by `walrep bench all` on {m['date'][:10]} ({m['cpus_usable']} cores, "
        f"{m['cpu_model']}, Python {m['python']}, commit {m['walrep_commit']}; "
        f"`benchmarks/results/{results_name}`). Ratios are walrep / reference, both from "
        "the same run.",
        "",
        "| scenario | figure | walrep | reference | reference value | ratio | target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    commands = []
    for name, run in document["scenarios"].items():
        commands.append(f"* `{name}`: `{_short(run['command'])}`")
        if not run["ok"]:
            lines.append(f"| {name} | **failed**: {run['error']} | | | | | | |")
            continue
        for f in run["figures"]:
            met = "" if f["met"] is None else ("yes" if f["met"] else "**no**")
            ratio = "-" if f["ratio"] is None else f"{f['ratio']:.2f}"
            lines.append(
                f"| {name} | {f['name']} | {_fmt(f['value'], f['unit'])} {f['unit']} | "
                f"{f['reference'] or '-'} | {_fmt(f['reference_value'], f['unit'])} | {ratio} | "
                f"{f['target'] or '-'} | {met} |"
            )
    return "\n".join([*lines, "", "Each figure comes from:", "", *commands])


def _short(command: str) -> str:
    """The command as a user types it (``python benchmarks/...``), not with full paths."""
    parts = command.split()
    if len(parts) >= 2 and "/benchmarks/" in parts[1]:
        parts = ["python", "benchmarks/" + parts[1].split("/benchmarks/", 1)[1], *parts[2:]]
    if "--json" in parts:
        parts = parts[: parts.index("--json")]
    return " ".join(parts)


def rewrite_readme(readme: Path, text: str) -> None:
    """Replace the table between the markers (appended with them if missing)."""
    body = readme.read_text()
    block = f"{TABLE_BEGIN}\n{text}\n{TABLE_END}"
    if TABLE_BEGIN in body and TABLE_END in body:
        head, rest = body.split(TABLE_BEGIN, 1)
        _, tail = rest.split(TABLE_END, 1)
        body = f"{head}{block}{tail}"
    else:
        body = body.rstrip("\n") + "\n\n## The table (`walrep bench all`)\n\n" + block + "\n"
    readme.write_text(body)


def scenario_names(names: Sequence[str]) -> list[Scenario]:
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise KeyError(f"unknown scenario {unknown}: the scenarios are {sorted(SCENARIOS)}")
    return [SCENARIOS[n] for n in names]
