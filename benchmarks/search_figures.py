"""Exact search: grids/s, the share finishing within the budget, and median backtracks and
jumps, per γ, on a prepared run, for the search with and without its pruning, and against an
earlier version of the code side by side.

    .venv/bin/python benchmarks/search_figures.py --run runs/default [--gammas 3,5,7]
    git worktree add --detach /tmp/search-before <commit>
    .venv/bin/python benchmarks/search_figures.py --run runs/default --baseline /tmp/search-before

Three searches on the same index: the plain depth-first search (one position back from a dead
end, no forward checking), forward checking alone, and forward checking with conflict-directed
backjumping (what `latentgram sample` runs). With --baseline, the default search of the code in
that checkout runs too, in a subprocess that imports it, on the same run. The searches take
turns over --rounds rounds; a ratio is the median of the per-round ratios. Each draws --samples
grids at temperature 1 with a budget of --budget steps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from service.ngram.exact import ExactSampler
from service.ngram.index import NgramIndex
from service.ngram.samples import SampleConfig
from service.ngram.store import list_tables, open_store
from service.run.paths import RunPaths

SEARCHES = {  # name → (forward checking, backjumping)
    "plain": (False, False),
    "forward_checking": (True, False),
    "pruned": (True, True),
}


def one_round(sampler: ExactSampler, samples: int, budget: int, seed: int) -> dict[str, float]:
    started = time.perf_counter()
    batch = sampler.sample(SampleConfig(n=samples, seed=seed, budget=budget))
    return {
        "grids_per_s": samples / (time.perf_counter() - started),
        "finished": round(float(batch.ok.mean()), 4),
        "median_backtracks": float(np.median(batch.backtracks)),
        "median_jumps": float(np.median(batch.jumps)),
        "mean_steps": round(float(batch.steps.mean()), 1),
    }


def baseline_round(args: argparse.Namespace, gamma: int, seed: int) -> dict[str, float]:
    """One round of the baseline checkout's default search, in a process that imports it."""
    command = [sys.executable, __file__, "--run", str(args.run.resolve()), "--worker"]
    command += [f"--gammas={gamma}", f"--samples={args.samples}", f"--budget={args.budget}"]
    command += [f"--rounds={seed}"]  # the worker's seed
    env = {**os.environ, "PYTHONPATH": str(args.baseline.resolve())}
    done = subprocess.run(
        command, cwd=args.baseline, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.splitlines()[-1])


def worker(args: argparse.Namespace) -> None:
    """The baseline's side: this file run with another checkout first on the path."""
    import service

    with open_store(RunPaths(args.run).store, read_only=True) as con:
        index = NgramIndex.load(con, int(args.gammas))
    sampler = ExactSampler(index)
    sampler.sample(SampleConfig(n=64, seed=99, budget=args.budget))  # warm-up
    figures = one_round(sampler, args.samples, args.budget, args.rounds)
    print(json.dumps({**figures, "code": str(Path(service.__file__).parent.parent)}))


def measure(index: NgramIndex, args: argparse.Namespace) -> dict[str, object]:
    samplers = {
        name: ExactSampler(index, forward_checking=fc, backjumping=bj)
        for name, (fc, bj) in SEARCHES.items()
    }
    for sampler in samplers.values():  # warm-up: weights, hash tables, compiled code
        sampler.sample(SampleConfig(n=64, seed=99, budget=args.budget))
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in samplers}
    if args.baseline:
        rounds["baseline"] = []
    for seed in range(args.rounds):
        for name, sampler in samplers.items():
            rounds[name].append(one_round(sampler, args.samples, args.budget, seed))
        if args.baseline:
            rounds["baseline"].append(baseline_round(args, index.gamma, seed))
    figures: dict[str, object] = {"contexts": index.info.contexts}
    for name, results in rounds.items():
        rates = np.array([r["grids_per_s"] for r in results])
        entry: dict[str, object] = {**results[0], "grids_per_s": round(float(np.median(rates)))}
        for other in ("plain", "baseline"):
            if other in rounds and other != name:
                theirs = np.array([r["grids_per_s"] for r in rounds[other]])
                entry[f"vs_{other}"] = round(float(np.median(rates / theirs)), 2)
        figures[name] = entry
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/default"))
    parser.add_argument("--gammas", default=None, help="comma-separated (default: every table)")
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="a checkout of the code to compare with")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    paths = RunPaths(args.run)
    figures: dict[str, object] = {"budget": args.budget, "samples": args.samples}
    with open_store(paths.require(paths.store, "build"), read_only=True) as con:
        tables = [t for t in list_tables(con) if not t.positional]
        indexes = [NgramIndex.load(con, t.gamma) for t in tables]
    wanted = {int(g) for g in args.gammas.split(",")} if args.gammas else None
    for index in indexes:
        if wanted is None or index.gamma in wanted:
            key = f"{index.info.grid_height}x{index.info.grid_width} gamma={index.gamma}"
            figures[key] = measure(index, args)
            print(json.dumps({key: figures[key]}), flush=True)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
