"""Train and load the γ-ARVM of a run (DESIGN.md §6): histograms from the store, checkpoints
beside the other run files, KL on training contexts and on unseen test contexts each epoch."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from models.arvm import ARVMConfig, GammaARVM
from models.arvm_train import ARVMTrainConfig, HistogramSet, evaluate_kl, train_arvm
from models.train import pick_device
from service.bits import bits_to_tokens
from service.errors import InvalidInputError, RunError
from service.index import group_offsets
from service.parquet_io import LatentSet, read_latents
from service.run import RunPaths, file_sha256, update_run_json
from service.store import (
    TableInfo,
    get_table,
    open_store,
    read_contexts,
    read_table,
    table_name,
)
from service.windows import build_windows, context_size

log = logging.getLogger(__name__)


def arvm_paths(paths: RunPaths, gamma: int, positional: bool = False) -> tuple[Path, Path]:
    """(weights, config) files of the γ-ARVM: arvm-g5.*, or arvm-g5p.* for a positional one."""
    name = f"arvm-{table_name(gamma, positional)}"
    return paths.root / f"{name}.safetensors", paths.root / f"{name}.json"


def table_histograms(con: duckdb.DuckDBPyConnection, info: TableInfo) -> HistogramSet:
    """Every distinct context of a table with its histogram, through Arrow."""
    table = read_table(con, info, ("context_key", "token", "count"))
    starts = group_offsets(table.column("context_key").to_numpy())
    contexts = read_contexts(con, info)  # one row per context, in the same key order
    if len(contexts) != len(starts) - 1:
        raise RunError(f"table {info.name} is inconsistent: rebuild it with `latentgram build`")
    k = context_size(info.gamma)
    blobs = contexts.column("context").combine_chunks()
    raw = np.frombuffer(blobs.buffers()[2], np.uint8)  # variable-size binary: values buffer
    offsets = np.frombuffer(blobs.buffers()[1], np.int32)[: len(blobs) + 1]
    tokens = raw[offsets[:-1, None] + np.arange(4 * k)[None, :]].view("<u4").astype(np.int64)
    positions = None
    if info.positional:
        positions = torch.from_numpy(contexts.column("position").to_numpy().astype(np.int64))
    return HistogramSet.from_counts(
        contexts=torch.from_numpy(tokens.reshape(-1, k)),
        starts=torch.from_numpy(starts),
        tokens=torch.from_numpy(table.column("token").to_numpy().astype(np.int64)),
        counts=torch.from_numpy(table.column("count").to_numpy().astype(np.int64)),
        positions=positions,
    )


def latent_histograms(latents: LatentSet, gamma: int, positional: bool) -> HistogramSet:
    """Histograms of the windows of some latents (e.g. the test split), grouped in numpy."""
    tokens = bits_to_tokens(latents.bits())
    w = build_windows(tokens, latents.ids, gamma, pad=1 << latents.shape[0], positional=positional)
    order = np.lexsort((w.tokens, w.keys))
    keys, toks = w.keys[order], w.tokens[order]
    new_pair = np.r_[True, (keys[1:] != keys[:-1]) | (toks[1:] != toks[:-1])]
    pair_start = np.flatnonzero(new_pair)
    counts = np.diff(np.r_[pair_start, len(keys)])
    ctx_starts = group_offsets(keys[pair_start])
    window_of_ctx = order[pair_start[ctx_starts[:-1]]]
    return HistogramSet.from_counts(
        contexts=torch.from_numpy(w.contexts[window_of_ctx].astype(np.int64)),
        starts=torch.from_numpy(ctx_starts),
        tokens=torch.from_numpy(toks[pair_start]),
        counts=torch.from_numpy(counts.astype(np.int64)),
        positions=torch.from_numpy(w.positions[window_of_ctx]) if positional else None,
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
    try:
        target = pick_device(device)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    with open_store(paths.require(paths.store, "build"), read_only=True) as con:
        info = get_table(con, gamma, positional)
        train = table_histograms(con, info)
    latents = read_latents(paths.latents)
    test_latents = latents.select(latents.splits == "test")
    test = latent_histograms(test_latents, gamma, positional) if len(test_latents) else None
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
    steps = config.epochs * -(-len(train) // config.batch_size)
    bar = tqdm(total=steps, desc=f"train γ-ARVM g{gamma}", unit="step", disable=not progress)
    metrics_path = paths.reports / f"arvm-{table_name(gamma, positional)}-metrics.jsonl"
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
        log.info("γ-ARVM g%d epoch %d: %s", gamma, epoch, last)

    train_arvm(model, train, config, on_step=on_step, on_epoch=on_epoch)
    bar.close()
    save_arvm(paths, model.cpu(), config, table_id=info.table_id, positional=positional)
    summary = ARVMSummary(
        gamma, len(train), last["train_kl"], last["test_kl"], time.perf_counter() - started
    )
    update_run_json(
        paths,
        f"arvm-{table_name(gamma, positional)}",
        {
            "config": arvm_config.to_dict(),
            "train": config.to_dict(),
            "contexts": len(train),
            "train_kl": summary.train_kl,
            "test_kl": summary.test_kl,
            "wall_s": round(summary.wall_s, 1),
            "weights_sha256": file_sha256(arvm_paths(paths, gamma, positional)[0]),
        },
    )
    return summary


def save_arvm(
    paths: RunPaths,
    model: GammaARVM,
    config: ARVMTrainConfig,
    *,
    table_id: int,
    positional: bool = False,
) -> None:
    weights, meta = arvm_paths(paths, model.config.gamma, positional)
    tmp = weights.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, weights)
    tmp = meta.with_suffix(".tmp")
    body = {"config": model.config.to_dict(), "train": config.to_dict(), "table_id": table_id}
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    os.replace(tmp, meta)


def load_arvm(
    paths: RunPaths, gamma: int, positional: bool = False, device: str | torch.device = "cpu"
) -> GammaARVM:
    """The run's γ-ARVM, rebuilt from its JSON config and safetensors weights."""
    weights, meta = arvm_paths(paths, gamma, positional)
    if not weights.exists() or not meta.exists():
        flag = " --positional" if positional else ""
        raise RunError(
            f"no γ-ARVM for gamma={gamma}{flag} in {paths.root}: run "
            f"`latentgram train-arvm --run {paths.root} --gamma {gamma}{flag}` first"
        )
    config = ARVMConfig(**json.loads(meta.read_text())["config"])
    model = GammaARVM(config)
    model.load_state_dict(load_file(str(weights)))
    return model.to(device).eval()
