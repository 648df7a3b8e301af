"""latentgram command line: every step of a run, each safe to re-run.

latentgram prepare --run runs/default       # data → train BL-AE → encode, with defaults
latentgram --help                           # all commands
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from models import PRESETS, TrainConfig
from service.checkpoints import load_blae
from service.codec import decode_packed
from service.errors import InvalidInputError, LatentgramError
from service.imaging import make_grid, save_png
from service.parquet_io import read_latents
from service.pipeline import (
    DataSpec,
    describe,
    encode_run,
    ids_selection,
    parse_int_list,
    train_run_autoencoder,
)
from service.run import DEFAULT_RUN_DIR, RunPaths

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
    sigma: Annotated[float | None, typer.Option(help="Noise scale σ (preset: 1.0).")] = None,
    kappa: Annotated[float | None, typer.Option(help="Tri(κ) shape; 2 is a triangle.")] = None,
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
) -> None:
    """Run the whole pipeline with defaults: data → train BL-AE → encode."""
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
    figures = {
        "run": str(paths.root.resolve()),
        "blae": _training_figures(training),
        "encode": asdict(encoded),
        "training_curve": str(paths.blae_curve),
    }
    _emit(f"run ready: {paths.root.resolve()}", figures)


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
