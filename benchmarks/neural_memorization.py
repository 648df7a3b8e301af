"""Does the neural mode copy training images once its γ-ARVM has learned the table?

    .venv/bin/python benchmarks/neural_memorization.py --run runs/default --images 2000

The default run's γ-ARVMs get one CPU epoch and stay far from the paper's KL, and its neural
samples copy nothing. This experiment separates the method from that budget: it takes the first
N training images of a prepared run (its BL-AE and latents, no retraining), builds the global
γ = 7 table, trains the γ-ARVM for as many epochs as a small table allows, and prints after each
round its KL and the exact-copy rate of neural samples (the paper: over 90 % at global γ).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from models import ARVMTrainConfig
from service.data.parquet import read_images, read_latents, write_images, write_latents
from service.evaluation.report import ClosenessMeter
from service.ngram.samples import SampleConfig
from service.run.loaded import LoadedRun
from service.run.paths import RunPaths
from service.run.steps import build_run_tables
from service.training.arvm import train_run_arvm

GAMMA = 7  # global on a 4×4 grid


def subset_run(source: RunPaths, target: RunPaths, images: int) -> None:
    """The first `images` training images (and as many test images) of a run, same BL-AE."""
    target.root.mkdir(parents=True)
    for name in ("blae.safetensors", "blae.json", "run.json"):
        shutil.copy(source.root / name, target.root / name)
    ids, image_set = read_images(source.images)
    latents = read_latents(source.latents)
    keep = np.zeros(len(ids), bool)
    for split in ("train", "test"):
        keep[np.flatnonzero(image_set.splits == split)[:images]] = True
    write_images(target.images, image_set.select(keep), ids[keep])
    write_latents(target.latents, latents.select(keep))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/default"))
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=10, help="γ-ARVM epochs per round")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--samples", type=int, default=1000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = RunPaths(Path(tmp) / "run")
        subset_run(RunPaths(args.run), paths, args.images)
        build_run_tables(paths, (GAMMA,), progress=False)
        for round_ in range(1, args.rounds + 1):
            epochs = round_ * args.epochs  # each round trains from scratch, longer
            summary = train_run_arvm(
                paths,
                GAMMA,
                config=ARVMTrainConfig(epochs=epochs, batch_size=256),
                hidden=args.hidden,
                progress=False,
            )
            engine = LoadedRun.load(paths.root)
            generated = engine.sample(
                gamma=GAMMA, mode="neural", config=SampleConfig(n=args.samples, seed=0)
            )
            ok = generated.batch.ok
            closeness = ClosenessMeter(engine.neighbours).measure(
                generated.images[ok], engine.pack_tokens(generated.batch.tokens[ok])
            )
            rows.append(
                {
                    "epochs": epochs,
                    "train_kl": round(summary.train_kl, 5),
                    "test_kl": round(summary.test_kl or float("nan"), 3),
                    "train_s": round(summary.wall_s, 1),
                    "neural_exact_copy_rate": round(float(closeness.exact_copy.mean()), 4),
                    "neural_memorized_vs_reconstructions": round(
                        float(closeness.memorized_reconstruction.mean()), 4
                    ),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    print(
        json.dumps({"training_images": args.images, "contexts": summary.contexts, "rounds": rows})
    )


if __name__ == "__main__":
    main()
