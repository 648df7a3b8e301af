"""γ-ARVM: the autoregressive random variable model of Zhao & Basu (DESIGN.md §6).

A network from one causal γ-window to logits over the 2^C next tokens. It is trained to predict
the whole histogram q(token | context) of the n-gram table, not a label, because one context can
have many next tokens; the loss is KL(q ‖ p) weighted by how often the context occurs (the
paper's eq. 10, models/arvm_train.py).

Each of the K context tokens is embedded twice over and the two are summed with a learned slot
embedding: a table lookup per token (4097 rows for C = 12), which lets the network tell every
training context apart and so memorize, and a projection of the token's C bits (±1, PAD a flag
of its own), which lets tokens that share bits share what they mean, so unseen contexts get
sensible guesses. The K embeddings are concatenated, projected to the hidden width, passed
through pre-norm residual MLP blocks, and mapped to the 2^C logits.
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
    positions: int = 0  # H·W when the raster position is an input, 0 otherwise
    embed: int = 32  # width of each context token's embedding
    hidden: int = 512  # width of the residual stream
    blocks: int = 2  # residual MLP blocks
    dropout: float = 0.0  # inside the blocks, while training (the fallback recipe uses some)

    def __post_init__(self) -> None:
        if not 1 <= self.latent_channels <= 16:
            raise ValueError(f"latent_channels must be 1..16, got {self.latent_channels}")
        if min(self.context_size, self.embed, self.hidden) < 1 or self.blocks < 0:
            raise ValueError("context_size, embed and hidden must be ≥ 1, blocks ≥ 0")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def vocab(self) -> int:
        return 1 << self.latent_channels


class ResidualBlock(nn.Module):
    """x + W2·GELU(W1·LayerNorm(x)), with 2× expansion: the transformer's MLP, without attention."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, 2 * width)
        self.down = nn.Linear(2 * width, width)
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.down.weight)  # each block starts as the identity: deep stacks train
        nn.init.zeros_(self.down.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.down(F.gelu(self.up(self.norm(x)))))


class GammaARVM(nn.Module):
    """Context window (B, K) of tokens → logits (B, 2^C) over the next token."""

    config_class: ClassVar[type[ARVMConfig]] = ARVMConfig

    def __init__(self, config: ARVMConfig) -> None:
        super().__init__()
        self.config = config
        c, k, e = config.latent_channels, config.context_size, config.embed
        self.token = nn.Embedding(config.vocab + 1, e)  # + 1: PAD
        self.bits = nn.Linear(c + 1, e, bias=False)  # C bits and the PAD flag
        self.slot = nn.Parameter(torch.zeros(k, e))  # which of the K window slots
        self.position = nn.Embedding(config.positions, config.hidden) if config.positions else None
        self.input = nn.Linear(k * e, config.hidden)
        self.blocks = nn.ModuleList(
            ResidualBlock(config.hidden, config.dropout) for _ in range(config.blocks)
        )
        self.norm = nn.LayerNorm(config.hidden)
        self.head = nn.Linear(config.hidden, config.vocab)
        nn.init.normal_(self.token.weight, std=0.02)
        nn.init.normal_(self.slot, std=0.02)
        self.shifts: torch.Tensor
        self.register_buffer("shifts", torch.arange(c), persistent=False)

    def forward(
        self, contexts: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, K) integer tokens, PAD = 2^C; positions (B,) when the config takes them."""
        contexts = contexts.long()
        pad = contexts == self.config.vocab  # (B, K)
        bits = ((contexts.unsqueeze(-1) >> self.shifts) & 1).float() * 2 - 1  # (B, K, C)
        bits = bits.masked_fill(pad.unsqueeze(-1), 0.0)
        features = torch.cat([bits, pad.unsqueeze(-1).float()], dim=-1)  # (B, K, C + 1)
        e = self.token(contexts) + self.bits(features) + self.slot  # (B, K, E)
        h = self.input(e.flatten(1))  # (B, hidden)
        if self.position is not None:
            if positions is None:
                raise ValueError("this γ-ARVM takes positions")
            h = h + self.position(positions.long())
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h))  # (B, 2^C)
