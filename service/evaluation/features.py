"""Feature extractors for the report's Fréchet distances (evaluation/frechet.py): the penultimate
layer of the run's classifier (models/classifier.py), and Inception-v3's 2048-d pool features
from the TorchScript file NVIDIA publishes for StyleGAN2-ADA and clean-fid
(inception-2015-12-05.pt), which the user supplies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from models import Classifier, ClassifierConfig
from models.common import to_unit
from service.devices import resolve_device
from service.errors import InvalidInputError, first_line

ImagesLike = np.ndarray | torch.Tensor  # uint8 (N, C, H, W)


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


def _check_shape(x: torch.Tensor, config: ClassifierConfig) -> None:
    expected = (config.image_channels, config.image_size, config.image_size)
    if tuple(x.shape[1:]) != expected:
        raise InvalidInputError(
            f"the classifier takes {'×'.join(map(str, expected))} images, "
            f"got {'×'.join(map(str, x.shape[1:]))}"
        )


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
        model = torch.jit.load(str(path), map_location=resolve_device(device))
    except (RuntimeError, ValueError, OSError) as exc:
        raise InvalidInputError(
            f"{path} is not a TorchScript file ({first_line(exc)}): {INCEPTION_EXPECTED}"
        ) from exc
    return model.eval()


def checked_inception(path: str | Path, *, device: str = "cpu") -> torch.nn.Module:
    """load_inception, then one black image through it: a file that is not the network is
    refused before any long work that would need it, not after."""
    model = load_inception(path, device=device)
    try:
        inception_features(model, np.zeros((1, 1, 28, 28), np.uint8), device=device)
    except InvalidInputError as why:
        raise InvalidInputError(str(why).replace("the Inception network", str(path))) from None
    return model


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
    dev = resolve_device(device)
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
                f"(B, 3, 299, 299) floats in [0, 255] ({first_line(exc)}): {INCEPTION_EXPECTED}"
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


def _check_images(images: ImagesLike) -> torch.Tensor:
    """uint8 (N ≥ 1, C, H, W) as a CPU tensor (sharing memory with a numpy array)."""
    x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if x.dtype != torch.uint8 or x.ndim != 4 or len(x) == 0:
        raise InvalidInputError(
            f"images must be uint8 (N, C, H, W) with N ≥ 1, got {x.dtype} {tuple(x.shape)}"
        )
    return x
