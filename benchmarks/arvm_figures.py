"""γ-ARVM figures on a prepared run: the fallback's KL, throughput and held-out likelihood, and
sampling speed per mode.

    .venv/bin/python benchmarks/arvm_figures.py --run runs/default

- KL(q ‖ p) of each trained γ-ARVM, count-weighted, on the table's training contexts and on the
  report half of the test split (which no table saw and which did not choose the epoch), its
  stopping reason and contexts/s, as recorded by train-arvm;
- held-out likelihood (`latentgram evaluate`): test bits per token of the smoothed n-gram and of
  the table interpolated with the γ-ARVM, and the margin between them (the issue's target: the
  interpolated model ahead at every γ);
- sampling: grids/s of neural, hybrid and backoff sampling against exact search, in one run on
  the same tables, and the share of positions the γ-ARVM filled in hybrid samples.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from service.evaluation.likelihood import evaluate_run
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
    bits = evaluate_run(paths)["bits_per_token"]["test"]
    figures: dict[str, dict[str, object]] = {}
    for gamma in (3, 5, 7):
        arvm = run.get(f"arvm-g{gamma}")
        if arvm is None:
            figures[f"gamma={gamma}"] = {"skipped": "no γ-ARVM trained"}
            continue
        ngram, mixed = bits["ngram"][str(gamma)], bits["interpolated"].get(str(gamma))
        row: dict[str, object] = {
            "use": arvm["use"],
            "contexts": arvm["contexts"],
            "hidden": arvm["config"]["hidden"],
            "epochs": arvm["epochs"],
            "stopped": arvm["stopped"],
            "train_kl": arvm["train_kl"],
            "test_kl": arvm["test_kl"],
            "contexts_per_s": arvm["contexts_per_s"],
            "train_wall_s": arvm["wall_s"],
            "test_bits_ngram": ngram,
            "test_bits_interpolated": mixed,
            "interpolated_margin_bits": None if mixed is None else ngram - mixed,
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
