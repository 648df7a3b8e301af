"""The trained models of a run, loaded from their checkpoints (service/checkpoint.py)."""

from __future__ import annotations

from typing import Any

import torch

from models import BLAE, GammaARVM
from service.checkpoint import Checkpoint, load_checkpoint
from service.run.paths import RunPaths
from service.run.record import read_run_json


def load_blae(paths: RunPaths, *, device: str | torch.device = "cpu") -> Checkpoint[BLAE]:
    """The run's BL-AE; its sha256 is the model checksum the Parquet files and tables name."""
    return load_checkpoint(paths.blae_weights, BLAE, remedy=paths.remedy("train-ae"), device=device)


def blae_training_data(paths: RunPaths, checkpoint: Checkpoint[BLAE]) -> dict[str, Any] | None:
    """What the BL-AE was trained on: its checkpoint's record, or, for a checkpoint from before
    those records, run.json's data entry (spec and counts, no fingerprint)."""
    recorded: dict[str, Any] | None = checkpoint.meta.get("data") or read_run_json(paths).get(
        "data"
    )
    return recorded


def load_arvm(
    paths: RunPaths, gamma: int, positional: bool = False, device: str | torch.device = "cpu"
) -> GammaARVM:
    """The run's γ-ARVM for the table (γ, positional)."""
    flag = " --positional" if positional else ""
    remedy = paths.remedy(f"train-arvm --gamma {gamma}{flag}")
    weights = paths.arvm_weights(gamma, positional)
    return load_checkpoint(weights, GammaARVM, remedy=remedy, device=device).model


def has_arvm(paths: RunPaths, gamma: int, positional: bool = False) -> bool:
    return paths.arvm_weights(gamma, positional).exists()
