"""Per latent grid, per γ: what the table costs and how the exact search does, for prepared runs
of different grids side by side (4×4×12 `default`, 8×8×4 `grid8`, 16×16×1 `grid16`).

    .venv/bin/python benchmarks/grid_figures.py --runs runs/default,runs/grid8

For each non-positional table: its build time, windows, contexts, rows and index size in memory;
then the exact search as `latentgram sample` runs it (forward checking and backjumping) drawing
--samples grids with a budget of --budget steps: grids/s, the share finishing within the budget,
median backtracks and jumps.
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
from service.ngram.store import TableInfo, list_tables, open_store
from service.run.paths import RunPaths


def table_figures(index: NgramIndex, info: TableInfo, samples: int, budget: int) -> dict:
    sampler = ExactSampler(index)
    sampler.sample(SampleConfig(n=16, seed=99, budget=budget))  # warm-up: weights, filters
    started = time.perf_counter()
    batch = sampler.sample(SampleConfig(n=samples, seed=0, budget=budget))
    seconds = time.perf_counter() - started
    return {
        "build_s": round(info.build_seconds, 2),
        "windows": info.windows,
        "contexts": info.contexts,
        "rows": info.rows,
        "index_mb": round(index.nbytes / 2**20, 1),
        "grids_per_s": round(samples / seconds, 1),
        "finished": round(float(batch.ok.mean()), 3),
        "median_backtracks": float(np.median(batch.backtracks)),
        "median_jumps": float(np.median(batch.jumps)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/default", help="comma-separated run folders")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--budget", type=int, default=1000)
    args = parser.parse_args()
    figures: dict[str, dict] = {}
    for run in args.runs.split(","):
        paths = RunPaths(Path(run))
        with open_store(paths.require(paths.store, "build"), read_only=True) as con:
            for info in (t for t in list_tables(con) if not t.positional):
                index = NgramIndex.load(con, info.gamma)
                key = f"{run} {info.grid_height}x{info.grid_width} gamma={info.gamma}"
                figures[key] = table_figures(index, info, args.samples, args.budget)
                print(json.dumps({key: figures[key]}), flush=True)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
