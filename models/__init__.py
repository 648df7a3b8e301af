"""PyTorch models of latentgram and their training loops (torch and numpy only: no I/O).

- blae.py, noise.py, blae_train.py: the Binary Latent Autoencoder, its Tri(κ) noise, its loop
- blae_config.py: its configs and named presets (no torch)
- arvm.py, arvm_train.py: the γ-ARVM and its count-weighted KL training (the paper's eq. 10)
- classifier.py, classifier_train.py: the small CNN behind the report's Fréchet distance
- config.py, common.py, device.py: configs saved in checkpoints, shared loop pieces, devices

The names below are imported from their modules on first use (PEP 562), not with the package:
importing torch takes seconds, and `latentgram --help` or `latentgram build` need none of it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.arvm import ARVMConfig, GammaARVM
    from models.arvm_train import ARVMTrainConfig
    from models.blae import BLAE, BLAEOutput, binarize
    from models.blae_config import (
        PRESETS,
        BLAEConfig,
        BLAETrainConfig,
        blae_preset,
        describe_preset,
    )
    from models.blae_train import BLAEMetrics, collapse_reason, evaluate_blae, train_blae
    from models.classifier import Classifier, ClassifierConfig, ClassifierTrainConfig
    from models.classifier_train import train_classifier
    from models.device import autocast_for, enable_tf32, pick_device
    from models.noise import sample_noise, triangular_noise

__all__ = [
    "BLAE",
    "PRESETS",
    "ARVMConfig",
    "ARVMTrainConfig",
    "BLAEConfig",
    "BLAEMetrics",
    "BLAEOutput",
    "BLAETrainConfig",
    "Classifier",
    "ClassifierConfig",
    "ClassifierTrainConfig",
    "GammaARVM",
    "autocast_for",
    "binarize",
    "blae_preset",
    "collapse_reason",
    "describe_preset",
    "enable_tf32",
    "evaluate_blae",
    "pick_device",
    "sample_noise",
    "train_blae",
    "train_classifier",
    "triangular_noise",
]
_MODULE_OF = {  # where each name of __all__ lives
    "ARVMConfig": "arvm",
    "GammaARVM": "arvm",
    "ARVMTrainConfig": "arvm_train",
    "BLAE": "blae",
    "BLAEOutput": "blae",
    "binarize": "blae",
    "PRESETS": "blae_config",
    "BLAEConfig": "blae_config",
    "BLAETrainConfig": "blae_config",
    "blae_preset": "blae_config",
    "describe_preset": "blae_config",
    "BLAEMetrics": "blae_train",
    "collapse_reason": "blae_train",
    "evaluate_blae": "blae_train",
    "train_blae": "blae_train",
    "Classifier": "classifier",
    "ClassifierConfig": "classifier",
    "ClassifierTrainConfig": "classifier",
    "train_classifier": "classifier_train",
    "autocast_for": "device",
    "enable_tf32": "device",
    "pick_device": "device",
    "sample_noise": "noise",
    "triangular_noise": "noise",
}


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"models.{_MODULE_OF[name]}"), name)
