"""``walrep bench``: run benchmark scenarios side by side with their limits and peers.

``walrep bench list`` names the scenarios; ``walrep bench SCENARIO`` runs one;
``walrep bench all`` runs every one, writes ``benchmarks/results/<date>-<host>.json`` and
rewrites the table in benchmarks/README.md (``make bench``). Runs from a source checkout
(the scenarios are the scripts in ``benchmarks/``, each run in a fresh process).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from walrep.bench.harness import (
    ScenarioRun,
    machine,
    repo_root,
    results_document,
    rewrite_readme,
    run_scenario,
    scenario_names,
    table,
)
from walrep.bench.scenarios import SCENARIOS, Settings


def _settings_options(fn: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(
        [
            click.option(
                "--duration", type=float, help="Seconds per timed case (where it applies)."
            ),
            click.option("--rate", type=float, help="Offered events/s of the open-loop cases."),
            click.option("--batch", type=int, help="Events per batch (where it applies)."),
            click.option("--quick", is_flag=True, help="Shorter runs, one round: a smoke run."),
            click.option(
                "--json",
                "json_out",
                type=click.Path(dir_okay=False, path_type=Path),
                help="Write the results document here too.",
            ),
            click.option(
                "--results-dir",
                type=click.Path(file_okay=False, path_type=Path),
                help="Where results and logs go (default: benchmarks/results).",
            ),
            click.option(
                "--plot",
                type=click.Path(dir_okay=False, path_type=Path),
                help="Draw the ratios here (PNG; e2e: also -failover, -latency, -memory.png).",
            ),
        ]
    ):
        fn = option(fn)
    return fn


@click.group("bench", invoke_without_command=False)
def bench_group() -> None:
    """Benchmarks: walrep beside the physical limit and its peers, in one run."""


@bench_group.command("list")
def list_cmd() -> None:
    """The scenarios and what each measures."""
    for s in SCENARIOS.values():
        click.echo(f"{s.name:13s} {s.title}  (benchmarks/{s.script})")


def _scenario_command(name: str, title: str) -> click.Command:
    @_settings_options
    def command(
        duration: float | None,
        rate: float | None,
        batch: int | None,
        quick: bool,
        json_out: Path | None,
        results_dir: Path | None,
        plot: Path | None,
    ) -> None:
        settings = Settings(duration, rate, batch, quick)
        _run([name], settings, json_out, results_dir, plot, readme=False)

    command.__doc__ = f"{title[0].upper()}{title[1:]}."
    return click.command(name)(command)


for _scenario in SCENARIOS.values():
    bench_group.add_command(_scenario_command(_scenario.name, _scenario.title))


@bench_group.command("all")
@_settings_options
@click.option(
    "--readme/--no-readme", default=True, help="Rewrite the table in benchmarks/README.md."
)
def all_cmd(
    duration: float | None,
    rate: float | None,
    batch: int | None,
    quick: bool,
    json_out: Path | None,
    results_dir: Path | None,
    plot: Path | None,
    readme: bool,
) -> None:
    """Run every scenario; write the results, the plots and the README table."""
    settings = Settings(duration, rate, batch, quick, budget=True)
    _run(list(SCENARIOS), settings, json_out, results_dir, plot, readme=readme, plots=True)


def _draw(document: dict[str, object], plot: Path | None, default: Path | None) -> list[Path]:
    """The ratio plot at ``plot`` (else ``default``), the failover plot beside it."""
    from walrep.bench import plots  # matplotlib is imported only when a plot is drawn

    target = plot or default
    if target is None:
        return []
    drawn = []
    if plots.ratios(document, target):
        drawn.append(target)
    for kind, draw in (
        ("failover", plots.failover),
        ("latency", plots.latency),
        ("memory", plots.memory),
        ("recovery", plots.recovery),
    ):
        beside = target.with_name(f"{target.stem}-{kind}.png")
        if draw(document, beside):
            drawn.append(beside)
    return drawn


def _run(
    names: list[str],
    settings: Settings,
    json_out: Path | None,
    results_dir: Path | None,
    plot: Path | None,
    *,
    readme: bool,
    plots: bool = False,
) -> None:
    try:
        root = repo_root()
        scenarios = scenario_names(names)
    except (FileNotFoundError, KeyError) as e:
        raise click.UsageError(str(e.args[0] if isinstance(e, KeyError) else e)) from None
    info = machine(root)
    stamp = datetime.now().strftime("%Y-%m-%dT%H%M%S")
    results = results_dir or root / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    name = f"{stamp}-{info['host']}.json"
    log_path = results / f"{stamp}-{info['host']}.log"
    console = Console(stderr=True)
    runs: list[ScenarioRun] = []
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[scenario]}"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        for scenario in scenarios:
            task = bar.add_task("starting", scenario=scenario.name, total=1)

            def show(line: str, task: TaskID = task) -> None:
                bar.update(task, description=line[:90])

            run = run_scenario(root, scenario, settings, log_path, show)
            verdict = f"done in {run.seconds:.0f} s" if run.ok else f"[red]FAILED[/red] {run.error}"
            bar.update(task, description=verdict, completed=1)
            runs.append(run)
    document = results_document(settings, runs, info)
    (results / name).write_text(json.dumps(document, indent=2) + "\n")
    if json_out is not None:
        json_out.write_text(json.dumps(document, indent=2) + "\n")
    drawn = _draw(document, plot, results / f"{stamp}-{info['host']}.png" if plots else None)
    text = table(document, name)
    if readme:
        rewrite_readme(root / "benchmarks" / "README.md", text)
    Console(soft_wrap=True).print(text, markup=False, highlight=False)
    console.print(f"results: {results / name}; output of the scenarios: {log_path}")
    for path in drawn:
        console.print(f"plot: {path}")
    if not all(r.ok for r in runs):
        sys.exit(1)
