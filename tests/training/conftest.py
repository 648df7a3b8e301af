"""Fixtures of the training tests."""

from __future__ import annotations

import pytest
import torch

from service.data.sources import DataSpec


@pytest.fixture(scope="module")
def thousand_images(fashion_small: DataSpec) -> torch.Tensor:
    """The first 1,000 Fashion-MNIST training images, class-balanced, uint8 (N, 1, 28, 28)."""
    data = DataSpec(fashion_small.source, limit=1000).load()
    return torch.from_numpy(data.split("train").images)
