"""Training loop of the report's classifier (models/classifier.py): cross-entropy, Adam, cosine.

PyTorch only: the caller checks the data, picks the device and shows progress through `on_step`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from models.classifier import Classifier, ClassifierTrainConfig
from models.common import adam, set_cosine_lr, shuffled_batches, to_unit


def train_classifier(
    model: Classifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: ClassifierTrainConfig,
    *,
    on_step: Callable[[int, float], None] | None = None,
) -> Classifier:
    """Train on uint8 images (N, C, S, S) and int64 labels (N,) on the model's device; returns
    the model in eval mode."""
    device = next(model.parameters()).device
    optimizer = adam(model.parameters(), config.lr)
    steps_per_epoch = -(-len(images) // config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    x, y = images.to(device), labels.to(device)
    model.train()
    for epoch in range(config.epochs):
        shuffle = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
        for step, idx in enumerate(shuffled_batches(len(x), config.batch_size, shuffle)):
            progress = (epoch * steps_per_epoch + step) / total_steps
            set_cosine_lr(optimizer, config.lr, progress, floor=0.02)
            idx = idx.to(device)
            loss = F.cross_entropy(model(to_unit(x[idx])), y[idx])  # (B, classes) vs (B,)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if on_step is not None:
                on_step(step, loss.item())
    return model.eval()
