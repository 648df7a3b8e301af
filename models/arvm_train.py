"""γ-ARVM training on n-gram histograms with the count-weighted KL loss (the paper's eq. 10).

Σ_c n_c KL(q_c ‖ p_c) = Σ_c n_c Σ_t q_c(t) log q_c(t) − Σ_(c,t) count(c, t) log p(t | c): the first
sum does not depend on the network, so minimizing eq. 10 is minimizing the count-weighted
negative log-likelihood of the table's rows (context, token, count). Training therefore steps
through batches of rows, all of them held on the training device, contexts in a random order and
each context's rows side by side (grouped_order), with no host work per step beyond the loop;
the few contexts that hold more counts than a step's rows are in every step instead (Strata).

Two uses, two stopping rules (ARVMTrainConfig.use):
- fallback: stop when the KL on held-out contexts has not improved for `patience` epochs and keep
  the best epoch's weights: the network must generalize to contexts the table never saw;
- memorizer: stop once the train KL is ≤ `target_kl` (the paper's memorizing end), or when the
  budget (epochs, seconds) runs out; the result says which.

PyTorch only: the caller reads the histograms from the store and handles progress and files.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from models.arvm import GammaARVM
from models.common import adam
from models.config import ARVM_USES, ModelConfig
from models.device import PRECISIONS, autocast_for, enable_tf32

EVAL_CONTEXTS = {"cpu": 2048, "cuda": 32768}  # contexts per forward pass measuring the KL


@dataclass(frozen=True)
class ARVMTrainConfig(ModelConfig):
    use: str = "fallback"  # "fallback" or "memorizer": the stopping rule (module docstring)
    max_epochs: int = 8  # budget: passes over the table's rows
    max_seconds: float | None = None  # budget in wall time, checked every step; None: epochs only
    batch_size: int = 4096  # rows per step; large batches keep a GPU busy
    lr: float = 3e-3  # peak AdamW learning rate: linear warm-up, then cosine decay to 1 %
    warmup: float = 0.02  # share of the budget's steps spent warming up
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    patience: int = 2  # fallback: epochs without a better held-out KL before it stops
    target_kl: float = 1e-3  # memorizer: the train KL (nats) it stops at
    precision: str = "auto"  # "fp32", "bf16" (autocast), or "auto": bf16 where it is fast
    seed: int = 0  # initialization and batch order

    def __post_init__(self) -> None:
        if self.use not in ARVM_USES:
            raise ValueError(f"use must be one of {', '.join(ARVM_USES)}, got {self.use!r}")
        if self.max_epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError("max_epochs, batch_size and patience must be ≥ 1")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0, got {self.max_seconds}")
        if not (0 < self.lr < math.inf and 0 < self.target_kl < math.inf and 0 <= self.warmup < 1):
            raise ValueError("lr and target_kl must be finite and > 0, and warmup in [0, 1)")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")


@dataclass(frozen=True)
class HistogramSet:
    """A table's rows (context, token, count) as tensors, grouped by context (CSR)."""

    contexts: torch.Tensor  # (M, K) int32 tokens, PAD = 2^C
    positions: torch.Tensor | None  # (M,) int64 raster positions, for positional models
    starts: torch.Tensor  # (M + 1,) int64: rows of context m are starts[m] … starts[m+1] − 1
    row_context: torch.Tensor  # (R,) int64 context of each row
    tokens: torch.Tensor  # (R,) int64 next token
    counts: torch.Tensor  # (R,) float32 windows with this context and token (weights, eq. 10)
    log_q: torch.Tensor  # (R,) float32 log q(token | context)

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
        row_context = torch.repeat_interleave(torch.arange(len(contexts)), lengths)
        totals = torch.zeros(len(contexts), dtype=torch.float64).index_add_(
            0, row_context, counts.double()
        )
        log_q = (counts.double() / totals[row_context]).log().float()
        return cls(
            contexts.to(torch.int32),
            positions,
            starts,
            row_context,
            tokens,
            counts.float(),
            log_q,
        )

    def __len__(self) -> int:
        """Rows: (context, token) pairs."""
        return len(self.tokens)

    def to(self, device: torch.device) -> HistogramSet:
        """Every tensor on `device` (once, before training: no copies per step)."""
        positions = self.positions.to(device) if self.positions is not None else None
        return HistogramSet(
            self.contexts.to(device),
            positions,
            self.starts.to(device),
            self.row_context.to(device),
            self.tokens.to(device),
            self.counts.to(device),
            self.log_q.to(device),
        )


