"""Train a run's BL-AE: progress bar, evaluation each epoch, metrics JSONL, curve, checkpoints.

latentgram train-ae --run runs/r1 --epochs 7      # what this module does, from the command line
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from models import (
    BLAE,
    BLAEConfig,
    BLAEMetrics,
    BLAETrainConfig,
    blae_preset,
    collapse_reason,
    evaluate_blae,
    train_blae,
)
from models.common import adam
from service.checkpoint import save_checkpoint
from service.data.fingerprint import check_same_data, data_record
from service.data.sources import DataSpec, ImageSet
from service.devices import resolve_device
from service.errors import InvalidInputError
from service.evaluation.plots import plot_training_curve
from service.files import atomic_path, write_atomic
from service.run.models import blae_training_data, load_blae
from service.run.paths import RunPaths
from service.run.record import update_run_json

log = logging.getLogger(__name__)

# Evaluation on full splits costs a fifth of an epoch: epochs before the last use subsets.
EVAL_TRAIN_IMAGES = 10_000  # train images evaluated after the last epoch
EVAL_SUBSET = 2_000  # train and test images evaluated after the other epochs
# A collapse shows early: the first epoch is probed on a few training images every so many steps,
# so a run that will not recover says so in its first minutes, not after its last epoch.
PROBE_IMAGES = 512
PROBE_EVERY = 100  # steps
COLLAPSE_HINT = "lower --lr, or try another --preset; the run goes on"


@dataclass(frozen=True)
class TrainingSummary:
    epochs_done: int
    wall_s: float  # this invocation's training time, evaluation included
    train: BLAEMetrics
    test: BLAEMetrics | None
    sha256: str


def train_run_autoencoder(
    paths: RunPaths,
    data: DataSpec,
    *,
    preset: str = "default",
    overrides: dict[str, Any] | None = None,
    train_config: BLAETrainConfig | None = None,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    stop_epoch: int | None = None,
    checkpoint_every: int = 1,
) -> TrainingSummary:
    """Load the data, build the preset's config for its image shape, and train (or resume)."""
    images = data.load()
    c, h, _ = images.shape
    try:
        config = blae_preset(preset, image_channels=c, image_size=h, **(overrides or {}))
    except ValueError as exc:  # the config's own checks, phrased for users
        raise InvalidInputError(str(exc)) from exc
    trainer = AutoencoderTraining(
        paths,
        images,
        config,
        train_config or BLAETrainConfig.for_preset(preset),
        data_record(data, images),
        checkpoint_every=checkpoint_every,
    )
    return trainer.run(resume=resume, device=device, progress=progress, stop_epoch=stop_epoch)


def save_blae(
    paths: RunPaths,
    model: BLAE,
    *,
    train_config: BLAETrainConfig,
    epochs_done: int,
    optimizer: torch.optim.Optimizer | None = None,
    data: dict[str, Any] | None = None,
) -> str:
    """Checkpoint the BL-AE (and the optimizer state, for --resume) with the record of its
    training data (service/data/fingerprint.py); returns the weights' sha256."""
    if optimizer is not None:
        with atomic_path(paths.blae_optimizer) as tmp:
            torch.save(optimizer.state_dict(), tmp)
    return save_checkpoint(
        paths.blae_weights, model, train=train_config.to_dict(), epochs_done=epochs_done, data=data
    )


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


