"""The σ ablation (the paper's Theorem 3.3 and figure 4) on a run: the run's encoder frozen, a
fresh decoder per noise kind and σ, PSNR against σ as JSON and a plot in the run's reports.

latentgram ablate-sigma --run runs/r1      # what this module does, from the command line
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from models.blae_ablation import AblationConfig, ablation_point, retrain_decoder
from models.blae_config import SIGMAS, sigma_grid
from models.config import NOISE_KINDS
from service.data.parquet import read_images
from service.data.sources import first_per_class_round
from service.errors import InvalidInputError
from service.evaluation.plots import plot_sigma_ablation
from service.files import atomic_path
from service.run.models import load_blae
from service.run.paths import RunPaths

ABLATION_JSON = "sigma-ablation.json"
ABLATION_PLOT = "sigma-ablation.png"


def sigma_ablation(
    paths: RunPaths,
    *,
    sigmas: Sequence[float] = SIGMAS,
    noises: Sequence[str] = NOISE_KINDS,
    images: int = 5000,
    config: AblationConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Retrain the decoder for every (noise, σ) on `images` training images, read PSNR on as
    many test images (a fifth as many, at least 100), write the JSON and the plot; the result,
    with whether PSNR falls as σ rises for each noise kind."""
    config = config or AblationConfig()
    try:
        grid = sigma_grid(sigmas, noises)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    model = load_blae(paths).model
    train, test = _subsets(paths, images)
    points = []
    for noise, sigma in tqdm(grid, desc="σ ablation", unit="decoder", disable=not progress):
        decoder = retrain_decoder(model, train, noise, sigma, config)
        points.append(asdict(ablation_point(decoder, test, noise, sigma, seed=config.seed)))
    falls = {
        noise: bool(np.all(np.diff([p["psnr_noisy"] for p in points if p["noise"] == noise]) < 0))
        for noise in noises
    }
    result = {
        "train_images": len(train),
        "test_images": len(test),
        "config": asdict(config),
        "points": points,
        "psnr_falls_as_sigma_rises": falls,
    }
    paths.reports.mkdir(parents=True, exist_ok=True)
    with atomic_path(paths.reports / ABLATION_JSON) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    plot_sigma_ablation(points, paths.reports / ABLATION_PLOT)
    return result


def _subsets(paths: RunPaths, images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-balanced training and test images of the run, as uint8 tensors."""
    if images < 1:
        raise InvalidInputError(f"images must be ≥ 1, got {images}")
    _, data = read_images(paths.require(paths.images, "encode"))
    train = first_per_class_round(data.labels, data.splits == "train", images)
    test = first_per_class_round(data.labels, data.splits == "test", max(100, images // 5))
    if len(test) == 0:
        test = train  # a source without a test split: read PSNR on the training images
    return torch.from_numpy(data.images[train]), torch.from_numpy(data.images[test])
