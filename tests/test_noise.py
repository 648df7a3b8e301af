import pytest
import torch

from models.noise import sample_noise, triangular_noise


@pytest.mark.parametrize("kappa", [0.5, 1.0, 2.0, 4.0])
def test_triangular_support_shape_and_variance(kappa: float) -> None:
    g = torch.Generator().manual_seed(0)
    eps = triangular_noise((400_000,), kappa, generator=g)
    assert eps.shape == (400_000,)
    assert eps.abs().max() <= 1.0
    # density κ/2·(1−|ε|)^(κ−1) has mean 0 and E[ε²] = 2 / ((κ+1)(κ+2))
    assert abs(eps.mean().item()) < 5e-3
    assert eps.pow(2).mean().item() == pytest.approx(2 / ((kappa + 1) * (kappa + 2)), rel=0.02)


def test_kappa_two_is_the_plain_triangle() -> None:
    eps = triangular_noise((1_000_000,), 2.0, generator=torch.Generator().manual_seed(1))
    hist = torch.histc(eps, bins=10, min=-1, max=1) / len(eps)
    edges = torch.linspace(-1, 1, 11)
    # mass of the triangle 1−|ε| over each bin
    cdf = torch.where(edges < 0, (1 + edges) ** 2 / 2, 1 - (1 - edges) ** 2 / 2)
    torch.testing.assert_close(hist, cdf[1:] - cdf[:-1], atol=2e-3, rtol=0)


def test_larger_kappa_is_more_peaked() -> None:
    g = torch.Generator().manual_seed(2)
    spread = [triangular_noise((100_000,), k, generator=g).abs().mean().item() for k in (1, 2, 8)]
    assert spread[0] > spread[1] > spread[2]


def test_gaussian_option_and_bad_kind() -> None:
    like = torch.zeros(200_000)
    eps = sample_noise(like, "gaussian", 2.0, torch.Generator().manual_seed(0))
    assert eps.std().item() == pytest.approx(1.0, rel=0.01)
    with pytest.raises(ValueError, match="noise kind"):
        sample_noise(like, "laplace", 2.0)
    with pytest.raises(ValueError, match="kappa"):
        triangular_noise((3,), 0.0)
