"""latentgram command line: every step of a run, each safe to re-run.

latentgram prepare --run runs/default       # data → BL-AE → encode → tables → samples
latentgram --help                           # all commands
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import duckdb
import numpy as np
import torch
import typer

from models import PRESETS, TrainConfig
from models.arvm_train import ARVMTrainConfig
from service.arvm_training import train_run_arvm
from service.checkpoints import load_blae
from service.codec import decode_packed
from service.engine import RunEngine
from service.errors import InvalidInputError, LatentgramError
from service.imaging import make_grid, save_png
from service.index import NgramIndex
from service.migrate import migrate as apply_migrations
from service.migrate import status as migration_status
from service.parquet_io import read_latents, write_latents
from service.pipeline import (
    DEFAULT_GAMMAS,
    DataSpec,
    build_run_tables,
    describe,
    encode_run,
    ids_selection,
    parse_int_list,
    sample_run,
    samples_as_latents,
    train_run_autoencoder,
)
from service.report import (
    REPORT_JSON,
    REPORT_MODES,
    REPORT_PLOT,
    ReportConfig,
    build_report,
    parse_modes,
)
from service.run import DEFAULT_RUN_DIR, RunPaths
from service.sampler import SampleConfig
from service.store import list_tables, open_store

app = typer.Typer(
    help="Latent n-gram image generation: see where generation ends and memorization begins.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

RunOpt = Annotated[Path, typer.Option("--run", help="Run directory (created if missing).")]
SourceOpt = Annotated[
    str,
    typer.Option(
        help="Data source: fashion-mnist (Debian package), idx:PATH (MNIST-layout IDX files), "
        "cifar10:PATH (CIFAR-10 python archive or folder) or folder:PATH (a sub-folder per class)."
    ),
]
LimitOpt = Annotated[
    int | None, typer.Option(help="Keep only the first N images of each split.", min=1)
]
ClassesOpt = Annotated[
    str | None, typer.Option(help="Comma-separated labels to keep, e.g. 0,7,9 (default: all).")
]
PresetOpt = Annotated[str, typer.Option(help=f"BL-AE architecture preset: {', '.join(PRESETS)}.")]
EpochsOpt = Annotated[int, typer.Option(help="Training epochs (total, also when resuming).", min=1)]
DeviceOpt = Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda or cuda:N.")]
GammasOpt = Annotated[str, typer.Option(help="Comma-separated odd window sizes ≥ 3, e.g. 3,5,7.")]


def _emit(title: str, figures: dict[str, Any]) -> None:
    typer.echo(f"{title}\n{json.dumps(figures, indent=2)}")


@app.command()
def data(
    source: SourceOpt = "fashion-mnist",
    limit: LimitOpt = None,
    classes: ClassesOpt = None,
    preview: Annotated[
        Path | None, typer.Option(help="Write a PNG grid of the first 64 training images here.")
    ] = None,
) -> None:
    """Load a data source, check it, and print its counts, shape and classes."""
    images = DataSpec(source, limit, parse_int_list(classes, "--classes")).load()
    figures = describe(images)
    figures["class_names"] = list(images.class_names)
    if preview is not None:
        save_png(make_grid(images.split("train").images[:64]), preview)
        figures["preview"] = str(preview)
    _emit("data source", figures)


@app.command("train-ae")
def train_ae(
    run: RunOpt = DEFAULT_RUN_DIR,
    source: SourceOpt = "fashion-mnist",
    limit: LimitOpt = None,
    classes: ClassesOpt = None,
    preset: PresetOpt = "default",
    latent_channels: Annotated[
        int | None, typer.Option(help="Bits per latent cell C (1..16); default: the preset's.")
    ] = None,
    sigma: Annotated[
        float | None, typer.Option(help="Noise scale σ (default preset: 1.25).")
    ] = None,
    kappa: Annotated[
        float | None,
        typer.Option(help="Tri(κ) shape: 1 uniform, > 1 mass near ±1 (preset: 2), 0.5 triangle."),
    ] = None,
    noise: Annotated[str | None, typer.Option(help="triangular or gaussian.")] = None,
    epochs: EpochsOpt = TrainConfig.epochs,
    batch_size: Annotated[
        int, typer.Option(help="Images per step.", min=1)
    ] = TrainConfig.batch_size,
    lr: Annotated[float, typer.Option(help="Adam learning rate.", min=0)] = TrainConfig.lr,
    seed: Annotated[int, typer.Option(help="Seed for init, shuffles and noise.")] = 0,
    precision: Annotated[
        str, typer.Option(help="fp32, bf16, or auto (bf16 on CUDA or CPUs with native bf16).")
    ] = "auto",
    device: DeviceOpt = "auto",
    resume: Annotated[
        bool, typer.Option(help="Continue from the run's checkpoint up to --epochs.")
    ] = False,
) -> None:
    """Train the Binary Latent Autoencoder; metrics, curve and checkpoints go to the run."""
    overrides = {
        k: v
        for k, v in dict(
            latent_channels=latent_channels, sigma=sigma, kappa=kappa, noise=noise
        ).items()
        if v is not None
    }
    summary = train_run_autoencoder(
        RunPaths(run),
        DataSpec(source, limit, parse_int_list(classes, "--classes")),
        preset=preset,
        overrides=overrides,
        train_config=_train_config(
            epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, precision=precision
        ),
        resume=resume,
        device=device,
    )
    _emit(f"BL-AE trained: {run}", _training_figures(summary))


def _train_config(**fields: Any) -> TrainConfig:
    try:
        return TrainConfig(**fields)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from exc


def _training_figures(summary: Any) -> dict[str, Any]:
    return {
        "epochs": summary.epochs_done,
        "wall_s": round(summary.wall_s, 1),
        "train": asdict(summary.train),
        "test": asdict(summary.test) if summary.test else None,
    }


@app.command()
def encode(
    run: RunOpt = DEFAULT_RUN_DIR,
    device: DeviceOpt = "cpu",
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.", min=1)] = 1024,
) -> None:
    """Encode the run's images with its BL-AE into images.parquet and latents.parquet."""
    summary = encode_run(RunPaths(run), device=device, batch_size=batch_size)
    _emit(f"encoded: {RunPaths(run).latents}", asdict(summary))


