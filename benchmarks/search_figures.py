"""Exact search with and without its pruning: grids/s, the share finishing within the budget, and
median backtracks and jumps, per γ, on a prepared run.

    .venv/bin/python benchmarks/search_figures.py --run runs/default [--gammas 3,5,7]

Three searches on the same index, interleaved over --rounds rounds (a ratio is the median of the
per-round ratios): the plain depth-first search (one position back from a dead end, no forward
checking), forward checking alone, and forward checking with conflict-directed backjumping (what
`latentgram sample` runs). Each draws --samples grids at temperature 1 with a budget of --budget
steps.
"""

from __future__ import annotations

import argparse
import json
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


def measure(index: NgramIndex, samples: int, budget: int, rounds: int) -> dict[str, object]:
    samplers = {
        name: ExactSampler(index, forward_checking=fc, backjumping=bj)
        for name, (fc, bj) in SEARCHES.items()
    }
    rates: dict[str, list[float]] = {name: [] for name in SEARCHES}
    figures: dict[str, object] = {"contexts": index.info.contexts}
    for sampler in samplers.values():  # warm-up: weights, filters
        sampler.sample(SampleConfig(n=64, seed=99, budget=budget))
    for round_ in range(rounds):
        for name, sampler in samplers.items():
            started = time.perf_counter()
            batch = sampler.sample(SampleConfig(n=samples, seed=round_, budget=budget))
            rates[name].append(samples / (time.perf_counter() - started))
            if round_ == 0:
                figures[name] = {
                    "finished": round(float(batch.ok.mean()), 4),
                    "median_backtracks": float(np.median(batch.backtracks)),
                    "median_jumps": float(np.median(batch.jumps)),
                    "mean_steps": round(float(batch.steps.mean()), 1),
                }
    for name in SEARCHES:
        entry = figures[name]
        assert isinstance(entry, dict)
        entry["grids_per_s"] = round(float(np.median(rates[name])))
        entry["vs_plain"] = round(float(np.median(np.array(rates[name]) / rates["plain"])), 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/default"))
    parser.add_argument("--gammas", default=None, help="comma-separated (default: every table)")
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    paths = RunPaths(args.run)
    figures: dict[str, object] = {"budget": args.budget, "samples": args.samples}
    with open_store(paths.require(paths.store, "build"), read_only=True) as con:
        tables = [t for t in list_tables(con) if not t.positional]
        wanted = {int(g) for g in args.gammas.split(",")} if args.gammas else None
        for table in tables:
            if wanted is None or table.gamma in wanted:
                index = NgramIndex.load(con, table.gamma)
                grid = f"{table.grid_height}x{table.grid_width}"
                key = f"{grid} gamma={table.gamma}"
                figures[key] = measure(index, args.samples, args.budget, args.rounds)
                print(json.dumps({key: figures[key]}), flush=True)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
