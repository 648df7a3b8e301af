"""Train a run's γ-ARVM (DESIGN.md §6): histograms from the store, KL on the training contexts
and on the test split's contexts each epoch, checkpoint and metrics into the run.

latentgram train-arvm --run runs/r1 --gamma 5      # what this module does, from the command line
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from models import ARVMConfig, ARVMTrainConfig, GammaARVM
from models.arvm_train import HistogramSet, evaluate_kl, train_arvm
from service.checkpoint import save_checkpoint
from service.data.parquet import read_latents
from service.devices import resolve_device
from service.files import file_sha256
from service.ngram.histograms import Histograms, grid_histograms, table_histograms
from service.ngram.store import TableInfo, get_table, open_store
from service.ngram.windows import context_size
from service.run.paths import RunPaths
from service.run.record import update_run_json

log = logging.getLogger(__name__)


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
    contexts: int
    train_kl: float
    test_kl: float | None
    wall_s: float


def train_run_arvm(
    paths: RunPaths,
    gamma: int,
    *,
    config: ARVMTrainConfig | None = None,
    hidden: int = 1024,
    layers: int = 2,
    positional: bool = False,
    progress: bool = True,
    device: str = "auto",
) -> ARVMSummary:
    """Train the γ-ARVM on the γ table's histograms; checkpoint and metrics into the run."""
    config = config or ARVMTrainConfig()
    target = resolve_device(device)
    with open_store(paths.require(paths.store, "build"), read_only=True) as con:
        info = get_table(con, gamma, positional)
        train = histogram_set(table_histograms(con, info))
    latents = read_latents(paths.latents)
    test_latents = latents.select(latents.splits == "test")
    test = None
    if len(test_latents):
        test = histogram_set(grid_histograms(test_latents.token_grids(), gamma, positional))
    arvm_config = ARVMConfig(
        gamma=gamma,
        context_size=context_size(gamma),
        latent_channels=info.latent_channels,
        positions=info.grid_height * info.grid_width if positional else 0,
        hidden=hidden,
        layers=layers,
    )
    torch.manual_seed(config.seed)
    model = GammaARVM(arvm_config).to(target)
    started = time.perf_counter()
    last = _fit(paths, model, train, test, config, info, progress)
    save_checkpoint(
        paths.arvm_weights(gamma, positional),
        model.cpu(),
        train=config.to_dict(),
        table_id=info.table_id,
    )
    summary = ARVMSummary(
        gamma, len(train), last["train_kl"], last["test_kl"], time.perf_counter() - started
    )
    _record(paths, summary, arvm_config, config, positional)
    return summary


def _fit(
    paths: RunPaths,
    model: GammaARVM,
    train: HistogramSet,
    test: HistogramSet | None,
    config: ARVMTrainConfig,
    info: TableInfo,
    progress: bool,
) -> dict[str, Any]:
    """Train with a progress bar, writing the KL figures of every epoch; returns the last."""
    steps = config.epochs * -(-len(train) // config.batch_size)
    bar = tqdm(total=steps, desc=f"train γ-ARVM {info.name}", unit="step", disable=not progress)
    metrics_path = paths.arvm_metrics(info.gamma, info.positional)
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.unlink(missing_ok=True)
    started = time.perf_counter()
    last: dict[str, Any] = {}

    def on_step(step: int, loss: float) -> None:
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(kl=f"{loss:.2e}")

    def on_epoch(epoch: int, m: GammaARVM) -> None:
        last.update(
            epoch=epoch,
            elapsed_s=round(time.perf_counter() - started, 1),
            train_kl=evaluate_kl(m, train),
            test_kl=evaluate_kl(m, test) if test is not None else None,
        )
        with metrics_path.open("a") as f:
            f.write(json.dumps(last) + "\n")
        log.info("γ-ARVM %s epoch %d: %s", info.name, epoch, last)

    train_arvm(model, train, config, on_step=on_step, on_epoch=on_epoch)
    bar.close()
    return last


def _record(
    paths: RunPaths,
    summary: ARVMSummary,
    arvm_config: ARVMConfig,
    config: ARVMTrainConfig,
    positional: bool,
) -> None:
    weights = paths.arvm_weights(summary.gamma, positional)
    update_run_json(
        paths,
        weights.stem,
        {
            "config": arvm_config.to_dict(),
            "train": config.to_dict(),
            "contexts": summary.contexts,
            "train_kl": summary.train_kl,
            "test_kl": summary.test_kl,
            "wall_s": round(summary.wall_s, 1),
            "weights_sha256": file_sha256(weights),
        },
    )
