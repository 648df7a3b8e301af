"""Train a run's γ-ARVM (DESIGN.md §6) for one of its two uses, with its checkpoint, metrics and
run.json entry.

latentgram train-arvm --run runs/r1 --gamma 5                       # the fallback (prepare's)
latentgram train-arvm --run runs/r1 --gamma 7 --use memorizer       # the paper's experiment

The test split is cut in two halves by image id (latents/latent_set.py): the fallback chooses its
epoch on the even ids ("selection") and its reported test KL comes from the odd ids ("report"),
so the images that pick the weights never grade them.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import torch
from tqdm import tqdm

from models import ARVMConfig, ARVMTrainConfig, GammaARVM
from models.arvm_train import ARVMFit, HistogramSet, evaluate_kl, fit_arvm
from service.checkpoint import save_checkpoint
from service.data.parquet import read_latents
from service.devices import resolve_device
from service.errors import InvalidInputError
from service.files import file_sha256
from service.ngram.histograms import Histograms, grid_histograms, table_histograms
from service.ngram.store import TableInfo, get_table, open_store
from service.ngram.windows import context_size
from service.run.paths import RunPaths
from service.run.record import update_run_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ARVMRecipe:
    """What one use trains: the network's size and the training config."""

    embed: int
    hidden: int
    blocks: int
    dropout: float
    train: ARVMTrainConfig


# Chosen by measurement on 2 CPU cores (README "γ-ARVMs"). The fallback is small, regularized and
# stops on held-out contexts. The memorizer is sized for CPU tables of about a thousand images
# (on the first 1,000 of the default run, hidden 384 × 2 blocks reached a lower KL in 4 minutes
# than 512 × 1 or 1024 × 2, which fit fewer steps); a GPU affords, and a 60,000-image table
# needs, a wider one (benchmarks/gpu_check.sh).
RECIPES = {
    "fallback": ARVMRecipe(
        embed=16,
        hidden=256,
        blocks=1,
        dropout=0.1,
        train=ARVMTrainConfig(
            use="fallback", max_epochs=2, batch_size=1024, lr=2e-3, weight_decay=0.01, patience=1
        ),
    ),
    "memorizer": ARVMRecipe(
        embed=32,
        hidden=384,
        blocks=2,
        dropout=0.0,
        train=ARVMTrainConfig(
            use="memorizer", max_epochs=1000, batch_size=256, lr=3e-3, target_kl=1e-3
        ),
    ),
}


def recipe(use: str, **overrides: Any) -> ARVMRecipe:
    """The recipe of `use` with some fields replaced (None keeps the recipe's value);
    InvalidInputError for an unknown use or a value out of range."""
    if use not in RECIPES:
        raise InvalidInputError(f"use must be one of {', '.join(RECIPES)}, got {use!r}")
    base = RECIPES[use]
    given = {k: v for k, v in overrides.items() if v is not None}
    sizes = {k: given.pop(k) for k in ("embed", "hidden", "blocks", "dropout") if k in given}
    try:
        return replace(base, train=replace(base.train, **given), **sizes)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


def histogram_set(histograms: Histograms) -> HistogramSet:
    """The n-gram engine's arrays as the tensors the γ-ARVM trains on."""
    positions = histograms.positions
    return HistogramSet.from_counts(
        contexts=torch.from_numpy(histograms.contexts),
        starts=torch.from_numpy(histograms.starts),
        tokens=torch.from_numpy(histograms.tokens),
        counts=torch.from_numpy(histograms.counts),
        positions=torch.from_numpy(positions) if positions is not None else None,
    )


@dataclass(frozen=True)
class ARVMSummary:
    gamma: int
    use: str
    contexts: int  # distinct contexts of the table
    rows: int  # (context, token) rows trained on
    epochs: int
    best_epoch: int
    stopped: str  # "target", "patience" or "budget" (models/arvm_train.py ARVMFit)
    train_kl: float
    selection_kl: float | None  # held-out KL on the half of the test split that chose the epoch
    test_kl: float | None  # held-out KL on the other half: the figure to report
    contexts_per_s: float
    wall_s: float


@dataclass(frozen=True)
class _Data:
    info: TableInfo
    train: HistogramSet
    selection: HistogramSet | None
    report: HistogramSet | None


