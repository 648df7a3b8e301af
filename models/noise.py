"""Noise added to the BL-AE's tanh codes during training (the paper's MEPS argument, DESIGN.md §2).

With noise of bounded support σ, the codes of two images stay distinguishable only when they are
more than 2σ apart; the cheapest way for the encoder to keep them apart is to saturate tanh at ±1,
which is what makes the latents binary.
"""

from __future__ import annotations

import torch

from models.config import NOISE_KINDS


def triangular_noise(
    shape: torch.Size | tuple[int, ...],
    kappa: float,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw ε ∈ (−1, 1) from the generalized triangular distribution Tri(κ) of DESIGN.md §2.

    u ~ U(−1, 1); ε = 1 − u^κ for u > 0, |u|^κ − 1 otherwise. Its density is
    (1/2κ) · (1 − |ε|)^(1/κ − 1): κ = 1 is uniform, κ > 1 puts the mass near ±1 (κ = 2: density
    ∝ 1/√(1 − |ε|)), κ = 1/2 is the plain triangle 1 − |ε|. DESIGN.md calls κ = 2 the plain
    triangle; its formula says otherwise, and we follow the formula: noise that is mostly near
    ±σ is what drives the codes to ±1 (the plain triangle left a quarter of them soft, brate < 0.75,
    after two epochs of the default preset).
    """
    if kappa <= 0:
        raise ValueError(f"kappa must be > 0, got {kappa}")
    u = torch.rand(shape, device=device, generator=generator) * 2 - 1
    magnitude = 1 - u.abs().pow(kappa)
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
