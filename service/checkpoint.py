"""One way to save and load every model (BL-AE, γ-ARVM, classifier): weights as safetensors, and
beside them a JSON file holding the model's config and what its training recorded.

The JSON carries the config, so loading needs no flags; both files are written atomically. A
missing, corrupt or mismatched pair gets one RunError that says which command rebuilds it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from service.devices import resolve_device
from service.errors import RunError, first_line
from service.files import atomic_path, file_sha256, write_atomic


class _Config(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


class _ConfigClass(Protocol):
    def from_dict(self, data: dict[str, Any]) -> Any: ...


M = TypeVar("M", bound=nn.Module)


@dataclass(frozen=True)
class Checkpoint(Generic[M]):
    model: M  # in eval mode, on the device asked for
    meta: dict[str, Any]  # the JSON beside the weights: "config" and what training recorded
    sha256: str  # of the weights file: the checksum later files name their model by


def config_path(weights: Path) -> Path:
    """model.safetensors → model.json."""
    return weights.with_suffix(".json")


def save_checkpoint(weights: Path, model: nn.Module, **meta: Any) -> str:
    """Write the weights and a JSON of the model's config plus `meta`; returns the weights' sha256.

    The weights go first: a crash between the two leaves a pair that fails to load with a clear
    error, never a model silently rebuilt from the wrong config.
    """
    config: _Config = model.config  # type: ignore[assignment]  # every model here has one
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp))
    body = {"config": config.to_dict(), **meta}
    write_atomic(config_path(weights), json.dumps(body, indent=2) + "\n")
    return file_sha256(weights)


def load_checkpoint(
    weights: Path, model_class: type[M], *, remedy: str, device: str | torch.device = "cpu"
) -> Checkpoint[M]:
    """Rebuild a model from its two files alone. `remedy` is the command that makes them, for
    the error messages (e.g. "latentgram train-ae --run runs/r1")."""
    meta_path = config_path(weights)
    for path in (weights, meta_path):
        if not path.exists():
            raise RunError(f"{path} is missing: run `{remedy}` first")
    name = model_class.__name__
    try:
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        config_class: _ConfigClass = model_class.config_class  # type: ignore[attr-defined]
        model = model_class(config_class.from_dict(meta["config"]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise RunError(
            f"{meta_path} is not a {name} config this latentgram reads ({first_line(exc)}): "
            f"retrain with `{remedy}`"
        ) from None
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise RunError(f"{weights} is not a safetensors file ({first_line(exc)})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise RunError(
            f"{weights} does not match {meta_path} ({first_line(exc)}): retrain with `{remedy}`"
        ) from None
    model.to(resolve_device(device)).eval()
    return Checkpoint(model, meta, file_sha256(weights))