@dataclass(frozen=True)
class Strata:
    """Eq. 10 split in two, so that every step carries the same weight and each context its
    share of the counts. Heavy contexts hold more counts than an average step's rows (at γ = 3
    on the default run: 25 contexts, 14 % of the counts, 4,497 of 589,324 rows; the first
    position's all-PAD context alone 1/16): every step trains on them with their exact share.
    The light rest is drawn in batches, each step's rows weighted by their own counts.

    Drawn with the rest, a heavy context outweighed the rows of its step many times over, so a
    step's count-weighted mean trained it once an epoch (1 step in 600) and it got far less
    than eq. 10 gives it, while the sum over one constant let Adam's step sizes follow those
    rare heavy steps (README: Notes and deviations)."""

    heavy: torch.Tensor  # (H,) heavy contexts
    heavy_counts: torch.Tensor  # (H, 2^C) their histograms, dense: a product, not a gather
    light_row: torch.Tensor  # (R,) bool: the row's context is light
    heavy_share: float  # the heavy contexts' share of the counts
    total: float  # the table's counts

    @classmethod
    def of(cls, data: HistogramSet, batch_size: int, vocabulary: int) -> Strata:
        """The strata of a table trained `batch_size` rows a step, with 2^C = `vocabulary`."""
        device = data.counts.device
        totals = torch.zeros(len(data.contexts), dtype=torch.float64, device=device)
        totals.index_add_(0, data.row_context, data.counts.double())
        total = float(totals.sum())
        is_heavy = totals > total / max(1, math.ceil(len(data) / batch_size))
        if bool(is_heavy.all()):  # nothing left to draw: a tiny table trains as one stratum
            is_heavy[:] = False
        heavy = torch.nonzero(is_heavy).flatten()
        light_row = ~is_heavy[data.row_context]
        rows = torch.nonzero(~light_row).flatten()
        place = torch.full((len(data.contexts),), -1, dtype=torch.int64, device=device)
        place[heavy] = torch.arange(len(heavy), device=device)
        heavy_counts = torch.zeros(len(heavy), vocabulary, device=device)
        heavy_counts[place[data.row_context[rows]], data.tokens[rows]] = data.counts[rows]
        share = float(totals[heavy].sum()) / max(total, 1e-12)
        return cls(heavy, heavy_counts, light_row, share, total)

    @property
    def light_rows(self) -> int:
        return int(self.light_row.sum())


def model_device(model: GammaARVM) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def row_log_probs(model: GammaARVM, data: HistogramSet) -> torch.Tensor:
    """(R,) log p(token | context) of every row, one forward pass per context."""
    device = model_device(model)
    was_training = model.training
    model.eval()
    out = torch.empty(len(data), device=device)
    m, chunk = len(data.contexts), EVAL_CONTEXTS.get(device.type, 2048)
    starts = data.starts.cpu().tolist()  # row bounds read on the host, not one sync per chunk
    for a in range(0, m, chunk):
        b = min(a + chunk, m)
        first, last = starts[a], starts[b]
        positions = data.positions[a:b].to(device) if data.positions is not None else None
        logits = model(data.contexts[a:b].to(device), positions)  # (b − a, 2^C)
        log_p = F.log_softmax(logits.float(), dim=-1)
        local = data.row_context[first:last].to(device) - a
        out[first:last] = log_p[local, data.tokens[first:last].to(device)]
    model.train(was_training)
    return out


def entropy(data: HistogramSet) -> float:
    """Count-weighted mean entropy of the histograms, in nats: the loss's floor (eq. 10)."""
    counts = data.counts.double()
    return float(-(counts * data.log_q.double()).sum() / counts.sum().clamp(min=1e-12))


def evaluate_kl(model: GammaARVM, data: HistogramSet) -> float:
    """Count-weighted mean KL(q ‖ p) in nats over every context of `data` (eq. 10)."""
    log_p = row_log_probs(model, data)
    counts = data.counts.to(log_p.device)
    kl = (counts * (data.log_q.to(log_p.device) - log_p)).sum()
    return float(kl) / max(float(counts.sum()), 1e-12)


@dataclass(frozen=True)
class ARVMFit:
    """How a training run ended."""

    epochs: int  # epochs trained
    best_epoch: int  # the epoch whose weights the model holds now
    stopped: str  # "target" (train KL ≤ target_kl), "patience" (held-out KL stalled), "budget"
    train_kl: float  # of the weights kept
    heldout_kl: float | None  # of the weights kept, on the held-out set it was given
    contexts_per_s: float  # rows (context, token) trained on per second, evaluation excluded
    seconds: float  # wall time, evaluation included


EpochCallback = Callable[[dict[str, float | int | None]], None]
StepCallback = Callable[[int, float], None]


@dataclass
class _Progress:
    """What the loop tracks between epochs."""

    epochs: int = 0
    epoch_loss: float = math.inf  # the last epoch's mean training loss (weighted NLL)
    best_kl: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    train_seconds: float = 0.0
    rows_seen: int = 0
    stopped: str = "budget"