@app.command()
def decode(
    out: Annotated[Path, typer.Option(help="A .png file (one grid) or a folder (one PNG per id).")],
    run: RunOpt = DEFAULT_RUN_DIR,
    latents: Annotated[
        Path | None, typer.Option(help="latents.parquet to decode (default: the run's).")
    ] = None,
    ids: Annotated[str | None, typer.Option(help="Comma-separated ids to decode.")] = None,
    limit: Annotated[int, typer.Option(help="Decode the first N latents.", min=1)] = 64,
) -> None:
    """Decode latents back into images through the run's BL-AE."""
    paths = RunPaths(run)
    model = load_blae(paths).model
    chosen = ids_selection(
        read_latents(latents or paths.latents), parse_int_list(ids, "--ids"), limit
    )
    if chosen.shape != model.config.latent_shape:
        raise InvalidInputError(
            f"latents have shape {chosen.shape}, the run's BL-AE makes {model.config.latent_shape}"
        )
    images = decode_packed(model, chosen.packed)
    if out.suffix.lower() == ".png":
        save_png(make_grid(images), out)
    else:
        for image_id, image in zip(chosen.ids, images, strict=True):
            save_png(image, out / f"{int(image_id)}.png")
    _emit("decoded", {"images": len(images), "out": str(out)})


@app.command()
def migrate(
    run: RunOpt = DEFAULT_RUN_DIR,
    show_status: Annotated[
        bool, typer.Option("--status", help="Only show current and latest schema versions.")
    ] = False,
) -> None:
    """Bring the run's DuckDB store up to the latest schema (migrating twice is a no-op)."""
    paths = RunPaths(run)
    if show_status:
        store = paths.require(paths.store, "migrate")
        with open_store(store, read_only=True, check_schema=False) as con:
            state = migration_status(con)
        _emit(f"store: {paths.store}", asdict(state))
        return
    paths.root.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(paths.store)) as con:
        applied = apply_migrations(con)
        state = migration_status(con)
    _emit(f"store: {paths.store}", {**asdict(state), "applied_now": applied})


@app.command()
def build(
    run: RunOpt = DEFAULT_RUN_DIR,
    gamma: GammasOpt = ",".join(map(str, DEFAULT_GAMMAS)),
    positional: Annotated[
        bool, typer.Option(help="Add the position (y, x) to every context key.")
    ] = False,
) -> None:
    """Build the exact n-gram tables (context → next-token histograms) of the training latents."""
    gammas = parse_int_list(gamma, "--gamma") or DEFAULT_GAMMAS
    built = build_run_tables(RunPaths(run), gammas, positional=positional)
    _emit("tables built", {t.name: _table_figures(t) for t in built})


