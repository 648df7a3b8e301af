"""Sampling modes beside exact search (DESIGN.md §5): backoff, hybrid and neural.

- exact: depth-first search with backtracking over the γ table (ngram/exact.py).
- backoff: one pass in raster order; the γ table where it knows the context, else the tables of
  smaller γ in turn (as KenLM backs off to shorter n-grams), else the γ-ARVM when there is one.
- hybrid: the γ table's histogram where it knows the context, the γ-ARVM where it does not.
- neural: the γ-ARVM everywhere.
The one-pass modes never backtrack. Each position reports the γ that answered it (0: neural).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from models.arvm import GammaARVM
from service.errors import InvalidInputError, RunError
from service.ngram.exact import ExactSampler
from service.ngram.index import NgramIndex
from service.ngram.samples import (
    FAILED_UNKNOWN,
    MODES,
    NEURAL,
    UNFILLED,
    Mode,
    SampleBatch,
    SampleConfig,
    uniform,
)
from service.ngram.store import missing_table_message
from service.ngram.windows import check_gamma_fits, context_keys, gather_contexts, pad_grids

_WALK_STEP = 1 << 40  # offsets the walk's random counters from the exact search's


@dataclass
class Sampler:
    """Samples from one family of tables (positional or not) and their γ-ARVMs, in any mode."""

    latent_shape: tuple[int, int, int]  # (C, H, W) of the run's latents
    indexes: Mapping[int, NgramIndex]  # γ → index
    networks: Mapping[int, GammaARVM]  # γ → trained γ-ARVM (may be empty)
    positional: bool = False  # whether the tables key contexts by position too
    search_threads: int | None = None  # threads one exact search may use (None: every core)

    def __post_init__(self) -> None:
        self._exact = {
            g: ExactSampler(i, threads=self.search_threads) for g, i in self.indexes.items()
        }

    def warm_up(self) -> None:
        """One exact sample per table: compiles the search (once per machine, numba caches it)
        and builds its hash tables, so that a first request does not wait for them."""
        for exact in self._exact.values():
            exact.sample(SampleConfig(n=1))

    def sample(
        self, gamma: int, mode: Mode, config: SampleConfig, *, complete_with_hybrid: bool = False
    ) -> SampleBatch:
        """n samples in `mode`; failed exact samples are finished in hybrid mode if asked."""
        if mode not in MODES:
            raise InvalidInputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        check_gamma_fits(gamma, *self.latent_shape[1:])
        if mode != "neural" and gamma not in self.indexes:
            built = [i.info.name for _, i in sorted(self.indexes.items())]
            raise RunError(missing_table_message(gamma, self.positional, built))
        if mode in ("hybrid", "neural") or (mode == "exact" and complete_with_hybrid):
            self.network(gamma)  # fail early, before any work
        if mode == "exact":
            batch = self._exact[gamma].sample(config)
            if complete_with_hybrid and not batch.ok.all():
                batch = self._walk(gamma, "hybrid", config, start=batch)
            return batch
        return self._walk(gamma, mode, config)

    def network(self, gamma: int) -> GammaARVM:
        if gamma not in self.networks:
            raise RunError(
                f"no γ-ARVM trained for gamma={gamma}: run `latentgram train-arvm --gamma {gamma}`"
            )
        return self.networks[gamma]

    def _walk(
        self, gamma: int, mode: Mode, config: SampleConfig, start: SampleBatch | None = None
    ) -> SampleBatch:
        """One raster pass over all samples at once; `start` supplies prefixes to keep."""
        net = self.networks.get(gamma)
        channels, h, w = self.latent_shape
        n, positions = config.n, h * w
        tokens = np.zeros((n, h, w), np.int64)
        examples = np.full((n, positions), -1, np.int64)
        answered = np.full((n, positions), UNFILLED, np.int64)
        placed = np.zeros(n, np.int64)
        failure = np.full(n, "", dtype=object)
        backtracks, jumps = np.zeros(n, np.int64), np.zeros(n, np.int64)
        if start is not None:  # keep what the exact search placed before it gave up
            tokens[:], examples[:], answered[:] = (
                start.tokens,
                start.examples.reshape(n, -1),
                start.answered_by.reshape(n, -1),
            )
            placed[:], backtracks[:], jumps[:] = start.placed, start.backtracks, start.jumps
        pad = 1 << channels
        chain = [gamma] if mode == "hybrid" else []
        if mode == "backoff":
            chain = [g for g in sorted(self.indexes, reverse=True) if g <= gamma]
        samples = np.arange(n)
        for pos in range(positions):
            todo = samples[(placed == pos) & (failure == "")]
            for g in chain:
                if not len(todo):
                    break
                todo = self._from_table(g, todo, pos, tokens, examples, answered, config)
            if len(todo) and (mode != "backoff" or net is not None):
                self._from_network(gamma, todo, pos, tokens, answered, config, pad)
                todo = todo[:0]
            failure[todo] = FAILED_UNKNOWN
            placed[(placed == pos) & (failure == "")] += 1
        return SampleBatch(
            tokens=tokens,
            ok=placed == positions,
            failure=failure.astype(str),
            backtracks=backtracks,
            jumps=jumps,
            steps=start.steps if start is not None else placed.copy(),
            examples=examples.reshape(n, h, w),
            answered_by=answered.reshape(n, h, w),
            placed=placed,
        )

    def _from_table(
        self,
        gamma: int,
        todo: np.ndarray,
        pos: int,
        tokens: np.ndarray,
        examples: np.ndarray,
        answered: np.ndarray,
        config: SampleConfig,
    ) -> np.ndarray:
        """Draw from the γ histogram where it knows the context; returns the samples it did not."""
        index = self.indexes[gamma]
        w = tokens.shape[2]
        ctx = _contexts_at(tokens, todo, pos, gamma, index.pad)
        keys = context_keys(ctx, np.full(len(todo), pos) if index.info.positional else None)
        found = index.lookup_keys(keys)
        known = todo[found.found]
        start, end = found.start[found.found], found.end[found.found]
        u = uniform(config.seed, known, np.full(len(known), _WALK_STEP + pos), gamma)
        row = self._exact[gamma].weights(config.temperature).draw(start, end, u)
        tokens[known, pos // w, pos % w] = index.tokens[row]
        examples[known, pos] = index.examples[row]
        answered[known, pos] = gamma
        return todo[~found.found]

    @torch.no_grad()
    def _from_network(
        self,
        gamma: int,
        todo: np.ndarray,
        pos: int,
        tokens: np.ndarray,
        answered: np.ndarray,
        config: SampleConfig,
        pad: int,
    ) -> None:
        """Draw from the γ-ARVM's distribution at temperature T, the network run once per
        distinct context (samples share many: all of them the first position's, and at 4,096
        neural samples 18–32 % of all rows repeat one, at γ = 7 to 3)."""
        net = self.network(gamma)
        w = tokens.shape[2]
        ctx, of_sample = np.unique(
            _contexts_at(tokens, todo, pos, gamma, pad), axis=0, return_inverse=True
        )
        device = next(net.parameters()).device
        positions = torch.full((len(ctx),), pos, device=device) if net.config.positions else None
        logits = net(torch.from_numpy(ctx).to(device), positions).float()
        u = uniform(config.seed, todo, np.full(len(todo), _WALK_STEP + pos), NEURAL)
        rows = torch.from_numpy(of_sample.reshape(-1)).to(device)
        drawn = draw_tokens(logits, torch.from_numpy(u).to(device), config.temperature, rows)
        tokens[todo, pos // w, pos % w] = drawn.cpu().numpy()
        answered[todo, pos] = NEURAL


DRAW_BLOCK = 64  # tokens per block of draw_tokens' two-level inverse CDF


def draw_tokens(
    logits: torch.Tensor, u: torch.Tensor, temperature: float, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """(B,) tokens, the i-th drawn with P ∝ exp(logits[rows[i]] / T) by the inverse CDF at the
    uniform u[i] (`rows`: all of them in order when None); `logits` (R, vocab) float32 are
    overwritten.

    In two levels: the block of DRAW_BLOCK tokens from the blocks' sums, then the token within
    it by its share of the block, so only one block per row is summed in order. A softmax, a
    cumulative sum over all 4,096 tokens and its copy in float64 made neural sampling at γ = 5
    spend 1.9 s of 4.5 s (4,096 grids) outside the network."""
    n, vocab = logits.shape
    if rows is None:
        rows = torch.arange(n, device=logits.device)
    weights = logits.sub_(logits.amax(-1, keepdim=True))
    if temperature != 1:
        weights.div_(temperature)
    weights.exp_()
    blocks = -(-vocab // DRAW_BLOCK)
    if blocks * DRAW_BLOCK > vocab:  # fewer than 64 tokens, or not a power of two
        weights = F.pad(weights, (0, blocks * DRAW_BLOCK - vocab))
    weights = weights.view(n, blocks, DRAW_BLOCK)
    block_sums = weights.sum(-1).double()[rows]  # (B, blocks); in float32: 16× faster here
    block_cum = block_sums.cumsum(-1)
    target = (u.double() * block_cum[:, -1]).unsqueeze(1)
    block = torch.searchsorted(block_cum, target).clamp_(max=blocks - 1)  # (B, 1)
    before = torch.where(block > 0, block_cum.gather(1, (block - 1).clamp(min=0)), 0.0)
    share = ((target - before) / block_sums.gather(1, block)).clamp_(0.0, 1.0)
    inner_cum = weights[rows, block[:, 0]].double().cumsum(-1)  # (B, DRAW_BLOCK)
    place = torch.searchsorted(inner_cum, share * inner_cum[:, -1:]).clamp_(max=DRAW_BLOCK - 1)
    return (block * DRAW_BLOCK + place).squeeze(1).clamp_(max=vocab - 1)


def _contexts_at(
    tokens: np.ndarray, samples: np.ndarray, pos: int, gamma: int, pad: int
) -> np.ndarray:
    """(len(samples), K) γ-contexts of raster position `pos` in the given samples' grids."""
    w = tokens.shape[2]
    grid = pad_grids(tokens[samples], gamma, pad)
    y, x = np.full(len(samples), pos // w), np.full(len(samples), pos % w)
    return gather_contexts(grid, np.arange(len(samples)), y, x, gamma)