def fit_arvm(
    model: GammaARVM,
    train: HistogramSet,
    config: ARVMTrainConfig,
    *,
    heldout: HistogramSet | None = None,
    on_step: StepCallback | None = None,
    on_epoch: EpochCallback | None = None,
) -> ARVMFit:
    """Train `model` (already on its device) on `train` until the rule of `config.use` stops it.

    `heldout` is what the fallback's rule watches; without it the fallback trains its whole
    budget. on_step(step, loss) is called every 50 steps, counting steps from the start (a
    loss read waits for the device, so it is not done every step).
    """
    device = model_device(model)
    enable_tf32(device)
    train = train.to(device)
    strata = Strata.of(train, config.batch_size, model.config.vocab)
    optimizer = adam(model.parameters(), config.lr, config.weight_decay)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    steps_per_epoch = math.ceil(strata.light_rows / config.batch_size)
    progress, started = _Progress(), time.perf_counter()
    for epoch in range(1, config.max_epochs + 1):
        epoch_started = time.perf_counter()
        rows, epoch_loss, budget_left = _train_epoch(
            model, train, strata, config, optimizer, generator, epoch, steps_per_epoch, started,
            on_step,
        )  # fmt: skip
        progress.epoch_loss = float(epoch_loss)  # syncs
        progress.train_seconds += time.perf_counter() - epoch_started
        progress.rows_seen += rows
        progress.epochs = epoch
        figures = _end_epoch(model, train, heldout, config, epoch, progress)
        figures["elapsed_s"] = round(time.perf_counter() - started, 2)
        figures["contexts_per_s"] = round(progress.rows_seen / max(progress.train_seconds, 1e-9))
        if on_epoch is not None:
            on_epoch(figures)
        if progress.stopped != "budget" or not budget_left:
            break
    return _finish(model, train, heldout, config, progress, time.perf_counter() - started)


def _train_epoch(
    model: GammaARVM,
    data: HistogramSet,
    strata: Strata,
    config: ARVMTrainConfig,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    epoch: int,
    steps_per_epoch: int,
    started: float,
    on_step: StepCallback | None,
) -> tuple[int, torch.Tensor, bool]:
    """One pass over the light rows, contexts in a random order, the heavy contexts in every
    step (Strata): the rows trained on, the epoch's count-weighted mean loss (a tensor on the
    device) and False when the time budget ran out."""
    device = model_device(model)
    order = grouped_order(data, generator)
    order = order[strata.light_row[order]]
    sums = torch.zeros(3, device=device)  # light weighted loss, light weight, heavy loss
    total_steps = config.max_epochs * steps_per_epoch
    model.train()
    steps, budget_left = 0, True
    for step, idx in enumerate(order.split(config.batch_size)):
        elapsed = time.perf_counter() - started
        if config.max_seconds is not None and elapsed > config.max_seconds:
            budget_left = False
            break
        done = ((epoch - 1) * steps_per_epoch + step) / total_steps
        if config.max_seconds is not None:
            done = max(done, elapsed / config.max_seconds)
        _set_lr(optimizer, config, done)
        loss, (weighted, weights, heavy) = step_loss(model, data, strata, idx, config.precision)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sums += torch.stack([weighted.detach(), weights, heavy.detach()])
        steps += 1
        if on_step is not None and step % 50 == 0:
            on_step((epoch - 1) * steps_per_epoch + step, float(loss.detach()))
    light_mean = sums[0] / sums[1].clamp(min=1e-12)
    heavy_mean = sums[2] / max(steps, 1) / max(strata.total, 1e-12)
    epoch_loss = (1 - strata.heavy_share) * light_mean + heavy_mean
    return min(steps * config.batch_size, len(order)), epoch_loss, budget_left


