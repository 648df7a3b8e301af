"""Noise added to the BL-AE's tanh codes during training (the paper's MEPS argument, DESIGN.md §2).

With noise of bounded support σ, the codes of two images stay distinguishable only when they are
more than 2σ apart; the cheapest way for the encoder to keep them apart is to saturate tanh at ±1,
which is what makes the latents binary.
"""

from __future__ import annotations

import torch

NOISE_KINDS = ("triangular", "gaussian")


def triangular_noise(
    shape: torch.Size | tuple[int, ...],
    kappa: float,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw ε ∈ (−1, 1) from the generalized triangular distribution Tri(κ).

    u ~ U(−1, 1); ε = 1 − |u|^(1/κ) for u > 0, |u|^(1/κ) − 1 otherwise. The density is
    κ/2 · (1 − |ε|)^(κ−1): κ = 1 is uniform, κ = 2 the plain triangle, larger κ is more peaked.
    DESIGN.md writes the exponent as κ; taken literally that gives a density ∝ (1 − |ε|)^(1/κ − 1),
    not a triangle at κ = 2, so we follow its stated intent (κ = 2 is the plain triangle).
    """
    if kappa <= 0:
        raise ValueError(f"kappa must be > 0, got {kappa}")
    u = torch.rand(shape, device=device, generator=generator) * 2 - 1
    magnitude = 1 - u.abs().pow(1.0 / kappa)
    return torch.where(u > 0, magnitude, -magnitude)


def sample_noise(
    like: torch.Tensor, kind: str, kappa: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Unit-scale noise shaped like `like`: Tri(κ) or standard Gaussian."""
    if kind == "triangular":
        return triangular_noise(like.shape, kappa, device=like.device, generator=generator).to(
            like.dtype
        )
    if kind == "gaussian":
        return torch.randn(like.shape, device=like.device, generator=generator, dtype=like.dtype)
    raise ValueError(f"noise kind must be one of {NOISE_KINDS}, got {kind!r}")
