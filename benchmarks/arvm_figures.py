"""γ-ARVM figures on a prepared run (issue: neural γ-ARVM): KL and sampling speed per mode.

    .venv/bin/python benchmarks/arvm_figures.py --run runs/default

- KL(q ‖ p) of each trained γ-ARVM, count-weighted, on the table's training contexts and on the
  contexts of the test split's latents (which no table saw), as recorded by train-arvm;
- sampling: grids/s of neural, hybrid and backoff sampling against exact search, in one run on
  the same tables, and the share of positions the γ-ARVM filled in hybrid samples.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from service.ngram.samples import SampleConfig
from service.run.paths import RunPaths
from service.run.record import read_run_json
from service.run.steps import load_sampler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/default"))
    parser.add_argument("--samples", type=int, default=4096)
    args = parser.parse_args()
    paths = RunPaths(args.run)
    run = read_run_json(paths)
    figures: dict[str, dict[str, object]] = {}
    for gamma in (3, 5, 7):
        arvm = run.get(f"arvm-g{gamma}")
        if arvm is None:
            figures[f"gamma={gamma}"] = {"skipped": "no γ-ARVM trained"}
            continue
        row: dict[str, object] = {
            "contexts": arvm["contexts"],
            "hidden": arvm["config"]["hidden"],
            "epochs": arvm["train"]["epochs"],
            "train_kl": arvm["train_kl"],
            "test_kl": arvm["test_kl"],
            "train_wall_s": arvm["wall_s"],
        }
        config = SampleConfig(n=args.samples, seed=1)
        speeds = {}
        for mode in ("exact", "backoff", "hybrid", "neural"):
            sampler = load_sampler(paths, gamma=gamma, mode=mode)
            sampler.sample(gamma, mode, SampleConfig(n=64, seed=99))  # warm-up
            started = time.perf_counter()
            batch = sampler.sample(gamma, mode, config)
            seconds = time.perf_counter() - started
            speeds[mode] = args.samples / seconds
            row[f"{mode}_grids_per_s"] = round(speeds[mode])
            row[f"{mode}_finished"] = round(float(batch.ok.mean()), 4)
            if mode == "hybrid":
                row["hybrid_neural_share"] = round(float(np.mean(batch.neural_share)), 4)
        for mode in ("backoff", "hybrid", "neural"):
            row[f"{mode}_vs_exact"] = round(speeds[mode] / speeds["exact"], 2)
        figures[f"gamma={gamma}"] = row
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