def step_loss(
    model: GammaARVM, data: HistogramSet, strata: Strata, idx: torch.Tensor, precision: str
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """A step's loss on the light rows `idx` and every heavy context, and its parts: Σ count ·
    NLL and Σ count of those rows, Σ count · NLL of the heavy rows.

    The light rows count by their own count-weighted mean, not by eq. 10's sum over one
    constant, which would weigh a step by the counts it holds; the heavy contexts, which made
    those differences, are in every step with their share (Strata). With every light row in
    `idx` the loss is eq. 10's count-weighted mean NLL over the whole table."""
    row_context = data.row_context[idx]
    positions = data.positions[row_context] if data.positions is not None else None
    with autocast_for(model_device(model), precision):
        logits = model(data.contexts[row_context], positions)  # (B, 2^C)
    nll = F.cross_entropy(logits.float(), data.tokens[idx], reduction="none")  # (B,)
    weighted, weights = (data.counts[idx] * nll).sum(), data.counts[idx].sum()
    loss = (1 - strata.heavy_share) * weighted / weights.clamp(min=1e-12)
    heavy = torch.zeros((), device=weights.device)
    if len(strata.heavy):
        # a forward pass of their own: one pass over both, cut in two, took 40 % longer a step
        # (the backward pass of each cut fills a gradient of the whole output)
        positions = data.positions[strata.heavy] if data.positions is not None else None
        with autocast_for(model_device(model), precision):
            logits = model(data.contexts[strata.heavy], positions)  # (H, 2^C)
        heavy = -(strata.heavy_counts * F.log_softmax(logits.float(), dim=-1)).sum()
        loss = loss + heavy / strata.total
    return loss, (weighted, weights, heavy)


def grouped_order(data: HistogramSet, generator: torch.Generator) -> torch.Tensor:
    """(R,) every row once, contexts in a random order and the rows of a context together.

    Kept together, the rows of a context meet in one step (or two, where a batch boundary cuts
    it): its gradient pulls p toward the whole histogram q at once. Rows drawn one by one instead
    pull p toward one token, then another, and a small batch never settles on q. Measured: on a
    table with two-token histograms, 400 epochs of rows in random order left the KL at 2.5e-3
    where grouped batches of the same size reached 1e-3 in 285; on the first 1,000 images of the
    default run (γ = 7) 4 CPU minutes reached 6e-3 against 1.8e-3. Built on the device with no
    host synchronization (output_size).
    """
    m = len(data.contexts)
    contexts = torch.randperm(m, device=data.starts.device, generator=generator)
    lengths = (data.starts[1:] - data.starts[:-1])[contexts]  # (M,) rows of each, new order
    first = data.starts[:-1][contexts]  # where each context's rows start
    placed = torch.cumsum(lengths, 0) - lengths  # where they go in the new order
    shift = torch.repeat_interleave(first - placed, lengths, output_size=len(data))
    return torch.arange(len(data), device=shift.device) + shift


def _set_lr(optimizer: torch.optim.Optimizer, config: ARVMTrainConfig, done: float) -> None:
    """Linear warm-up over `warmup` of the budget, then cosine decay to 1 % of the peak."""
    if done < config.warmup:
        scale = (done + 1e-3) / config.warmup
    else:
        rest = (done - config.warmup) / (1 - config.warmup)
        scale = 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(rest, 1.0)))
    for group in optimizer.param_groups:
        group["lr"] = config.lr * min(scale, 1.0)


def _end_epoch(
    model: GammaARVM,
    train: HistogramSet,
    heldout: HistogramSet | None,
    config: ARVMTrainConfig,
    epoch: int,
    progress: _Progress,
) -> dict[str, float | int | None]:
    """Measure what the stopping rule needs, apply the rule, and return the epoch's figures."""
    figures: dict[str, float | int | None] = {"epoch": epoch}
    if config.use == "memorizer":
        progress.best_epoch = epoch
        # The epoch's mean loss minus the table's entropy estimates the train KL for free (it
        # lags, as the weights improved during the epoch): the exact pass runs only near the
        # bound, and every tenth epoch for the record.
        estimate = progress.epoch_loss - entropy(train)
        figures["train_kl_estimate"] = estimate
        if estimate <= 3 * config.target_kl or epoch % 10 == 0:
            kl = evaluate_kl(model, train)
            figures["train_kl"] = kl
            if kl <= config.target_kl:
                progress.stopped = "target"
        return figures
    if heldout is None:
        progress.best_epoch = epoch
        return figures
    kl = evaluate_kl(model, heldout)
    figures["heldout_kl"] = kl
    if kl < progress.best_kl:
        progress.best_kl, progress.best_epoch = kl, epoch
        progress.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    elif epoch - progress.best_epoch >= config.patience:
        progress.stopped = "patience"
    return figures


def _finish(
    model: GammaARVM,
    train: HistogramSet,
    heldout: HistogramSet | None,
    config: ARVMTrainConfig,
    progress: _Progress,
    seconds: float,
) -> ARVMFit:
    """Keep the best epoch's weights (fallback) and measure them."""
    if progress.best_state:
        model.load_state_dict(progress.best_state)
    model.eval()
    return ARVMFit(
        epochs=progress.epochs,
        best_epoch=progress.best_epoch,
        stopped=progress.stopped,
        train_kl=evaluate_kl(model, train),
        heldout_kl=evaluate_kl(model, heldout) if heldout is not None else None,
        contexts_per_s=progress.rows_seen / max(progress.train_seconds, 1e-9),
        seconds=seconds,
    )
