"""Quality figures for the memorization report (DESIGN.md §7): Fréchet distances between image sets.

The Fréchet distance of Heusel et al. (2017, "GANs Trained by a Two Time-Scale Update Rule
Converge to a Local Nash Equilibrium") between Gaussians fitted to two feature sets is taken in
two feature spaces:

- the penultimate layer of a small classifier trained on the run's own data set (models/
  classifier.py): the "classifier Fréchet distance". It is not FID and must not be reported as FID;
- Inception-v3's 2048-d pool features, from the TorchScript file NVIDIA publishes for StyleGAN2-ADA
  and clean-fid (inception-2015-12-05.pt), which the user supplies: that one is FID.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from models import Classifier, ClassifierConfig, ClassifierTrainConfig, pick_device
from models.train import set_cosine_lr, to_unit
from service.errors import InvalidInputError, RunError
from service.run import RunPaths, file_sha256, update_run_json
from service.sources import ImageSet

log = logging.getLogger(__name__)

ImagesLike = np.ndarray | torch.Tensor  # uint8 (N, C, H, W)


# --- Fréchet distance -------------------------------------------------------------------------


class FeatureStats(NamedTuple):
    """Mean and covariance of a feature set: the Gaussian the Fréchet distance compares."""

    mean: np.ndarray  # (D,) float64
    cov: np.ndarray  # (D, D) float64, unbiased (divided by N − 1)
    samples: int  # N, the number of feature vectors


def feature_stats(features: np.ndarray | torch.Tensor) -> FeatureStats:
    """Mean and covariance of (N, D) features, N ≥ 2, in float64."""
    x = _as_float64(features)
    if x.ndim != 2 or len(x) < 2:
        raise InvalidInputError(
            f"features must be an (N, D) array with N ≥ 2 rows, got shape {tuple(x.shape)}"
        )
    if not np.isfinite(x).all():
        raise InvalidInputError("features contain NaN or infinite values")
    mean = x.mean(axis=0)
    centered = x - mean
    cov = centered.T @ centered / (len(x) - 1)
    return FeatureStats(mean, cov, len(x))


def frechet_distance_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    """d² = ‖μa − μb‖² + Tr(Σa + Σb − 2 (Σa Σb)^½), the squared Fréchet (2-Wasserstein) distance.

    Σa Σb is not symmetric, so its square root is not taken directly (scipy's sqrtm can return
    complex noise). Instead: Σa Σb = √Σa (√Σa Σb) and (√Σa Σb) √Σa = √Σa Σb √Σa share their
    eigenvalues (AB and BA always do), and the latter is symmetric positive semi-definite, so
    Tr((Σa Σb)^½) = Σᵢ √λᵢ(√Σa Σb √Σa), with two symmetric eigendecompositions in float64. This
    holds for singular covariances too (fewer vectors than dimensions).
    """
    if a.mean.shape != b.mean.shape:
        raise InvalidInputError(
            f"feature sets differ in dimension: {a.mean.shape[0]} and {b.mean.shape[0]}"
        )
    diff = a.mean - b.mean
    root_a = _sqrt_psd(a.cov)
    middle = root_a @ b.cov @ root_a
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)  # symmetrize away rounding
    trace_root = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
    distance = diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2.0 * trace_root
    return max(float(distance), 0.0)  # ≥ 0 in exact arithmetic; rounding can dip just below


def frechet_distance(
    features_a: np.ndarray | torch.Tensor, features_b: np.ndarray | torch.Tensor
) -> float:
    """Squared Fréchet distance between Gaussians fitted to two (N, D) feature sets."""
    return frechet_distance_from_stats(feature_stats(features_a), feature_stats(features_b))


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix; eigenvalues below 0 (rounding) count as 0."""
    eigenvalues, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    roots = np.sqrt(np.clip(eigenvalues, 0.0, None))
    return (vectors * roots) @ vectors.T  # V diag(√λ) Vᵀ