@dataclass
class AutoencoderTraining:
    """One train-ae invocation: checks, resuming, the per-epoch record, the run.json entry."""

    paths: RunPaths
    images: ImageSet
    config: BLAEConfig
    train_config: BLAETrainConfig
    data: dict[str, Any] | None = None  # data_record() of the images; None: record nothing
    # Epochs between checkpoints (the last is always saved): paper-t1's weights and optimizer
    # state are 1 GB, seconds to write where a GPU trains an epoch in about as long.
    checkpoint_every: int = 1
    records: list[dict[str, Any]] = field(default_factory=list)
    last: dict[str, Any] = field(default_factory=dict)  # the latest metrics and checksum

    def run(
        self,
        *,
        resume: bool,
        device: str,
        progress: bool,
        stop_epoch: int | None,
    ) -> TrainingSummary:
        """Train (or resume) on the train split; checkpoint every `checkpoint_every` epochs.

        The data record goes into run.json once the inputs are checked, so a refused command
        leaves the run as it was.
        """
        train_images = self._check_images()
        dev = resolve_device(device)
        model, start_epoch, optimizer = self._start(resume, dev)
        if self.data is not None:
            update_run_json(self.paths, "data", self.data)
        last_epoch = min(self.train_config.epochs, stop_epoch or self.train_config.epochs)
        bar = self._progress_bar(len(train_images), start_epoch, last_epoch, progress)
        started = time.perf_counter()
        self.records = _read_records(self.paths, start_epoch)

        probe = torch.from_numpy(np.ascontiguousarray(train_images[:PROBE_IMAGES]))
        first_epoch = True  # probed until the first epoch ends

        def on_step(step: int, loss: float) -> None:
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss:.4f}")
            if first_epoch and step % PROBE_EVERY == PROBE_EVERY - 1:
                metrics = evaluate_blae(model, probe, precision=self.train_config.precision)
                trained = start_epoch * self.train_config.steps_per_epoch(len(train_images))
                trained += step + 1
                reason = collapse_reason(metrics, len(probe), trained)
                if reason:
                    _warn(bar, f"the BL-AE code collapsed at step {step + 1}: {reason}")

        def on_epoch(epoch: int, model: BLAE, optim: torch.optim.Optimizer) -> None:
            nonlocal first_epoch
            first_epoch = False
            shown = self._end_epoch(epoch, model, optim, epoch == last_epoch, started, bar)
            bar.set_postfix(psnr_bin=f"{shown.psnr_binary:.2f}", brate=f"{shown.brate:.3f}")

        train_blae(
            model,
            torch.from_numpy(np.ascontiguousarray(train_images)),
            self.train_config,
            optimizer=optimizer,
            start_epoch=start_epoch,
            stop_epoch=stop_epoch,
            on_step=on_step,
            on_epoch=on_epoch,
        )
        bar.close()
        if not self.last:  # nothing left to train: report the checkpoint as it is
            train_m, test_m = _evaluate(model, self.images, self.train_config.precision)
            self.last.update(train=train_m, test=test_m, sha256=load_blae(self.paths).sha256)
        epochs_done = max(start_epoch, last_epoch)
        return self._record(epochs_done, str(dev), time.perf_counter() - started)

    def _check_images(self) -> np.ndarray:
        train_images = self.images.split("train").images
        if len(train_images) == 0:
            raise InvalidInputError("the data source has no training images")
        c, h, w = self.images.shape
        if (c, h) != (self.config.image_channels, self.config.image_size) or h != w:
            raise InvalidInputError(
                f"BL-AE expects {self.config.image_channels}×{self.config.image_size}² images, "
                f"the data source has {c}×{h}×{w}"
            )
        return train_images

    def _start(
        self, resume: bool, dev: torch.device
    ) -> tuple[BLAE, int, torch.optim.Optimizer | None]:
        """A fresh model, or the checkpoint and optimizer state to resume from."""
        torch.manual_seed(self.train_config.seed)
        paths = self.paths
        if not (resume and paths.blae_weights.exists()):
            if resume:  # an interrupted first epoch leaves none: start, but say so
                log.warning("no checkpoint to resume in %s: training from scratch", paths.root)
            else:
                paths.blae_metrics.unlink(missing_ok=True)
            return BLAE(self.config).to(dev), 0, None
        checkpoint = load_blae(paths, device=dev)
        if self.data is not None:
            check_same_data(
                blae_training_data(paths, checkpoint),
                self.data,
                model=str(paths.blae_weights),
                remedy="retrain it on this data with --no-resume, or start a new --run DIR",
            )
        if checkpoint.model.config != self.config:
            raise InvalidInputError(
                f"cannot resume {paths.blae_weights}: it was trained with a different BL-AE "
                "config; train into a new --run, or drop --resume to retrain from scratch"
            )
        model, start_epoch = checkpoint.model, int(checkpoint.meta.get("epochs_done", 0))
        optimizer = adam(model.parameters(), self.train_config.lr)
        if paths.blae_optimizer.exists():
            optimizer.load_state_dict(torch.load(paths.blae_optimizer, weights_only=True))
        log.info("resuming from epoch %d of %s", start_epoch, paths.blae_weights)
        return model, start_epoch, optimizer

    def _progress_bar(self, images: int, start_epoch: int, last_epoch: int, show: bool) -> tqdm:
        steps_per_epoch = self.train_config.steps_per_epoch(images)
        polish = (
            self.train_config.polish_steps(images) if last_epoch == self.train_config.epochs else 0
        )
        total = steps_per_epoch * max(last_epoch - start_epoch, 0) + polish * (
            start_epoch < last_epoch
        )
        return tqdm(total=total, desc="train BL-AE", unit="step", disable=not show)

    def _end_epoch(
        self,
        epoch: int,
        model: BLAE,
        optim: torch.optim.Optimizer,
        final: bool,
        started: float,
        bar: tqdm,
    ) -> BLAEMetrics:
        """Evaluate, append the metrics record (with the collapse check), redraw the curve,
        checkpoint if due; returns the figures to show (test, or train without a test split)."""
        train_m, test_m = _evaluate(model, self.images, self.train_config.precision, final=final)
        train_images = len(self.images.split("train").images)
        evaluated = min(train_images, EVAL_TRAIN_IMAGES if final else EVAL_SUBSET)
        trained = epoch * self.train_config.steps_per_epoch(train_images)
        collapse = collapse_reason(train_m, evaluated, trained)
        if collapse:
            _warn(bar, f"the BL-AE code is collapsed after epoch {epoch}: {collapse}")
        record = {
            "epoch": epoch,
            "full_evaluation": final,
            "elapsed_s": round(time.perf_counter() - started, 1),
            "train": asdict(train_m),
            "test": asdict(test_m) if test_m is not None else None,
            "collapse": collapse,
            "checkpoint": final or epoch % self.checkpoint_every == 0,
        }
        self.records.append(record)
        self.paths.reports.mkdir(parents=True, exist_ok=True)
        with self.paths.blae_metrics.open("a") as f:
            f.write(json.dumps(record) + "\n")
        plot_training_curve(self.records, self.paths.blae_curve)
        if record["checkpoint"]:
            self.last["sha256"] = save_blae(
                self.paths,
                model,
                train_config=self.train_config,
                epochs_done=epoch,
                optimizer=optim,
                data=self.data,
            )
        self.last.update(train=train_m, test=test_m, collapse=collapse)
        log.info("epoch %d: %s", epoch, record)
        return test_m or train_m

    def _record(self, epochs_done: int, device: str, wall: float) -> TrainingSummary:
        last = self.last
        update_run_json(
            self.paths,
            "blae",
            {
                "config": self.config.to_dict(),
                "train": self.train_config.to_dict(),
                "epochs_done": epochs_done,
                "device": device,
                "wall_s": round(wall, 1),
                "weights_sha256": last["sha256"],
                "train_metrics": asdict(last["train"]),
                "test_metrics": asdict(last["test"]) if last["test"] else None,
                "collapse": last.get("collapse"),
            },
        )
        return TrainingSummary(epochs_done, wall, last["train"], last["test"], last["sha256"])


def _warn(bar: tqdm, message: str) -> None:
    """A warning above the progress bar, or in the log when there is no bar."""
    text = f"{message} ({COLLAPSE_HINT})"
    if bar.disable:
        log.warning(text)
    else:
        bar.write(f"warning: {text}")


def _read_records(paths: RunPaths, epochs_done: int) -> list[dict[str, Any]]:
    """The metrics records up to the checkpoint's epoch. An interrupted run leaves records of
    the epochs after its last checkpoint: they are dropped from the file, as resuming trains
    those epochs again."""
    if not paths.blae_metrics.exists():
        return []
    lines = [line for line in paths.blae_metrics.read_text().splitlines() if line]
    records = [json.loads(line) for line in lines]
    kept = [r for r in records if r["epoch"] <= epochs_done]
    if len(kept) < len(records):
        write_atomic(paths.blae_metrics, "".join(json.dumps(r) + "\n" for r in kept))
    return kept
