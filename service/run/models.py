"""The trained models of a run, loaded from their checkpoints (service/checkpoint.py)."""

from __future__ import annotations

from typing import Any

import torch

from models import BLAE, GammaARVM
from service.checkpoint import Checkpoint, load_checkpoint
from service.errors import RunError
from service.files import file_sha256
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
    paths: RunPaths,
    gamma: int,
    positional: bool = False,
    device: str | torch.device = "cpu",
    *,
    blae_sha256: str | None = None,
) -> GammaARVM:
    """The run's γ-ARVM for the table (γ, positional); RunError when it was trained on the
    tokens of another BL-AE than the run's (retrained since: its tokens mean other things).
    `blae_sha256`: the run's BL-AE checksum where the caller has it (else its file is hashed)."""
    flag = " --positional" if positional else ""
    remedy = paths.remedy(f"train-arvm --gamma {gamma}{flag}")
    weights = paths.arvm_weights(gamma, positional)
    checkpoint = load_checkpoint(weights, GammaARVM, remedy=remedy, device=device)
    trained_on = checkpoint.meta.get("model_sha256")  # absent from older checkpoints
    if trained_on is not None and trained_on != (blae_sha256 or file_sha256(paths.blae_weights)):
        raise RunError(
            f"{weights} was trained on the tokens of another BL-AE than the run's "
            f"(retrained since): run `{remedy}`"
        )
    return checkpoint.model


def has_arvm(paths: RunPaths, gamma: int, positional: bool = False) -> bool:
    return paths.arvm_weights(gamma, positional).exists()
