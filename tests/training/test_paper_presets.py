"""The paper presets train without collapsing, as every other preset does (test_presets.py):
apart, so that a parallel run trains them beside the others."""

from __future__ import annotations

import pytest
import torch

from models import PRESETS
from tests.training.test_presets import assert_trains_without_collapsing


@pytest.mark.parametrize("preset", sorted(p for p in PRESETS if p.startswith("paper-")))
def test_every_paper_preset_trains_without_collapsing(
    preset: str, thousand_images: torch.Tensor
) -> None:
    assert_trains_without_collapsing(preset, thousand_images)
