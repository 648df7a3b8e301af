"""The run's classifier, trained once on the run's own images for the report's classifier Fréchet
distance (evaluation/frechet.py), and reused while the training images stay the same."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from models import Classifier, ClassifierConfig, ClassifierTrainConfig, train_classifier
from service.checkpoint import load_checkpoint, save_checkpoint
from service.data.sources import ImageSet
from service.devices import resolve_device
from service.errors import InvalidInputError, RunError
from service.evaluation.features import classifier_accuracy
from service.run.paths import RunPaths
from service.run.record import update_run_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassifierCheckpoint:
    model: Classifier
    train_config: ClassifierTrainConfig
    test_accuracy: float | None  # share of the test split classified right; None without one
    data_sha256: str  # of the training images and labels, so a change of data retrains
    train_seconds: float  # wall time of the training itself
    sha256: str  # of the weights file
    trained: bool  # True when this call trained it, False when it was loaded


def load_classifier(paths: RunPaths, *, device: str = "cpu") -> ClassifierCheckpoint:
    """The run's classifier from its two files alone; RunError when absent or corrupt."""
    remedy = paths.remedy("report")
    loaded = load_checkpoint(paths.classifier_weights, Classifier, remedy=remedy, device=device)
    meta = loaded.meta
    try:
        accuracy = meta["test_accuracy"]
        return ClassifierCheckpoint(
            model=loaded.model,
            train_config=ClassifierTrainConfig.from_dict(meta["train"]),
            test_accuracy=None if accuracy is None else float(accuracy),
            data_sha256=str(meta["data_sha256"]),
            train_seconds=float(meta.get("train_seconds", 0.0)),
            sha256=loaded.sha256,
            trained=False,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{paths.classifier_weights} lacks its training record: {exc}") from exc


def ensure_classifier(
    paths: RunPaths,
    images: ImageSet,
    *,
    train_config: ClassifierTrainConfig | None = None,
    retrain: bool = False,
    device: str = "auto",
    progress: bool = True,
) -> ClassifierCheckpoint:
    """The run's classifier: loaded when one trained on these images exists, else trained on the
    train split, measured on the test split, and saved into the run directory.

    A saved classifier is reused only if its training data (by checksum) and, when one is given,
    its train config match; a damaged one is replaced; `retrain` always trains anew.
    """
    train = images.split("train")
    if len(train) == 0:
        raise InvalidInputError("the data source has no training images to train a classifier on")
    data_sha256 = _data_sha256(train)
    if not retrain and paths.classifier_weights.exists():
        try:
            saved = load_classifier(paths, device=device)
        except RunError as exc:  # half-written or damaged: it can be rebuilt, so it is
            log.warning("retraining the classifier: %s", exc)
        else:
            if saved.data_sha256 == data_sha256 and train_config in (None, saved.train_config):
                return saved
            log.info("retraining %s: other data or another config", paths.classifier_weights)
    return _train_and_save(paths, images, data_sha256, train_config, device, progress)


def _train_and_save(
    paths: RunPaths,
    images: ImageSet,
    data_sha256: str,
    train_config: ClassifierTrainConfig | None,
    device: str,
    progress: bool,
) -> ClassifierCheckpoint:
    train_config = train_config or ClassifierTrainConfig()
    train, test = images.split("train"), images.split("test")
    started = time.perf_counter()
    model = fit_classifier(
        train, classifier_config_for(images), train_config, device=device, progress=progress
    )
    seconds = time.perf_counter() - started
    accuracy = classifier_accuracy(model, test.images, test.labels) if len(test) else None
    record = {
        "test_accuracy": accuracy,
        "data_sha256": data_sha256,
        "train_seconds": round(seconds, 2),
    }
    sha256 = save_checkpoint(
        paths.classifier_weights, model, train=train_config.to_dict(), **record
    )
    update_run_json(
        paths,
        "classifier",
        {"train_images": len(train), "test_images": len(test), **record, "sha256": sha256},
    )
    log.info("classifier: test accuracy %s after %.1f s", accuracy, seconds)
    return ClassifierCheckpoint(
        model, train_config, accuracy, data_sha256, seconds, sha256, trained=True
    )


def classifier_config_for(images: ImageSet) -> ClassifierConfig:
    """A classifier for the images' shape and every label of the data set."""
    c, h, w = images.shape
    if h != w:
        raise InvalidInputError(f"the classifier needs square images, the data has {h}×{w}")
    top = int(images.labels.max()) + 1 if len(images) else 0
    classes = max(len(images.class_names), top, 2)
    return ClassifierConfig(image_channels=c, image_size=h, num_classes=classes)


def fit_classifier(
    train: ImageSet,
    config: ClassifierConfig,
    train_config: ClassifierTrainConfig,
    *,
    device: str = "auto",
    progress: bool = True,
) -> Classifier:
    """Train a classifier on the images and labels of `train`; returned in eval mode."""
    labels = torch.as_tensor(train.labels).long()
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= config.num_classes):
        raise InvalidInputError(
            f"labels must lie in 0..{config.num_classes - 1}, "
            f"got {int(labels.min())}..{int(labels.max())}"
        )
    torch.manual_seed(train_config.seed)
    model = Classifier(config).to(resolve_device(device))
    steps = train_config.epochs * -(-len(train) // train_config.batch_size)
    bar = tqdm(total=steps, desc="train classifier", unit="step", disable=not progress)

    def on_step(step: int, loss: float) -> None:
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss:.3f}")

    images = torch.from_numpy(np.ascontiguousarray(train.images))
    model = train_classifier(model, images, labels, train_config, on_step=on_step)
    bar.close()
    return model


def _data_sha256(images: ImageSet) -> str:
    """Checksum of images (shape and bytes) and labels: what a classifier was trained on."""
    digest = hashlib.sha256(repr(images.images.shape).encode())
    digest.update(np.ascontiguousarray(images.images).tobytes())
    digest.update(np.ascontiguousarray(images.labels, dtype=np.int64).tobytes())
    return digest.hexdigest()