def _table_figures(table: Any) -> dict[str, Any]:
    return {
        "windows": table.windows,
        "contexts": table.contexts,
        "rows": table.rows,
        "images": table.images,
        "build_s": round(table.build_seconds, 3),
    }


@app.command("train-arvm")
def train_arvm_command(
    run: RunOpt = DEFAULT_RUN_DIR,
    gamma: GammasOpt = ",".join(map(str, DEFAULT_GAMMAS)),
    epochs: EpochsOpt = ARVMTrainConfig.epochs,
    batch_size: Annotated[int, typer.Option(help="Contexts per step.", min=1)] = (
        ARVMTrainConfig.batch_size
    ),
    lr: Annotated[float, typer.Option(help="Peak Adam learning rate.", min=0)] = ARVMTrainConfig.lr,
    hidden: Annotated[int, typer.Option(help="Width of the hidden layers.", min=1)] = 1024,
    layers: Annotated[int, typer.Option(help="Number of hidden layers.", min=1)] = 2,
    seed: Annotated[int, typer.Option(help="Seed for init and shuffles.")] = 0,
    positional: Annotated[bool, typer.Option(help="Train on the positional table.")] = False,
    device: DeviceOpt = "auto",
) -> None:
    """Train the γ-ARVM (KL to the table's histograms) for each γ; checkpoints go to the run."""
    config = ARVMTrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    results = {}
    for g in parse_int_list(gamma, "--gamma") or DEFAULT_GAMMAS:
        summary = train_run_arvm(
            RunPaths(run),
            g,
            config=config,
            hidden=hidden,
            layers=layers,
            positional=positional,
            device=device,
        )
        results[f"g{g}"] = asdict(summary)
    _emit("γ-ARVMs trained", results)


@app.command()
def tables(run: RunOpt = DEFAULT_RUN_DIR) -> None:
    """List the n-gram tables built in the run's store, with their sizes."""
    paths = RunPaths(run)
    with open_store(paths.require(paths.store, "build"), read_only=True) as con:
        built = list_tables(con)
    if not built:
        typer.echo("no tables built yet: run `latentgram build`")
        return
    typer.echo(
        f"{'table':<6} {'γ':>3} {'windows':>10} {'contexts':>10} {'rows':>10}"
        f" {'index MiB':>9} {'built':>20}"
    )
    for t in built:
        typer.echo(
            f"{t.name:<6} {t.gamma:>3} {t.windows:>10,} {t.contexts:>10,} {t.rows:>10,}"
            f" {NgramIndex.nbytes_of(t) / 2**20:>9.1f} {t.created_at:%Y-%m-%d %H:%M:%S}"
        )


