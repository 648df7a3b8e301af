import pytest
import torch

from models.noise import sample_noise, triangular_noise


@pytest.mark.parametrize("kappa", [0.5, 1.0, 2.0, 4.0])
def test_triangular_support_shape_and_variance(kappa: float) -> None:
    g = torch.Generator().manual_seed(0)
    eps = triangular_noise((400_000,), kappa, generator=g)
    assert eps.shape == (400_000,)
    assert eps.abs().max() <= 1.0
    # |ε| = 1 − u^κ with u ~ U(0, 1): E|ε| = κ/(κ+1), E[ε²] = 1 − 2/(κ+1) + 1/(2κ+1)
    assert abs(eps.mean().item()) < 5e-3
    assert eps.abs().mean().item() == pytest.approx(kappa / (kappa + 1), rel=0.01)
    assert eps.pow(2).mean().item() == pytest.approx(
        1 - 2 / (kappa + 1) + 1 / (2 * kappa + 1), rel=0.02
    )


def test_kappa_half_is_the_plain_triangle() -> None:
    eps = triangular_noise((1_000_000,), 0.5, generator=torch.Generator().manual_seed(1))
    hist = torch.histc(eps, bins=10, min=-1, max=1) / len(eps)
    edges = torch.linspace(-1, 1, 11)
    # mass of the triangle 1−|ε| over each bin
    cdf = torch.where(edges < 0, (1 + edges) ** 2 / 2, 1 - (1 - edges) ** 2 / 2)
    torch.testing.assert_close(hist, cdf[1:] - cdf[:-1], atol=2e-3, rtol=0)


def test_larger_kappa_moves_mass_to_the_edges() -> None:
    g = torch.Generator().manual_seed(2)
    near_edge = [
        (triangular_noise((100_000,), k, generator=g).abs() > 0.9).float().mean().item()
        for k in (0.5, 1, 2, 8)
    ]
    assert near_edge == sorted(near_edge) and near_edge[2] == pytest.approx(0.1**0.5, abs=0.01)


def test_gaussian_option_and_bad_kind() -> None:
    like = torch.zeros(200_000)
    eps = sample_noise(like, "gaussian", 2.0, torch.Generator().manual_seed(0))
    assert eps.std().item() == pytest.approx(1.0, rel=0.01)
    with pytest.raises(ValueError, match="noise kind"):
        sample_noise(like, "laplace", 2.0)
    with pytest.raises(ValueError, match="kappa"):
        triangular_noise((3,), 0.0)
