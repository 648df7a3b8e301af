"""The encode-time search over a BL-AE's hard codes (models/code_search.py)."""

import pytest
import torch

from models import BLAE, binarize, blae_preset
from models.code_search import search_codes


def _model_and_images() -> tuple[BLAE, torch.Tensor]:
    torch.manual_seed(0)
    model = BLAE(blae_preset("tiny")).eval()
    images = torch.rand(12, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    return model, images


def _errors(model: BLAE, codes: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return (model.decode(codes) - images).pow(2).flatten(1).sum(1)


def test_the_search_never_raises_an_images_error_and_lowers_their_mean() -> None:
    model, images = _model_and_images()
    with torch.no_grad():
        signs = binarize(model.encode(images))
    found = search_codes(model, images, signs, passes=8, precision="fp32")
    assert found.shape == signs.shape and set(found.unique().tolist()) == {-1.0, 1.0}
    before, after = _errors(model, signs, images), _errors(model, found, images)
    assert torch.all(after <= before) and after.mean() < 0.97 * before.mean()
    flips = (found != signs).flatten(1).sum(1)
    assert flips.max() <= 8 and flips.sum() > 0  # at most one kept flip an image and pass
    assert torch.equal(search_codes(model, images, signs, passes=0), signs)


def test_more_passes_find_codes_at_least_as_good_and_negative_passes_are_refused() -> None:
    model, images = _model_and_images()
    with torch.no_grad():
        signs = binarize(model.encode(images))
    few = search_codes(model, images, signs, passes=2, precision="fp32")
    many = search_codes(model, images, signs, passes=12, precision="fp32")
    assert torch.all(_errors(model, many, images) <= _errors(model, few, images))
    with pytest.raises(ValueError, match="passes must be ≥ 0"):
        search_codes(model, images, signs, passes=-1)
