"""`latentgram prepare`: the whole pipeline with defaults, data to samples."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from models import BLAETrainConfig
from service.cli.app import (
    ClassesOpt,
    DeviceOpt,
    EpochsOpt,
    LimitOpt,
    NewRunOpt,
    PresetOpt,
    SearchPassesOpt,
    SourceOpt,
    app,
    emit,
    parse_int_list,
)
from service.cli.autoencoder import blae_train_config, check_blae_config, training_figures
from service.cli.tables import table_figures
from service.data.images import make_grid, save_png
from service.data.sources import DataSpec
from service.ngram.samples import SampleConfig
from service.run.build import build_run_tables
from service.run.paths import DEFAULT_RUN_DIR, RunPaths


@app.command()
def prepare(
    run: NewRunOpt = DEFAULT_RUN_DIR,
    source: SourceOpt = "fashion-mnist",
    limit: LimitOpt = None,
    classes: ClassesOpt = None,
    preset: PresetOpt = "default",
    epochs: EpochsOpt = BLAETrainConfig.epochs,
    device: DeviceOpt = "auto",
    resume: Annotated[
        bool, typer.Option(help="Keep a finished BL-AE checkpoint instead of retraining it.")
    ] = True,
    arvm: Annotated[
        bool, typer.Option(help="Train the fallback γ-ARVM of each table (the hybrid mode's).")
    ] = True,
    arvm_max_epochs: Annotated[
        int | None, typer.Option(help="Their budget in epochs (default: the fallback's).", min=1)
    ] = None,
    search_passes: SearchPassesOpt = 0,
) -> None:
    """Run the whole pipeline with defaults: data → BL-AE → encode → n-gram tables → γ-ARVMs →
    samples."""
    check_blae_config(preset, {})  # these first: torch takes seconds to load
    train_config = blae_train_config(preset, epochs=epochs)
    data_spec = DataSpec(source, limit, parse_int_list(classes, "--classes"))
    from service.run.steps import encode_run, sample_run
    from service.training.arvm import recipe, train_run_arvm
    from service.training.autoencoder import train_run_autoencoder

    paths = RunPaths(run)
    training = train_run_autoencoder(
        paths,
        data_spec,
        preset=preset,
        train_config=train_config,
        resume=resume,
        device=device,
    )
    encoded = encode_run(paths, search_passes=search_passes)
    built = build_run_tables(paths)  # the grid's γ, from local to global
    arvms = {}
    if arvm:
        fallback = recipe("fallback", max_epochs=arvm_max_epochs)
        for g in (t.gamma for t in built):
            summary = train_run_arvm(paths, g, use=fallback, device=device)
            arvms[f"g{g}"] = asdict(summary)
    sheet = paths.reports / "samples-g5.png"
    samples = sample_run(paths, gamma=5, config=SampleConfig(n=64, seed=0))
    save_png(make_grid(samples.images[samples.batch.ok]), sheet)
    figures = {
        "run": str(paths.root.resolve()),
        "blae": training_figures(training),
        "encode": asdict(encoded),
        "tables": {t.name: table_figures(t) for t in built},
        "arvms": arvms,
        "training_curve": str(paths.blae_curve),
        "samples": str(sheet),
    }
    emit(f"run ready: {paths.root.resolve()}", figures)
