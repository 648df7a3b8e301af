"""Train a run's BL-AE: progress bar, evaluation each epoch, metrics JSONL, curve, checkpoints."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from models import (
    BLAE,
    BLAEConfig,
    BLAEMetrics,
    TrainConfig,
    evaluate_blae,
    pick_device,
    train_blae,
)
from service.checkpoints import load_blae, load_optimizer_state, save_blae
from service.errors import InvalidInputError
from service.plots import plot_training_curve
from service.run import RunPaths, update_run_json
from service.sources import ImageSet

log = logging.getLogger(__name__)

# Evaluation on full splits costs a fifth of an epoch: epochs before the last use subsets.
EVAL_TRAIN_IMAGES = 10_000  # train images evaluated after the last epoch
EVAL_SUBSET = 2_000  # train and test images evaluated after the other epochs


@dataclass(frozen=True)
class TrainingSummary:
    epochs_done: int
    wall_s: float  # this invocation's training time, evaluation included
    train: BLAEMetrics
    test: BLAEMetrics | None
    sha256: str


def _evaluate(
    model: BLAE, images: ImageSet, precision: str, final: bool = True
) -> tuple[BLAEMetrics, BLAEMetrics | None]:
    """Figures on the first 10k train images and the whole test split (2k of each if not final)."""
    limit = None if final else EVAL_SUBSET
    train = torch.from_numpy(images.split("train").images[: EVAL_TRAIN_IMAGES if final else limit])
    test_images = images.split("test").images[:limit]
    test = None
    if len(test_images):
        test = evaluate_blae(model, torch.from_numpy(test_images), precision=precision)
    return evaluate_blae(model, train, precision=precision), test


def train_autoencoder(
    paths: RunPaths,
    images: ImageSet,
    *,
    blae_config: BLAEConfig,
    train_config: TrainConfig,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    stop_epoch: int | None = None,
    data_record: dict[str, Any] | None = None,
) -> TrainingSummary:
    """Train (or resume) the run's BL-AE on the train split; checkpoint after every epoch.

    `data_record` (what the images are) goes into run.json once the inputs are checked, so a
    refused command leaves the run as it was.
    """
    train_images = images.split("train").images
    if len(train_images) == 0:
        raise InvalidInputError("the data source has no training images")
    c, h, w = images.shape
    if (c, h) != (blae_config.image_channels, blae_config.image_size) or h != w:
        raise InvalidInputError(
            f"BL-AE expects {blae_config.image_channels}×{blae_config.image_size}² images, "
            f"the data source has {c}×{h}×{w}"
        )
    try:
        dev = pick_device(device)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from exc
    start_epoch, optimizer = 0, None
    torch.manual_seed(train_config.seed)
    model = BLAE(blae_config).to(dev)
    if resume and paths.blae_weights.exists():
        checkpoint = load_blae(paths, device=dev)
        if checkpoint.model.config != blae_config:
            raise InvalidInputError(
                f"cannot resume {paths.blae_weights}: it was trained with a different BL-AE "
                "config; train into a new --run, or drop --resume to retrain from scratch"
            )
        model, start_epoch = checkpoint.model, checkpoint.epochs_done
        optimizer = torch.optim.Adam(model.parameters(), lr=train_config.lr)
        state = load_optimizer_state(paths)
        if state is not None:
            optimizer.load_state_dict(state)
        log.info("resuming from epoch %d of %s", start_epoch, paths.blae_weights)
    elif not resume:
        paths.blae_metrics.unlink(missing_ok=True)
    if data_record is not None:
        update_run_json(paths, "data", data_record)

    steps_per_epoch = -(-len(train_images) // train_config.batch_size)
    last = min(train_config.epochs, stop_epoch or train_config.epochs)
    polish = train_config.polish_steps(len(train_images)) if last == train_config.epochs else 0
    bar = tqdm(
        total=steps_per_epoch * max(last - start_epoch, 0) + polish * (start_epoch < last),
        desc="train BL-AE",
        unit="step",
        disable=not progress,
    )
    started = time.perf_counter()
    records = _read_records(paths)
    summary: dict[str, Any] = {}

    def on_step(step: int, loss: float) -> None:
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss:.4f}")

    def on_epoch(epoch: int, model: BLAE, optim: torch.optim.Optimizer) -> None:
        final = epoch == min(train_config.epochs, stop_epoch or train_config.epochs)
        train_m, test_m = _evaluate(model, images, train_config.precision, final=final)
        record = {
            "epoch": epoch,
            "full_evaluation": final,
            "elapsed_s": round(time.perf_counter() - started, 1),
            "train": asdict(train_m),
            "test": asdict(test_m) if test_m is not None else None,
        }
        records.append(record)
        paths.reports.mkdir(parents=True, exist_ok=True)
        with paths.blae_metrics.open("a") as f:
            f.write(json.dumps(record) + "\n")
        plot_training_curve(records, paths.blae_curve)
        summary["sha256"] = save_blae(
            paths, model, train_config=train_config, epochs_done=epoch, optimizer=optim
        )
        summary.update(train=train_m, test=test_m)
        shown = test_m or train_m
        bar.set_postfix(psnr_bin=f"{shown.psnr_binary:.2f}", brate=f"{shown.brate:.3f}")
        log.info("epoch %d: %s", epoch, record)

    opt_in = optimizer
    train_blae(
        model,
        torch.from_numpy(np.ascontiguousarray(train_images)),
        train_config,
        optimizer=opt_in,
        start_epoch=start_epoch,
        stop_epoch=stop_epoch,
        on_step=on_step,
        on_epoch=on_epoch,
    )
    bar.close()
    if not summary:  # nothing left to train: report the checkpoint as it is
        train_m, test_m = _evaluate(model, images, train_config.precision)
        summary.update(train=train_m, test=test_m, sha256=load_blae(paths).sha256)
    wall = time.perf_counter() - started
    epochs_done = max(start_epoch, min(train_config.epochs, stop_epoch or train_config.epochs))
    update_run_json(
        paths,
        "blae",
        {
            "config": blae_config.to_dict(),
            "train": train_config.to_dict(),
            "epochs_done": epochs_done,
            "device": str(dev),
            "wall_s": round(wall, 1),
            "weights_sha256": summary["sha256"],
            "train_metrics": asdict(summary["train"]),
            "test_metrics": asdict(summary["test"]) if summary["test"] else None,
        },
    )
    return TrainingSummary(
        epochs_done=epochs_done,
        wall_s=wall,
        train=summary["train"],
        test=summary["test"],
        sha256=summary["sha256"],
    )


def _read_records(paths: RunPaths) -> list[dict[str, Any]]:
    if not paths.blae_metrics.exists():
        return []
    return [json.loads(line) for line in paths.blae_metrics.read_text().splitlines() if line]
