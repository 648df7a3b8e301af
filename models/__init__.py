"""PyTorch models of latentgram and their training loops (torch and numpy only: no I/O).

- blae.py, noise.py, blae_train.py: the Binary Latent Autoencoder, its Tri(κ) noise, its loop
- arvm.py, arvm_train.py: the γ-ARVM and its count-weighted KL training (the paper's eq. 10)
- classifier.py, classifier_train.py: the small CNN behind the report's Fréchet distance
- config.py, common.py, device.py: configs saved in checkpoints, shared loop pieces, devices
"""

from models.arvm import ARVMConfig, GammaARVM
from models.arvm_train import ARVMTrainConfig
from models.blae import (
    BLAE,
    PRESETS,
    BLAEConfig,
    BLAEOutput,
    binarize,
    blae_preset,
    describe_preset,
)
from models.blae_train import (
    BLAEMetrics,
    BLAETrainConfig,
    collapse_reason,
    evaluate_blae,
    train_blae,
)
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
