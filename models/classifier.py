"""A small CNN image classifier whose penultimate layer is the feature space of the project's
"classifier Fréchet distance" (DESIGN.md §7): the Fréchet distance of Heusel et al., "GANs Trained
by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium" (2017), measured with a
network trained on the run's own data set instead of Inception. It is not FID and is never called
so.

Two stride-1 3×3 convolutions, each followed by batch norm, ReLU and 2×2 max pooling, then one
hidden fully connected layer (the features) and the class logits. Small enough that one epoch
over Fashion-MNIST's 60,000 images takes seconds on a 2-core CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from models.config import ModelConfig


@dataclass(frozen=True)
class ClassifierConfig(ModelConfig):
    image_channels: int = 1  # 1 for grey, 3 for RGB
    image_size: int = 28  # side of the (square) images; each level halves it (rounding down)
    num_classes: int = 10  # number of labels, 0 … num_classes − 1
    widths: tuple[int, ...] = (12, 24)  # one conv + 2×2 max pool per entry: 28→14→7
    feature_dim: int = 128  # width of the hidden layer whose activations are the features

    def __post_init__(self) -> None:
        if self.image_channels not in (1, 3):
            raise ValueError(f"image_channels must be 1 or 3, got {self.image_channels}")
        if self.num_classes < 2 or self.feature_dim < 1 or not self.widths:
            raise ValueError("need num_classes ≥ 2, feature_dim ≥ 1 and at least one width")
        if self.grid_size < 1:
            raise ValueError(
                f"image_size {self.image_size} is too small for {len(self.widths)} pooling levels"
            )

    @property
    def grid_size(self) -> int:
        """Side of the last feature map, after one 2×2 pooling per level."""
        return self.image_size // 2 ** len(self.widths)


@dataclass(frozen=True)
class ClassifierTrainConfig(ModelConfig):
    epochs: int = 1  # passes over the training split (Fashion-MNIST: ~89% test accuracy after 1)
    batch_size: int = 128  # images per step: 128 reaches ~1 point more accuracy than 256
    lr: float = 3e-3  # peak Adam learning rate, decayed along a cosine to 2% of it
    seed: int = 0  # weight init and shuffles derive from it

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs and batch_size must be ≥ 1 and lr > 0")


class Classifier(nn.Module):
    """Images in [0, 1] (B, C, S, S) → class logits (B, num_classes)."""

    config_class: ClassVar[type[ClassifierConfig]] = ClassifierConfig

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        width_in = config.image_channels
        for width in config.widths:
            layers += [
                nn.Conv2d(width_in, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            width_in = width
        self.body = nn.Sequential(*layers)
        flat = width_in * config.grid_size**2
        self.hidden = nn.Linear(flat, config.feature_dim)
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (B, feature_dim): the space the Fréchet distance is taken in."""
        h = self.body(x)  # (B, widths[-1], grid, grid)
        return torch.relu(self.hidden(h.flatten(1)))  # (B, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, num_classes)