@app.command()
def sample(
    out: Annotated[Path, typer.Option(help="PNG grid of the decoded samples.")] = Path(
        "samples.png"
    ),
    run: RunOpt = DEFAULT_RUN_DIR,
    gamma: Annotated[int, typer.Option(help="Window size of the table to sample from.")] = 5,
    n: Annotated[int, typer.Option("-n", "--n", help="Number of samples.", min=1)] = 64,
    seed: Annotated[int, typer.Option(help="Same seed, same samples.")] = 0,
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
    paths = RunPaths(run)
    config = SampleConfig(n=n, seed=seed, temperature=temperature, budget=budget)
    result = sample_run(
        paths,
        gamma=gamma,
        config=config,
        mode=mode,
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
    _emit(
        f"samples: {out} (latents: {latents_path})",
        {
            "gamma": gamma,
            "mode": mode,
            "ok": int(batch.ok.sum()),
            "neural_share": round(float(batch.neural_share.mean()), 4) if len(batch) else 0.0,
            "failed": failures,
            "median_backtracks": float(np.median(batch.backtracks)) if len(batch) else 0.0,
            "index_mib": round(result.index_bytes / 2**20, 2),
        },
    )


# γ-ARVMs in `prepare`: small enough for a 2-core CPU (about a minute per γ); on a GPU, train
# wider and longer with `latentgram train-arvm` to reach the KL the paper reports.
PREPARE_ARVM_EPOCHS = 1
PREPARE_ARVM_HIDDEN = 256


@app.command()
def prepare(
    run: RunOpt = DEFAULT_RUN_DIR,
    source: SourceOpt = "fashion-mnist",
    limit: LimitOpt = None,
    classes: ClassesOpt = None,
    preset: PresetOpt = "default",
    epochs: EpochsOpt = TrainConfig.epochs,
    device: DeviceOpt = "auto",
    resume: Annotated[
        bool, typer.Option(help="Keep a finished BL-AE checkpoint instead of retraining it.")
    ] = True,
    arvm_epochs: Annotated[
        int, typer.Option(help="γ-ARVM training epochs per γ (0: train none).", min=0)
    ] = PREPARE_ARVM_EPOCHS,
    arvm_hidden: Annotated[
        int, typer.Option(help="Width of the γ-ARVMs' hidden layers.", min=1)
    ] = PREPARE_ARVM_HIDDEN,
) -> None:
    """Run the whole pipeline with defaults: data → BL-AE → encode → n-gram tables → γ-ARVMs →
    samples."""
    paths = RunPaths(run)
    training = train_run_autoencoder(
        paths,
        DataSpec(source, limit, parse_int_list(classes, "--classes")),
        preset=preset,
        train_config=_train_config(epochs=epochs),
        resume=resume,
        device=device,
    )
    encoded = encode_run(paths)
    built = build_run_tables(paths, DEFAULT_GAMMAS)
    arvms = {}
    if arvm_epochs:
        config = ARVMTrainConfig(epochs=arvm_epochs)
        for g in DEFAULT_GAMMAS:
            summary = train_run_arvm(paths, g, config=config, hidden=arvm_hidden, device=device)
            arvms[f"g{g}"] = asdict(summary)
    sheet = paths.reports / "samples-g5.png"
    samples = sample_run(paths, gamma=5, config=SampleConfig(n=64, seed=0))
    save_png(make_grid(samples.images[samples.batch.ok]), sheet)
    figures = {
        "run": str(paths.root.resolve()),
        "blae": _training_figures(training),
        "encode": asdict(encoded),
        "tables": {t.name: _table_figures(t) for t in built},
        "arvms": arvms,
        "training_curve": str(paths.blae_curve),
        "samples": str(sheet),
    }
    _emit(f"run ready: {paths.root.resolve()}", figures)


@app.command()
def report(
    run: RunOpt = DEFAULT_RUN_DIR,
    samples: Annotated[
        int, typer.Option(help="Samples per γ and mode (and test images in the baseline).", min=2)
    ] = ReportConfig.samples,
    gamma: Annotated[
        str | None, typer.Option(help="Comma-separated γ (default: every table built).")
    ] = None,
    modes: Annotated[
        str, typer.Option(help="Comma-separated sampling modes among exact, hybrid, neural.")
    ] = ",".join(REPORT_MODES),
    seed: Annotated[int, typer.Option(help="Same seed, same samples.")] = 0,
    budget: Annotated[int, typer.Option(help="Search steps per exact sample.", min=1)] = (
        ReportConfig.budget
    ),
    inception: Annotated[
        Path | None,
        typer.Option(
            help="inception-2015-12-05.pt (TorchScript Inception-v3) to also report the standard "
            "FID; without it only the classifier Fréchet distance is reported."
        ),
    ] = None,
) -> None:
    """Memorization report: how often samples copy training images, per γ and mode, beside a
    held-out baseline; JSON, plots and sample sheets in the run's reports/ folder."""
    config = ReportConfig(
        samples=samples,
        gammas=parse_int_list(gamma, "--gamma"),
        modes=parse_modes(modes),
        seed=seed,
        budget=budget,
        inception=inception,
    )
    paths = RunPaths(run)
    result = build_report(RunEngine.load(paths.root), config)
    _emit(
        f"report: {paths.reports / REPORT_JSON} (plot: {paths.reports / REPORT_PLOT})",
        {"seconds": result["seconds"], **result["summary"]},
    )


@app.command()
def serve(
    run: RunOpt = DEFAULT_RUN_DIR,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for all).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the run over HTTP: the /v1 API, /docs, the web page at /, /healthz, /metrics.

    Limits and the API key come from LATENTGRAM_* variables (see README, "The service").
    """
    import uvicorn  # the web stack loads only for this command

    from service.api import Settings, create_app

    settings = Settings.from_env(run=run)
    # Requests run side by side in threads; each one's small decode gains nothing from more
    # than one core, and several multi-threaded ones at once stall each other.
    torch.set_num_threads(1)
    typer.echo(f"serving {settings.run} on http://{host}:{port} (API docs at /docs)")
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except LatentgramError as exc:
        typer.echo(f"latentgram: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("latentgram: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
