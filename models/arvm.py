"""γ-ARVM: the autoregressive random variable model of Zhao & Basu (DESIGN.md §6).

A small MLP from one causal γ-window (its tokens as ±1 bits, PAD as its own flag, optionally
the position) to logits over the 2^C next tokens. It is trained to predict the whole histogram
q(token | context) of the n-gram table, not a label, because one context can have many next
tokens; the loss is KL(q ‖ p) weighted by how often the context occurs (the paper's eq. 10).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from models.config import ModelConfig


@dataclass(frozen=True)
class ARVMConfig(ModelConfig):
    gamma: int  # window size the contexts come from
    context_size: int  # K tokens per context: 2r(r+1) for r = (γ−1)/2
    latent_channels: int  # C: tokens are 0 … 2^C − 1, PAD = 2^C
    positions: int = 0  # H·W when the position is an input, 0 otherwise
    hidden: int = 1024  # width of the hidden layers
    layers: int = 2  # hidden layers

    @property
    def vocab(self) -> int:
        return 1 << self.latent_channels

    @property
    def input_size(self) -> int:
        return self.context_size * (self.latent_channels + 1) + self.positions


def context_features(
    contexts: torch.Tensor, config: ARVMConfig, positions: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, K) tokens → (B, K·(C+1) [+ H·W]) floats: ±1 bits per token, 0 bits and flag 1 for PAD."""
    pad = contexts == config.vocab  # (B, K)
    shifts = torch.arange(config.latent_channels, device=contexts.device)
    bits = ((contexts.unsqueeze(-1) >> shifts) & 1).float() * 2 - 1  # (B, K, C)
    bits = bits.masked_fill(pad.unsqueeze(-1), 0.0)
    features = torch.cat([bits, pad.unsqueeze(-1).float()], dim=-1).flatten(1)
    if config.positions:
        if positions is None:
            raise ValueError("this γ-ARVM takes positions")
        features = torch.cat([features, F.one_hot(positions, config.positions).float()], dim=1)
    return features


class GammaARVM(nn.Module):
    """Context window → logits over the 2^C next tokens."""

    config_class: ClassVar[type[ARVMConfig]] = ARVMConfig

    def __init__(self, config: ARVMConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        width = config.input_size
        for _ in range(config.layers):
            layers += [nn.Linear(width, config.hidden), nn.GELU()]
            width = config.hidden
        layers.append(nn.Linear(width, config.vocab))
        self.net = nn.Sequential(*layers)

    def forward(
        self, contexts: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, K) tokens → (B, 2^C) logits."""
        return self.net(context_features(contexts, self.config, positions))
