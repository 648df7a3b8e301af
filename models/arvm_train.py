"""γ-ARVM training on n-gram histograms with the count-weighted KL loss (the paper's eq. 10).

PyTorch only: the caller reads the histograms from the store and handles progress and files.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.arvm import GammaARVM
from models.common import set_cosine_lr
from models.config import ModelConfig


@dataclass(frozen=True)
class ARVMTrainConfig(ModelConfig):
    epochs: int = 8  # passes over the distinct contexts
    batch_size: int = 512  # contexts per step
    lr: float = 2e-3  # peak Adam learning rate, cosine-decayed
    seed: int = 0


@dataclass(frozen=True)
class HistogramSet:
    """Distinct contexts with their next-token histograms, rows grouped by context (CSR)."""

    contexts: torch.Tensor  # (M, K) int64 tokens, PAD = 2^C
    positions: torch.Tensor | None  # (M,) int64 raster positions, for positional models
    starts: torch.Tensor  # (M + 1,) int64: rows of context m are starts[m] … starts[m+1]−1
    tokens: torch.Tensor  # (R,) int64 next tokens
    probs: torch.Tensor  # (R,) float32 q(token | context); sums to 1 within each context
    weights: torch.Tensor  # (M,) float32 windows with this context (n_c in eq. 10)

    def __len__(self) -> int:
        return len(self.contexts)

    @classmethod
    def from_counts(
        cls,
        contexts: torch.Tensor,
        starts: torch.Tensor,
        tokens: torch.Tensor,
        counts: torch.Tensor,
        positions: torch.Tensor | None = None,
    ) -> HistogramSet:
        lengths = starts[1:] - starts[:-1]
        owner = torch.repeat_interleave(torch.arange(len(contexts)), lengths)
        totals = torch.zeros(len(contexts), dtype=torch.float64).index_add_(
            0, owner, counts.double()
        )
        probs = (counts.double() / totals[owner]).float()
        return cls(contexts, positions, starts, tokens, probs, totals.float())


def _rows_of(data: HistogramSet, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row ids of the contexts `idx` and, per row, its position in `idx`."""
    starts = data.starts[idx]
    lengths = data.starts[idx + 1] - starts
    local = torch.repeat_interleave(torch.arange(len(idx)), lengths)
    first = torch.cumsum(lengths, 0) - lengths
    rows = starts[local] + torch.arange(int(lengths.sum())) - first[local]
    return rows, local


def kl_per_context(model: GammaARVM, data: HistogramSet, idx: torch.Tensor) -> torch.Tensor:
    """KL(q ‖ p) of each context in `idx`: Σ_t q(t) (log q(t) − log p(t)) → (B,)."""
    device = next(model.parameters()).device
    positions = data.positions[idx].to(device) if data.positions is not None else None
    log_p = F.log_softmax(model(data.contexts[idx].to(device), positions).float(), dim=-1)
    rows, local = _rows_of(data, idx)
    q = data.probs[rows].to(device)
    local = local.to(device)
    terms = q * (torch.log(q) - log_p[local, data.tokens[rows].to(device)])
    return torch.zeros(len(idx), device=device).index_add_(0, local, terms)


@torch.no_grad()
def evaluate_kl(model: GammaARVM, data: HistogramSet, batch_size: int = 4096) -> float:
    """Count-weighted mean KL(q ‖ p) over every context of `data`."""
    was_training = model.training
    model.eval()
    total = 0.0
    for idx in torch.arange(len(data)).split(batch_size):
        kl = kl_per_context(model, data, idx).cpu()
        total += float((kl * data.weights[idx]).sum())
    model.train(was_training)
    return total / max(float(data.weights.sum()), 1e-12)


def train_arvm(
    model: GammaARVM,
    data: HistogramSet,
    config: ARVMTrainConfig,
    *,
    on_step: Callable[[int, float], None] | None = None,
    on_epoch: Callable[[int, GammaARVM], None] | None = None,
) -> None:
    """Minimize the count-weighted KL over all contexts, in shuffled batches."""
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    steps_per_epoch = math.ceil(len(data) / config.batch_size)
    total = config.epochs * steps_per_epoch
    model.train()
    for epoch in range(config.epochs):
        order = torch.randperm(
            len(data), generator=torch.Generator().manual_seed(config.seed + epoch)
        )
        for step, idx in enumerate(order.split(config.batch_size)):
            progress = (epoch * steps_per_epoch + step) / total
            set_cosine_lr(optimizer, config.lr, progress, floor=0.01)
            weights = data.weights[idx].to(next(model.parameters()).device)
            loss = (kl_per_context(model, data, idx) * weights).sum() / weights.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if on_step is not None:
                on_step(step, loss.item())
        if on_epoch is not None:
            on_epoch(epoch + 1, model)