def _as_float64(values: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


# --- the project's classifier -----------------------------------------------------------------

CLASSIFIER_WEIGHTS = "classifier.safetensors"
CLASSIFIER_META = "classifier.json"


@dataclass(frozen=True)
class ClassifierCheckpoint:
    model: Classifier
    train_config: ClassifierTrainConfig
    test_accuracy: float | None  # share of the test split classified right; None without one
    data_sha256: str  # of the training images and labels, so a change of data retrains
    train_seconds: float  # wall time of the training itself
    sha256: str  # of the weights file
    trained: bool  # True when this call trained it, False when it was loaded


def classifier_paths(paths: RunPaths) -> tuple[Path, Path]:
    """(weights, config) files of the run's classifier."""
    return paths.root / CLASSIFIER_WEIGHTS, paths.root / CLASSIFIER_META


def train_classifier(
    images: ImagesLike,
    labels: np.ndarray | torch.Tensor,
    *,
    config: ClassifierConfig | None = None,
    train_config: ClassifierTrainConfig | None = None,
    device: str = "auto",
    progress: bool = True,
) -> Classifier:
    """Train a classifier on uint8 images (N, C, S, S) and int labels (N,); returned in eval mode.

    Without a config, one is built for the images' shape and the labels' largest value.
    """
    x = _check_images(images)
    y = torch.as_tensor(labels).long().reshape(-1)
    if len(y) != len(x):
        raise InvalidInputError(f"got {len(x)} images but {len(y)} labels (expected equal counts)")
    if config is None:
        config = _config_for(x, int(y.max().item()) + 1 if len(y) else 2)
    _check_shape(x, config)
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= config.num_classes):
        raise InvalidInputError(
            f"labels must lie in 0..{config.num_classes - 1}, got {int(y.min())}..{int(y.max())}"
        )
    train_config = train_config or ClassifierTrainConfig()
    dev = _device(device)
    torch.manual_seed(train_config.seed)
    model = Classifier(config).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=train_config.lr)
    steps_per_epoch = -(-len(x) // train_config.batch_size)
    total_steps = train_config.epochs * steps_per_epoch
    x, y = x.to(dev), y.to(dev)
    bar = tqdm(total=total_steps, desc="train classifier", unit="step", disable=not progress)
    model.train()
    for epoch in range(train_config.epochs):
        shuffle = torch.Generator().manual_seed(train_config.seed * 1_000_003 + epoch)
        order = torch.randperm(len(x), generator=shuffle).to(dev)
        for step, idx in enumerate(order.split(train_config.batch_size)):
            progress_done = (epoch * steps_per_epoch + step) / total_steps
            set_cosine_lr(optimizer, train_config.lr, progress_done, floor=0.02)
            loss = F.cross_entropy(model(to_unit(x[idx])), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return model.eval()


@torch.no_grad()
def classifier_accuracy(
    model: Classifier,
    images: ImagesLike,
    labels: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 1024,
) -> float:
    """Share of uint8 images (N ≥ 1, C, S, S) whose predicted class is their label."""
    x = _check_images(images)
    _check_shape(x, model.config)
    y = torch.as_tensor(labels).long().reshape(-1)
    if len(y) != len(x):
        raise InvalidInputError(f"got {len(x)} images but {len(y)} labels (expected equal counts)")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    right = 0
    for start in range(0, len(x), batch_size):
        logits = model(to_unit(x[start : start + batch_size].to(device)))
        right += int((logits.argmax(1).cpu() == y[start : start + batch_size]).sum())
    model.train(was_training)
    return right / len(x)


@torch.no_grad()
def classifier_features(
    model: Classifier, images: ImagesLike, *, batch_size: int = 1024
) -> np.ndarray:
    """Penultimate-layer features (N, feature_dim) float32 of uint8 images (N ≥ 1, C, S, S)."""
    x = _check_images(images)
    _check_shape(x, model.config)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # batch norm uses its running statistics: features do not depend on the batch
    parts = [
        model.features(to_unit(x[start : start + batch_size].to(device))).float().cpu()
        for start in range(0, len(x), batch_size)
    ]
    model.train(was_training)
    return torch.cat(parts).numpy()


def save_classifier(
    paths: RunPaths,
    model: Classifier,
    *,
    train_config: ClassifierTrainConfig,
    test_accuracy: float | None,
    data_sha256: str,
    train_seconds: float,
) -> str:
    """Write weights (safetensors) and config with training facts (JSON); returns the sha256."""
    weights, meta = classifier_paths(paths)
    paths.root.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = weights.with_suffix(".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, weights)
    body = {
        "config": model.config.to_dict(),
        "train": train_config.to_dict(),
        "test_accuracy": test_accuracy,
        "data_sha256": data_sha256,
        "train_seconds": round(train_seconds, 2),
    }
    tmp = meta.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    os.replace(tmp, meta)
    return file_sha256(weights)


def load_classifier(paths: RunPaths, *, device: str = "cpu") -> ClassifierCheckpoint:
    """Rebuild the run's classifier from its two files alone; RunError when absent or corrupt."""
    weights, meta = classifier_paths(paths)
    for path in (weights, meta):
        if not path.exists():
            raise RunError(f"{path} is missing: the run has no trained classifier yet")
    try:
        body: dict[str, Any] = json.loads(meta.read_text())
        config = ClassifierConfig.from_dict(body["config"])
        train_config = ClassifierTrainConfig(**body["train"])
        accuracy = body["test_accuracy"]
        data_sha256 = str(body["data_sha256"])
        seconds = float(body.get("train_seconds", 0.0))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{meta} is not a classifier config: {exc}") from exc
    model = Classifier(config)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise RunError(f"{weights} is not a safetensors file: {_first_line(exc)}") from exc
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise RunError(f"{weights} does not match {meta}: {_first_line(exc)}") from exc
    model.to(_device(device)).eval()
    return ClassifierCheckpoint(
        model=model,
        train_config=train_config,
        test_accuracy=None if accuracy is None else float(accuracy),
        data_sha256=data_sha256,
        train_seconds=seconds,
        sha256=file_sha256(weights),
        trained=False,
    )


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
    weights, _ = classifier_paths(paths)
    if not retrain and weights.exists():
        try:
            saved = load_classifier(paths, device=device)
        except RunError as exc:  # half-written or damaged: it can be rebuilt, so it is
            log.warning("retraining the classifier: %s", exc)
        else:
            if saved.data_sha256 == data_sha256 and train_config in (None, saved.train_config):
                return saved
            log.info("retraining %s: trained on other data or with another config", weights)
    train_config = train_config or ClassifierTrainConfig()
    c, h, w = images.shape
    if h != w:
        raise InvalidInputError(f"the classifier needs square images, the data has {h}×{w}")
    top = int(images.labels.max()) + 1 if len(images) else 0
    config = ClassifierConfig(
        image_channels=c, image_size=h, num_classes=max(len(images.class_names), top, 2)
    )
    started = time.perf_counter()
    model = train_classifier(
        train.images,
        train.labels,
        config=config,
        train_config=train_config,
        device=device,
        progress=progress,
    )
    seconds = time.perf_counter() - started
    test = images.split("test")
    accuracy = classifier_accuracy(model, test.images, test.labels) if len(test) else None
    sha256 = save_classifier(
        paths,
        model,
        train_config=train_config,
        test_accuracy=accuracy,
        data_sha256=data_sha256,
        train_seconds=seconds,
    )
    update_run_json(
        paths,
        "classifier",
        {
            "train_images": len(train),
            "test_images": len(test),
            "test_accuracy": accuracy,
            "train_seconds": round(seconds, 2),
            "data_sha256": data_sha256,
            "sha256": sha256,
        },
    )
    log.info("classifier: test accuracy %s after %.1f s", accuracy, seconds)
    return ClassifierCheckpoint(
        model=model,
        train_config=train_config,
        test_accuracy=accuracy,
        data_sha256=data_sha256,
        train_seconds=seconds,
        sha256=sha256,
        trained=True,
    )


def _data_sha256(images: ImageSet) -> str:
    """Checksum of images (shape and bytes) and labels: what a classifier was trained on."""
    digest = hashlib.sha256(repr(images.images.shape).encode())
    digest.update(np.ascontiguousarray(images.images).tobytes())
    digest.update(np.ascontiguousarray(images.labels, dtype=np.int64).tobytes())
    return digest.hexdigest()


def _config_for(x: torch.Tensor, num_classes: int) -> ClassifierConfig:
    _, c, h, w = x.shape
    if h != w or c not in (1, 3):
        raise InvalidInputError(f"the classifier needs square grey or RGB images, got {c}×{h}×{w}")
    return ClassifierConfig(image_channels=c, image_size=h, num_classes=max(num_classes, 2))


def _check_shape(x: torch.Tensor, config: ClassifierConfig) -> None:
    expected = (config.image_channels, config.image_size, config.image_size)
    if tuple(x.shape[1:]) != expected:
        raise InvalidInputError(
            f"the classifier takes {'×'.join(map(str, expected))} images, "
            f"got {'×'.join(map(str, x.shape[1:]))}"
        )


# --- Inception FID ----------------------------------------------------------------------------

INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = (
    "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/" + INCEPTION_FILE
)
INCEPTION_SIZE = 299  # Inception-v3's input side
INCEPTION_FEATURES = 2048  # width of its pool3 layer, the features FID is taken on
INCEPTION_EXPECTED = (
    f"expected a TorchScript Inception file such as {INCEPTION_FILE} ({INCEPTION_URL})"
)


def load_inception(path: str | Path, *, device: str = "cpu") -> torch.jit.ScriptModule:
    """The TorchScript Inception network at `path`; InvalidInputError when it is not one."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InvalidInputError(f"no Inception weights file at {path}: {INCEPTION_EXPECTED}")
    try:
        model = torch.jit.load(str(path), map_location=_device(device))
    except (RuntimeError, ValueError, OSError) as exc:
        raise InvalidInputError(
            f"{path} is not a TorchScript file ({_first_line(exc)}): {INCEPTION_EXPECTED}"
        ) from exc
    return model.eval()


def inception_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 1 or 3, H, W) → float32 (B, 3, 299, 299) in [0, 255]: what the network takes.

    Grey images are repeated to 3 channels, then every image is resized bilinearly (no
    antialiasing, as when upsampling it makes no difference). FID values depend on the resize
    filter (clean-fid uses PIL bicubic, StyleGAN2-ADA resizes inside the network), so figures are
    comparable within this project, not with published tables.
    """
    x = images.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)  # (B, 3, H, W)
    x = F.interpolate(
        x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False
    )
    return x.clamp_(0.0, 255.0)  # (B, 3, 299, 299); bilinear weights are convex, this is a guard


@torch.no_grad()
def inception_features(
    inception: str | Path | torch.nn.Module,
    images: ImagesLike,
    *,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """Inception pool features (N, 2048) float64 of uint8 images (N ≥ 1, 1 or 3, H, W).

    `inception` is the path of NVIDIA's TorchScript file (or the network load_inception gave).
    It is called as in StyleGAN2-ADA's FID, `model(x, return_features=True)`, with x float32
    (B, 3, 299, 299) in [0, 255]; the network itself scales to [−1, 1] ((x − 128) / 128), and its
    own resize step leaves 299×299 input unchanged.
    """
    x = _check_images(images)
    if x.shape[1] not in (1, 3):
        raise InvalidInputError(f"Inception takes grey or RGB images, got {x.shape[1]} channels")
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be at least 1, got {batch_size}")
    dev = _device(device)
    if isinstance(inception, torch.nn.Module):
        model, name = inception.to(dev).eval(), "the Inception network"
    else:
        model, name = load_inception(inception, device=device), str(inception)
    parts = []
    bar = tqdm(total=len(x), desc="Inception features", unit="img", disable=not progress)
    for start in range(0, len(x), batch_size):
        batch = inception_input(x[start : start + batch_size].to(dev))
        try:
            out = model(batch, return_features=True)
        except RuntimeError as exc:
            raise InvalidInputError(
                f"{name} cannot be called as model(images, return_features=True) on "
                f"(B, 3, 299, 299) floats in [0, 255] ({_first_line(exc)}): {INCEPTION_EXPECTED}"
            ) from exc
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (
            len(batch),
            INCEPTION_FEATURES,
        ):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise InvalidInputError(
                f"{name} returned {shape} for {len(batch)} images, not (B, {INCEPTION_FEATURES}) "
                f"features: {INCEPTION_EXPECTED}"
            )
        parts.append(out.double().cpu())
        bar.update(len(batch))
    bar.close()
    return torch.cat(parts).numpy()


# --- shared helpers ---------------------------------------------------------------------------


def _check_images(images: ImagesLike) -> torch.Tensor:
    """uint8 (N ≥ 1, C, H, W) as a CPU tensor (sharing memory with a numpy array)."""
    x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if x.dtype != torch.uint8 or x.ndim != 4 or len(x) == 0:
        raise InvalidInputError(
            f"images must be uint8 (N, C, H, W) with N ≥ 1, got {x.dtype} {tuple(x.shape)}"
        )
    return x


def _device(name: str) -> torch.device:
    try:
        return pick_device(name)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from exc


def _first_line(exc: BaseException) -> str:
    """An exception's first sentence, for one-line messages (torch's run on for paragraphs)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.split(". ")[0].rstrip(".")
