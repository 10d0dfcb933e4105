"""Run the simulator: one seed with a trace, or a sweep of seeds.

    .venv/bin/python -m tests.sim.run --seed 42 -v
    .venv/bin/python -m tests.sim.run --seeds 100000 --start 0 --jobs 2

A failing seed prints exactly one line:
``FAIL seed=N: <invariant message> -- reproduce: .venv/bin/python -m tests.sim.run --seed N -v``
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

from tests.sim.cluster import RunResult, Simulation


def run_seed(seed: int) -> RunResult:
    return Simulation(seed).run()


def fail_line(result: RunResult) -> str:
    return (
        f"FAIL seed={result.seed}: {result.message} -- reproduce: "
        f".venv/bin/python -m tests.sim.run --seed {result.seed} -v"
    )


def sweep(seeds: range, jobs: int) -> Iterator[RunResult]:
    """Results in seed order; ``jobs`` worker processes (1: in this process)."""
    if jobs <= 1:
        yield from map(run_seed, seeds)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        yield from pool.map(run_seed, seeds, chunksize=16)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim.run", description=__doc__)
    parser.add_argument("--seed", type=int, help="run one seed")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every step")
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to sweep")
    parser.add_argument("--start", type=int, default=0, help="first seed of the sweep")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    args = parser.parse_args(argv)
    if args.seed is not None:
        result = Simulation(args.seed, verbose=args.verbose).run()
        if not result.ok:
            print(fail_line(result))
            return 1
        print(
            f"ok seed={result.seed}: {result.steps} steps, {result.end_ms} ms simulated, "
            f"trace {result.digest}"
        )
        if args.verbose:
            print(" ".join(f"{k}={v}" for k, v in result.stats.items()))
        return 0
    started, failures, totals = time.monotonic(), 0, {}  # type: ignore[var-annotated]
    for result in sweep(range(args.start, args.start + args.seeds), args.jobs):
        if not result.ok:
            failures += 1
            print(fail_line(result), flush=True)
        for key, value in result.stats.items():
            totals[key] = totals.get(key, 0) + value
    elapsed = time.monotonic() - started
    print(
        f"{args.seeds - failures}/{args.seeds} seeds ok from {args.start} in {elapsed:.1f} s; "
        + " ".join(f"{k}={v}" for k, v in sorted(totals.items())),
        file=sys.stderr,
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
