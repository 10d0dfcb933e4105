"""``walrep bench``: a real scenario end to end, a failing one reported as failed, and the
README table rewritten between its markers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from walrep.bench.harness import TABLE_BEGIN, TABLE_END, rewrite_readme, run_scenario, table
from walrep.bench.scenarios import Scenario, Settings

WALREP = str(Path(sys.executable).parent / "walrep")


def test_a_scenario_runs_in_its_own_process_and_reports_ratios_from_that_run(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.json"
    done = subprocess.run(
        [WALREP, "bench", "log-append", "--quick", "--duration", "0.2",
         "--results-dir", str(tmp_path / "results"), "--json", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(out.read_text())
    run = doc["scenarios"]["log-append"]
    assert run["ok"] and run["error"] is None
    assert run["command"].endswith(f"--json {run['command'].split('--json ')[1]}")
    assert doc["machine"]["cpu_count"] >= 1 and doc["machine"]["walrep_commit"]
    figures = run["figures"]
    assert any("x1000" in f["name"] for f in figures)
    for f in figures:  # each ratio is walrep / its reference, both measured in this run
        assert f["reference"] == "raw os.write + fdatasync" and f["value"] > 0
        assert abs(f["ratio"] - f["value"] / f["reference_value"]) < 1e-6
    saved = list((tmp_path / "results").glob("*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text()) == doc
    assert "| log-append |" in done.stdout  # the table, printed


def test_a_failing_scenario_is_reported_as_failed_with_its_output(tmp_path: Path) -> None:
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "fails.py").write_text(
        "import sys\nprint('measuring...')\nprint('the peer is not running', file=sys.stderr)\n"
        "sys.exit(3)\n"
    )
    (tmp_path / "benchmarks" / "empty.py").write_text(
        "import json, sys\nopen(sys.argv[sys.argv.index('--json') + 1], 'w').write('{}')\n"
    )
    seen: list[str] = []
    failing = Scenario("fails", "fails.py", "a failure", lambda s: [], lambda d: [])
    run = run_scenario(tmp_path, failing, Settings(), tmp_path / "log", seen.append)
    assert not run.ok and run.figures == []
    assert run.error is not None and "exit status 3" in run.error
    assert "the peer is not running" in run.error and seen == [
        "measuring...",
        "the peer is not running",
    ]

    def figures(doc: dict[str, object]) -> list[object]:
        return [doc["missing"]]

    empty = Scenario("empty", "empty.py", "no figures", lambda s: [], figures)  # type: ignore[arg-type]
    run = run_scenario(tmp_path, empty, Settings(), tmp_path / "log")
    assert not run.ok and run.error is not None and "lacks a figure" in run.error
    assert "$ " in (tmp_path / "log").read_text()  # every command is in the log


def test_the_readme_table_is_rewritten_between_its_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nprose before\n")
    doc = {
        "machine": {"date": "2026-12-01T10:00:00", "cpus_usable": 2, "cpu_model": "cpu",
                    "python": "3.11", "walrep_commit": "abc"},
        "scenarios": {
            "x": {"ok": True, "error": None, "command": "/p/python /r/benchmarks/x.py --json /t",
                  "figures": [{"name": "f", "value": 50.0, "unit": "events/s", "reference": "raw",
                               "reference_value": 100.0, "ratio": 0.5, "target": ">= 0.70",
                               "met": False}]},
            "y": {"ok": False, "error": "exit status 1: boom", "command": "c", "figures": []},
        },
    }  # fmt: skip
    text = table(doc, "r.json")
    assert "| x | f | 50 events/s | raw | 100 | 0.50 | >= 0.70 | **no** |" in text
    assert "| y | **failed**: exit status 1: boom |" in text
    assert "* `x`: `python benchmarks/x.py`" in text
    rewrite_readme(readme, text)
    rewrite_readme(readme, text.replace("0.50", "0.60"))
    body = readme.read_text()
    assert body.startswith("# Benchmarks\n\nprose before\n")
    assert body.count(TABLE_BEGIN) == 1 and body.count(TABLE_END) == 1
    assert "0.60" in body and "| 0.50 |" not in body
    readme.write_text(body + "\nprose after\n")
    rewrite_readme(readme, text)
    assert readme.read_text().endswith("prose after\n")


def test_the_plots_are_drawn_from_the_document(tmp_path: Path) -> None:
    from walrep.bench import plots

    figure = {"name": "f", "value": 50.0, "unit": "events/s", "reference": "raw",
              "reference_value": 100.0, "ratio": 0.5, "target": None, "met": None}  # fmt: skip
    e2e = {"results": [
        {"case": "failover (SIGKILL to first ack)", "runs": 3, "median_ms": 980.0,
         "all_ms": [900.0, 980.0, 1080.0],
         "phases_median_ms": {"lease_won": 910.0, "first_ack": 70.0}},
        {"case": "tcp x1 open loop 1,000/s", "p50_ms": 6.0, "p99_ms": 15.0,
         "over_time": [[0.0, 100, 7.5], [0.1, 100, 20.1]]},
        {"case": "memory (RSS of both nodes under load)", "during": "load",
         "nodes": ["node1", "node2"], "samples": [[0.0, 80.0, 75.0], [0.25, 90.0, None]]},
    ]}  # fmt: skip
    doc = {
        "machine": {"date": "2026-12-01", "cpus_usable": 2, "cpu_model": "cpu"},
        "scenarios": {"x": {"ok": True, "figures": [figure]},
                      "e2e": {"ok": True, "figures": [], "document": e2e},
                      "recovery": {"ok": True, "figures": [], "document": {"results": [
                          {"tail": 0, "open_log_s": 0.1, "restore_s": 0.5, "replay_s": 0.0,
                           "tail_apply_in_memory_s": 0.0},
                          {"tail": 5000, "open_log_s": 0.1, "restore_s": 0.5, "replay_s": 0.2,
                           "tail_apply_in_memory_s": 0.15}]}}},
    }  # fmt: skip
    assert plots.ratios(doc, tmp_path / "r.png") and plots.failover(doc, tmp_path / "f.png")
    assert plots.latency(doc, tmp_path / "l.png") and plots.memory(doc, tmp_path / "m.png")
    assert plots.recovery(doc, tmp_path / "c.png")
    for name in ("r.png", "f.png", "l.png", "m.png", "c.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc["scenarios"] = {"x": {"ok": False, "figures": []}}
    assert not plots.ratios(doc, tmp_path / "none.png") and not (tmp_path / "none.png").exists()
    assert not plots.failover(doc, tmp_path / "none.png")
    assert not plots.latency(doc, tmp_path / "none.png")
    assert not plots.memory(doc, tmp_path / "none.png")
    assert not plots.recovery(doc, tmp_path / "none.png")
