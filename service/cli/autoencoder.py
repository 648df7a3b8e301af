"""Commands of the first stages: look at a data source, train the BL-AE, encode, decode."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from models import BLAETrainConfig, blae_preset
from models.blae_config import SIGMAS, sigma_grid
from models.config import NOISE_KINDS
from service.cli.app import (
    ClassesOpt,
    DeviceOpt,
    EpochsOpt,
    LimitOpt,
    NewRunOpt,
    PresetOpt,
    RunOpt,
    SearchPassesOpt,
    SourceOpt,
    app,
    emit,
    output_file,
    parse_int_list,
    positive_number,
)
from service.data.images import make_grid, save_png
from service.data.parquet import read_latents
from service.data.sources import DataSpec, describe
from service.errors import InvalidInputError
from service.ngram.samples import MAX_SEED
from service.run.paths import DEFAULT_RUN_DIR, RunPaths

if TYPE_CHECKING:
    from service.training.autoencoder import TrainingSummary


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
    if preview is not None:
        output_file(preview, "--preview")
    images = DataSpec(source, limit, parse_int_list(classes, "--classes")).load()
    figures = describe(images)
    figures["class_names"] = list(images.class_names)
    if preview is not None:
        save_png(make_grid(images.split("train").images[:64]), preview)
        figures["preview"] = str(preview)
    emit("data source", figures)


@app.command("train-ae")
def train_ae(
    run: NewRunOpt = DEFAULT_RUN_DIR,
    source: SourceOpt = "fashion-mnist",
    limit: LimitOpt = None,
    classes: ClassesOpt = None,
    preset: PresetOpt = "default",
    latent_channels: Annotated[
        int | None, typer.Option(help="Bits per latent cell C (1..16); default: the preset's.")
    ] = None,
    sigma: Annotated[
        float | None, typer.Option(help="Noise scale σ (default: the preset's; most 1).")
    ] = None,
    kappa: Annotated[
        float | None,
        typer.Option(help="Tri(κ) shape: 1 uniform, > 1 mass near ±1 (preset: 2), 0.5 triangle."),
    ] = None,
    noise: Annotated[str | None, typer.Option(help="triangular or gaussian.")] = None,
    straight_through: Annotated[
        bool | None,
        typer.Option(
            help="Train on the codes' signs, the encoder's gradient through tanh at gain 1 "
            "(default: the preset's; all presets train the paper's way, on noisy tanh codes)."
        ),
    ] = None,
    epochs: EpochsOpt = BLAETrainConfig.epochs,
    batch_size: Annotated[
        int, typer.Option(help="Images per step.", min=1)
    ] = BLAETrainConfig.batch_size,
    lr: Annotated[
        float | None,
        typer.Option(
            help="Adam peak learning rate (default: the preset's; most 2e-3).",
            callback=positive_number,
        ),
    ] = None,
    decoder_polish: Annotated[
        float | None,
        typer.Option(
            help="Epochs of decoder-only training on the hard codes after the last epoch "
            "(default: the preset's; most 0.5, paper-t1 60, where its decoder memorizes)."
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed for init, shuffles and noise.", min=0, max=MAX_SEED)
    ] = 0,
    precision: Annotated[
        str, typer.Option(help="fp32, bf16, or auto (bf16 on CUDA or CPUs with native bf16).")
    ] = "auto",
    device: DeviceOpt = "auto",
    resume: Annotated[
        bool, typer.Option(help="Continue from the run's checkpoint up to --epochs.")
    ] = False,
    checkpoint_every: Annotated[
        int,
        typer.Option(
            help="Save the weights and optimizer state every N epochs and after the last "
            "(paper-t1's take 1 GB).",
            min=1,
        ),
    ] = 1,
) -> None:
    """Train the Binary Latent Autoencoder; metrics, curve and checkpoints go to the run."""
    overrides = {
        k: v
        for k, v in dict(
            latent_channels=latent_channels,
            sigma=sigma,
            kappa=kappa,
            noise=noise,
            straight_through=straight_through,
        ).items()
        if v is not None
    }
    check_blae_config(preset, overrides)  # these first: torch takes seconds to load
    train_config = blae_train_config(
        preset,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        decoder_polish=decoder_polish,
        seed=seed,
        precision=precision,
    )
    data_spec = DataSpec(source, limit, parse_int_list(classes, "--classes"))
    from service.training.autoencoder import train_run_autoencoder

    summary = train_run_autoencoder(
        RunPaths(run),
        data_spec,
        preset=preset,
        overrides=overrides,
        train_config=train_config,
        resume=resume,
        device=device,
        checkpoint_every=checkpoint_every,
    )
    emit(f"BL-AE trained: {run}", training_figures(summary))


def check_blae_config(preset: str, overrides: dict[str, Any]) -> None:
    """InvalidInputError for an unknown preset or options it cannot take (the image shape is
    checked again once the data is loaded)."""
    try:
        blae_preset(preset, **overrides)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from exc


def blae_train_config(preset: str, **fields: Any) -> BLAETrainConfig:
    """The training config of a preset, with the options given; ValueError as a user error."""
    try:
        return BLAETrainConfig.for_preset(preset, **fields)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from exc


def training_figures(summary: TrainingSummary) -> dict[str, Any]:
    return {
        "epochs": summary.epochs_done,
        "wall_s": round(summary.wall_s, 1),
        "train": asdict(summary.train),
        "test": asdict(summary.test) if summary.test else None,
    }


@app.command("ablate-sigma")
def ablate_sigma(
    run: RunOpt = DEFAULT_RUN_DIR,
    sigmas: Annotated[str, typer.Option(help="Comma-separated noise scales σ.")] = ",".join(
        map(str, SIGMAS)
    ),
    noises: Annotated[str, typer.Option(help="triangular, gaussian or both.")] = ",".join(
        NOISE_KINDS
    ),
    images: Annotated[int, typer.Option(help="Training images per decoder.", min=1)] = 5000,
    epochs: Annotated[int, typer.Option(help="Passes over them per decoder.", min=1)] = 2,
) -> None:
    """Theorem 3.3's σ ablation: freeze the run's encoder, train a fresh decoder for each noise
    kind and σ, and plot reconstruction PSNR against σ (reports/sigma-ablation.png)."""
    try:
        scales = [float(part) for part in sigmas.split(",")]
    except ValueError:
        raise InvalidInputError(
            f"--sigmas must be comma-separated numbers, got {sigmas!r}"
        ) from None
    kinds = [n.strip() for n in noises.split(",")]
    try:  # these first: torch takes seconds to load
        sigma_grid(scales, kinds)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    paths = RunPaths(run).existing()
    paths.require(paths.blae_weights, "train-ae")
    from models.blae_ablation import AblationConfig
    from service.evaluation.ablation import sigma_ablation

    result = sigma_ablation(
        paths, sigmas=scales, noises=kinds, images=images, config=AblationConfig(epochs=epochs)
    )
    emit("σ ablation", result)


@app.command()
def encode(
    run: RunOpt = DEFAULT_RUN_DIR,
    device: DeviceOpt = "cpu",
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.", min=1)] = 1024,
    search_passes: SearchPassesOpt = 0,
) -> None:
    """Encode the run's images with its BL-AE into images.parquet and latents.parquet."""
    paths = RunPaths(run).existing()
    paths.require(paths.blae_weights, "train-ae")  # before torch, which takes seconds to load
    from service.run.steps import encode_run

    summary = encode_run(paths, device=device, batch_size=batch_size, search_passes=search_passes)
    emit(f"encoded: {paths.latents}", asdict(summary))


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
    paths = RunPaths(run).existing()
    if latents is not None and not latents.exists():
        raise InvalidInputError(f"--latents {latents} does not exist")
    wanted = parse_int_list(ids, "--ids")
    if ids is not None and not wanted:
        raise InvalidInputError("--ids is empty: give comma-separated ids, or leave it out")
    stored = read_latents(latents or paths.latents)  # these first: torch takes seconds to load
    from service.latents.codec import decode_packed
    from service.run.models import load_blae
    from service.run.steps import select_latents

    model = load_blae(paths).model
    chosen = select_latents(stored, wanted, limit)
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
    emit("decoded", {"images": len(images), "out": str(out)})