def _read_data(paths: RunPaths, gamma: int, positional: bool) -> _Data:
    with open_store(paths.require(paths.store, "build"), read_only=True) as con:
        info = get_table(con, gamma, positional)
        train = histogram_set(table_histograms(con, info))
    latents = read_latents(paths.require(paths.latents, "encode"))
    selection, report = latents.holdout_halves()
    held = [
        histogram_set(grid_histograms(half.token_grids(), gamma, positional)) if len(half) else None
        for half in (selection, report)
    ]
    return _Data(info, train, held[0], held[1])


def train_run_arvm(
    paths: RunPaths,
    gamma: int,
    *,
    use: ARVMRecipe | str = "fallback",
    positional: bool = False,
    progress: bool = True,
    device: str = "auto",
) -> ARVMSummary:
    """Train the γ-ARVM of the (γ, positional) table; checkpoint and metrics into the run."""
    chosen = recipe(use) if isinstance(use, str) else use
    target = resolve_device(device)
    data = _read_data(paths, gamma, positional)
    info = data.info
    config = ARVMConfig(
        gamma=gamma,
        context_size=context_size(gamma),
        latent_channels=info.latent_channels,
        positions=info.grid_height * info.grid_width if positional else 0,
        embed=chosen.embed,
        hidden=chosen.hidden,
        blocks=chosen.blocks,
        dropout=chosen.dropout,
    )
    torch.manual_seed(chosen.train.seed)
    model = GammaARVM(config).to(target)
    fit = _fit(paths, model, data, chosen.train, progress)
    test_kl = evaluate_kl(model, data.report) if data.report is not None else None
    weights = paths.arvm_weights(gamma, positional)
    # model_sha256: the BL-AE whose tokens it predicts, checked as it loads (run/models.py)
    meta = {"table_id": info.table_id, "model_sha256": info.model_sha256}
    save_checkpoint(weights, model.cpu(), train=chosen.train.to_dict(), **meta)
    summary = ARVMSummary(
        gamma=gamma,
        use=chosen.train.use,
        contexts=len(data.train.contexts),
        rows=len(data.train),
        epochs=fit.epochs,
        best_epoch=fit.best_epoch,
        stopped=fit.stopped,
        train_kl=fit.train_kl,
        selection_kl=fit.heldout_kl,
        test_kl=test_kl,
        contexts_per_s=round(fit.contexts_per_s),
        wall_s=round(fit.seconds, 1),
    )
    update_run_json(
        paths,
        weights.stem,
        {
            "config": config.to_dict(),
            "train": chosen.train.to_dict(),
            "weights_sha256": file_sha256(weights),
            **summary.__dict__,
        },
    )
    return summary


def _fit(
    paths: RunPaths,
    model: GammaARVM,
    data: _Data,
    config: ARVMTrainConfig,
    progress: bool,
) -> ARVMFit:
    """Train with a progress bar, appending each epoch's figures to the metrics file."""
    info = data.info
    budget = f", ≤ {config.max_seconds:g} s" if config.max_seconds else ""
    bar = tqdm(total=config.max_epochs, desc=f"γ-ARVM {info.name} ({config.use}{budget})",
               unit="epoch", disable=not progress)  # fmt: skip
    metrics_path = paths.arvm_metrics(info.gamma, info.positional)
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.unlink(missing_ok=True)

    def on_step(step: int, loss: float) -> None:
        bar.set_postfix(loss=f"{loss:.3g}")

    def on_epoch(figures: dict[str, Any]) -> None:
        bar.update(1)
        shown = {k: f"{v:.3g}" for k, v in figures.items() if k.endswith("kl") and v is not None}
        bar.set_postfix(shown, contexts_per_s=figures["contexts_per_s"])
        with metrics_path.open("a") as f:
            f.write(json.dumps({"use": config.use, **figures}) + "\n")
        log.info("γ-ARVM %s epoch %s: %s", info.name, figures["epoch"], figures)

    started = time.perf_counter()
    fit = fit_arvm(
        model, data.train, config, heldout=data.selection, on_step=on_step, on_epoch=on_epoch
    )
    bar.close()
    log.info("γ-ARVM %s: %s after %.0f s", info.name, fit.stopped, time.perf_counter() - started)
    return fit
