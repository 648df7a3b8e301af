"""The paper's claim: a γ-ARVM trained to the end memorizes, and at the global γ its neural
samples copy training images (over 90 % in the paper), while at small γ they recombine.

    .venv/bin/python benchmarks/neural_memorization.py --run runs/default --images 1000

Takes the first N training images of a prepared run (its BL-AE and latents, no retraining;
--images 0 keeps them all), builds the table of each --gammas, trains the memorizer on it
(`latentgram train-arvm --use memorizer`: until the train KL is ≤ 1e-3 or --max-seconds pass),
draws --samples neural samples and prints, per γ: the KL reached and why training stopped, the
training's wall time and contexts/s, and the share of samples whose latent equals a training
latent exactly. The issue's CPU target: ≥ 90 % at γ = 7 (global on 4×4) within 5 minutes of
training, and far less at γ = 3.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from service.data.parquet import read_images, read_latents, write_images, write_latents
from service.ngram.samples import SampleConfig
from service.run.build import build_run_tables
from service.run.paths import RunPaths
from service.run.steps import load_sampler
from service.training.arvm import recipe, train_run_arvm


def subset_run(source: RunPaths, target: RunPaths, images: int) -> None:
    """The first `images` training images (and as many test images) of a run, same BL-AE."""
    target.root.mkdir(parents=True)
    for name in ("blae.safetensors", "blae.json", "run.json"):
        shutil.copy(source.root / name, target.root / name)
    ids, image_set = read_images(source.images)
    latents = read_latents(source.latents)
    keep = np.zeros(len(ids), bool)
    for split in ("train", "test"):
        keep[np.flatnonzero(image_set.splits == split)[: images or None]] = True
    write_images(target.images, image_set.select(keep), ids[keep])
    write_latents(target.latents, latents.select(keep))


def copy_rate(paths: RunPaths, gamma: int, samples: int, seed: int) -> float:
    """Share of neural samples whose latent is exactly a training latent."""
    sampler = load_sampler(paths, gamma=gamma, mode="neural")
    batch = sampler.sample(gamma, "neural", SampleConfig(n=samples, seed=seed))
    latents = read_latents(paths.latents)
    train = latents.select(latents.splits == "train").token_grids().tokens
    seen = {grid.tobytes() for grid in train.astype(np.int64)}
    return float(np.mean([grid.tobytes() in seen for grid in batch.tokens.astype(np.int64)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/default"))
    parser.add_argument("--images", type=int, default=1000, help="training images (0: all)")
    parser.add_argument("--gammas", default="3,7")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--max-seconds", type=float, default=300.0, help="training budget per γ")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    gammas = [int(g) for g in args.gammas.split(",")]
    figures: dict[str, object] = {"images": args.images or "all"}
    with tempfile.TemporaryDirectory() as tmp:
        paths = RunPaths(Path(tmp) / "run")
        subset_run(RunPaths(args.run), paths, args.images)
        build_run_tables(paths, gammas, progress=False)
        memorizer = recipe("memorizer", max_seconds=args.max_seconds, seed=args.seed)
        for gamma in gammas:
            summary = train_run_arvm(paths, gamma, use=memorizer, device=args.device)
            metrics = paths.arvm_metrics(gamma).read_text().splitlines()
            figures[f"gamma={gamma}"] = {
                "contexts": summary.contexts,
                "rows": summary.rows,
                "epochs": summary.epochs,
                "stopped": summary.stopped,
                "train_kl": summary.train_kl,
                "train_seconds": summary.wall_s,
                "contexts_per_s": summary.contexts_per_s,
                "exact_kl_by_epoch": [
                    (epoch["epoch"], round(epoch["train_kl"], 5))
                    for epoch in map(json.loads, metrics)
                    if "train_kl" in epoch
                ],
                "neural_exact_copy_rate": copy_rate(paths, gamma, args.samples, args.seed),
            }
            print(json.dumps({f"gamma={gamma}": figures[f"gamma={gamma}"]}), flush=True)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
