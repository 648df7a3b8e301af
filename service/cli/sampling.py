"""Commands that generate: train the γ-ARVMs, draw samples in any mode."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from models.config import ARVM_USES
from service.cli.app import (
    DeviceOpt,
    RunOpt,
    SeedOpt,
    app,
    emit,
    output_file,
    parse_int_list,
    positive_number,
)
from service.data.images import make_grid, save_png
from service.data.parquet import write_latents
from service.errors import InvalidInputError
from service.ngram.samples import MAX_SEED, SampleConfig, parse_mode
from service.ngram.windows import check_gamma
from service.run.build import built_gammas, check_run_gamma
from service.run.paths import DEFAULT_RUN_DIR, RunPaths


@app.command("train-arvm")
def train_arvm_command(
    run: RunOpt = DEFAULT_RUN_DIR,
    gamma: Annotated[
        str | None,
        typer.Option(help="Comma-separated γ of built tables (default: every one built)."),
    ] = None,
    use: Annotated[
        str,
        typer.Option(
            help="fallback: stop when the KL on held-out contexts stalls (what prepare trains); "
            "memorizer: train until the train KL is ≤ --target-kl or the budget ends."
        ),
    ] = "fallback",
    max_epochs: Annotated[
        int | None,
        typer.Option(help="Budget in passes over the table (default: the use's).", min=1),
    ] = None,
    max_seconds: Annotated[
        float | None,
        typer.Option(help="Budget in seconds of training, per γ.", callback=positive_number),
    ] = None,
    target_kl: Annotated[
        float | None,
        typer.Option(
            help="The memorizer's train KL bound, in nats (1e-3).", callback=positive_number
        ),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Table rows per step.", min=1)] = None,
    lr: Annotated[
        float | None, typer.Option(help="Peak AdamW learning rate.", callback=positive_number)
    ] = None,
    hidden: Annotated[int | None, typer.Option(help="Width of the residual stream.", min=1)] = None,
    blocks: Annotated[int | None, typer.Option(help="Residual MLP blocks.", min=0)] = None,
    seed: Annotated[
        int, typer.Option(help="Seed for init and batch order.", min=0, max=MAX_SEED)
    ] = 0,
    positional: Annotated[bool, typer.Option(help="Train on the positional table.")] = False,
    device: DeviceOpt = "auto",
) -> None:
    """Train the γ-ARVM (count-weighted KL to the table's histograms) for each γ; checkpoint,
    metrics per epoch and contexts/s go to the run."""
    if use not in ARVM_USES:  # these first: torch takes seconds to load
        raise InvalidInputError(f"--use must be one of {', '.join(ARVM_USES)}, got {use!r}")
    given = [check_gamma(g) for g in parse_int_list(gamma, "--gamma") or ()]
    paths = RunPaths(run).existing()
    for g in given:
        check_run_gamma(paths, g, table=True, positional=positional)
    gammas = given or built_gammas(paths, positional)
    from service.training.arvm import recipe, train_run_arvm

    chosen = recipe(
        use,
        max_epochs=max_epochs,
        max_seconds=max_seconds,
        target_kl=target_kl,
        batch_size=batch_size,
        lr=lr,
        hidden=hidden,
        blocks=blocks,
        seed=seed,
    )
    results = {}
    for g in gammas:
        summary = train_run_arvm(paths, g, use=chosen, positional=positional, device=device)
        results[f"g{g}"] = asdict(summary)
    emit("γ-ARVMs trained", results)


MAX_CLI_SAMPLES = 1 << 16  # a 256 × 256 grid of 28 px images is a 51-megapixel PNG


@app.command()
def sample(
    out: Annotated[Path, typer.Option(help="PNG grid of the decoded samples.")] = Path(
        "samples.png"
    ),
    run: RunOpt = DEFAULT_RUN_DIR,
    gamma: Annotated[int, typer.Option(help="Window size of the table to sample from.")] = 5,
    n: Annotated[
        int,
        typer.Option(
            "-n",
            "--n",
            help="Number of samples, at most 65,536: one PNG grid holds them all (`report` "
            "measures more).",
            min=1,
            max=MAX_CLI_SAMPLES,
        ),
    ] = 64,
    seed: SeedOpt = 0,
    temperature: Annotated[
        float, typer.Option(help="Weights are count^(1/T); < 1 sharpens, > 1 flattens.")
    ] = 1.0,
    budget: Annotated[int, typer.Option(help="Search steps allowed per sample.", min=1)] = 1000,
    positional: Annotated[bool, typer.Option(help="Sample from the positional table.")] = False,
    mode: Annotated[
        str,
        typer.Option(
            help="exact (search with backtracking), backoff (smaller γ tables where γ has no "
            "answer), hybrid (the γ-ARVM where the table has no answer) or neural (γ-ARVM only)."
        ),
    ] = "exact",
    complete: Annotated[
        bool,
        typer.Option(help="Finish exact samples whose budget ran out in hybrid mode."),
    ] = False,
) -> None:
    """Draw samples; writes a PNG grid of the finished ones and their latents as Parquet."""
    if out.suffix.lower() != ".png":
        raise InvalidInputError(f"--out must be a .png file (the latents go beside it), got {out}")
    config = SampleConfig(n=n, seed=seed, temperature=temperature, budget=budget)
    chosen = parse_mode(mode)
    paths = RunPaths(run).existing()
    check_gamma(gamma)
    check_run_gamma(paths, gamma, table=chosen != "neural", positional=positional)
    output_file(out)  # these first: torch takes seconds to load
    from service.run.steps import sample_run, samples_as_latents

    result = sample_run(
        paths,
        gamma=gamma,
        config=config,
        mode=chosen,
        positional=positional,
        complete_with_hybrid=complete,
    )
    batch = result.batch
    save_png(make_grid(result.images[batch.ok]), out)
    latents_path = out.with_suffix(".parquet")
    write_latents(latents_path, samples_as_latents(result))
    failures = {
        str(k): int(v)
        for k, v in zip(*np.unique(batch.failure[~batch.ok], return_counts=True), strict=True)
    }
    emit(
        f"samples: {out} (latents: {latents_path})",
        {
            "gamma": gamma,
            "mode": mode,
            "ok": int(batch.ok.sum()),
            "neural_share": round(float(batch.neural_share.mean()), 4) if len(batch) else 0.0,
            "failed": failures,
            "median_backtracks": float(np.median(batch.backtracks)) if len(batch) else 0.0,
            "median_jumps": float(np.median(batch.jumps)) if len(batch) else 0.0,
            "index_mib": round(result.index_bytes / 2**20, 2),
        },
    )
