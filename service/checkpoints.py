"""BL-AE checkpoints: weights as safetensors, config and progress as JSON beside them.

The JSON carries the model config, so loading needs no flags; the optimizer state (for resuming)
is a separate torch file, loaded with weights_only=True.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from models import BLAE, BLAEConfig, TrainConfig
from service.errors import InvalidInputError, RunError
from service.run import RunPaths, file_sha256


@dataclass(frozen=True)
class BLAECheckpoint:
    model: BLAE
    train_config: TrainConfig | None  # None for a checkpoint saved without training info
    epochs_done: int
    sha256: str  # of the weights file: the model checksum written into the Parquet files


def save_blae(
    paths: RunPaths,
    model: BLAE,
    *,
    train_config: TrainConfig,
    epochs_done: int,
    optimizer: torch.optim.Optimizer | None = None,
) -> str:
    """Write weights, config and optimizer state; returns the weights' sha256."""
    paths.root.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = paths.blae_weights.with_suffix(".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, paths.blae_weights)
    if optimizer is not None:
        tmp = paths.blae_optimizer.with_suffix(".tmp")
        torch.save(optimizer.state_dict(), tmp)
        os.replace(tmp, paths.blae_optimizer)
    meta = {
        "config": model.config.to_dict(),
        "train": train_config.to_dict(),
        "epochs_done": epochs_done,
    }
    tmp = paths.blae_config.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, paths.blae_config)
    return file_sha256(paths.blae_weights)


def load_blae(paths: RunPaths, *, device: torch.device | str = "cpu") -> BLAECheckpoint:
    """Rebuild the BL-AE from the run directory alone."""
    paths.require(paths.blae_weights, "train-ae")
    paths.require(paths.blae_config, "train-ae")
    try:
        meta: dict[str, Any] = json.loads(paths.blae_config.read_text())
        config = BLAEConfig.from_dict(meta["config"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{paths.blae_config} is not a BL-AE config: {exc}") from exc
    model = BLAE(config)
    try:
        model.load_state_dict(load_file(str(paths.blae_weights)))
    except (RuntimeError, OSError) as exc:
        raise RunError(f"{paths.blae_weights} does not match {paths.blae_config}: {exc}") from exc
    try:
        model.to(device).eval()
    except RuntimeError as exc:  # an unknown or unavailable device name
        raise InvalidInputError(f"cannot use device {device!r}: {exc}") from exc
    train = meta.get("train")
    return BLAECheckpoint(
        model=model,
        train_config=TrainConfig(**train) if train else None,
        epochs_done=int(meta.get("epochs_done", 0)),
        sha256=file_sha256(paths.blae_weights),
    )


def load_optimizer_state(paths: RunPaths) -> dict[str, Any] | None:
    if not paths.blae_optimizer.exists():
        return None
    state: dict[str, Any] = torch.load(paths.blae_optimizer, weights_only=True)
    return state
