"""PyTorch models of latentgram: the Binary Latent Autoencoder and its training loop."""

from models.blae import BLAE, PRESETS, BLAEConfig, BLAEOutput, binarize, blae_preset
from models.classifier import Classifier, ClassifierConfig, ClassifierTrainConfig
from models.noise import sample_noise, triangular_noise
from models.train import BLAEMetrics, TrainConfig, evaluate_blae, pick_device, train_blae

__all__ = [
    "BLAE",
    "PRESETS",
    "BLAEConfig",
    "BLAEMetrics",
    "BLAEOutput",
    "Classifier",
    "ClassifierConfig",
    "ClassifierTrainConfig",
    "TrainConfig",
    "binarize",
    "blae_preset",
    "evaluate_blae",
    "pick_device",
    "sample_noise",
    "train_blae",
    "triangular_noise",
]
