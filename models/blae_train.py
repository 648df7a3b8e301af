"""BL-AE training loop and evaluation (DESIGN.md §2). PyTorch only: progress and files are the
caller's job, through the `on_step` and `on_epoch` callbacks.

Each epoch's shuffle and noise come from generators seeded with (seed, epoch), so a run resumed
from the checkpoint of epoch k continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from models.blae import BLAE, binarize
from models.blae_config import BLAETrainConfig
from models.common import adam, set_cosine_lr, shuffled_batches, to_unit
from models.device import autocast_for, keep_freed_memory


@dataclass(frozen=True)
class BLAEMetrics:
    mse: float  # reconstruction MSE with the soft (tanh) codes, pixels in [0, 1]
    psnr: float  # PSNR in dB with the soft codes
    psnr_binary: float  # PSNR with the codes hard-binarized to ±1: what stored latents give
    brate: float  # share of code values with |z| > 0.95: how binary the codes really are
    distinct_codes: float  # distinct binary codes per image: 1.0 when no two images share one
    top_code_share: float  # share of images holding the most common code
    psnr_mean_image: float  # PSNR of answering every image with their mean: the floor


# A collapsed code: the encoder gives (nearly) every image one code, or the reconstructions carry
# nothing of the image. Both show within the first hundred steps of a run that will not recover
# (paper-t4 at lr 2e-3: 15 % distinct codes, 6.8 dB against the mean image's 10.6); a healthy
# run is far from either (default preset: every code distinct, 6 dB over the mean image).
COLLAPSED_SHARE = 0.5  # more than half the images on one code, or fewer codes than half of them
COLLAPSED_GAIN_DB = 1.0  # binary reconstructions less than this far above the mean image
MIN_IMAGES_FOR_CODES = 16  # fewer images than this cannot say that codes collapsed
MIN_STEPS_FOR_PIXELS = 100  # before this many steps any decoder is still near the mean image


def collapse_reason(metrics: BLAEMetrics, images: int, steps: int) -> str | None:
    """Why the figures of `images` images after `steps` training steps show a collapsed code,
    or None when they do not."""
    if images >= MIN_IMAGES_FOR_CODES:
        if metrics.top_code_share > COLLAPSED_SHARE:
            return f"{metrics.top_code_share:.0%} of images share one code"
        if metrics.distinct_codes < COLLAPSED_SHARE:
            return f"{images} images have only {metrics.distinct_codes:.0%} as many distinct codes"
    gain = metrics.psnr_binary - metrics.psnr_mean_image
    if steps >= MIN_STEPS_FOR_PIXELS and gain < COLLAPSED_GAIN_DB:
        return (
            f"reconstructions ({metrics.psnr_binary:.1f} dB) are no better than the mean image "
            f"({metrics.psnr_mean_image:.1f} dB)"
        )
    return None


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB for pixels in [0, 1]."""
    return 10 * math.log10(1.0 / max(mse, 1e-12))


@torch.no_grad()
def evaluate_blae(
    model: BLAE,
    images: torch.Tensor,
    *,
    batch_size: int = 1024,
    precision: str = "auto",
) -> BLAEMetrics:
    """Reconstruction figures over uint8 images (N, channels, size, size), N ≥ 1."""
    if len(images) == 0:
        raise ValueError("evaluate_blae needs at least one image")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sq_soft = sq_binary = 0.0
    saturated = total_codes = 0
    signs = []  # each image's code as packed bits, to count distinct codes
    with autocast_for(device, precision):
        for idx in shuffled_batches(len(images), batch_size, None):
            x = to_unit(images[idx].to(device))
            codes = model.encode(x)
            sq_soft += F.mse_loss(model.decode(codes).float(), x, reduction="sum").item()
            recon_bin = model.decode(binarize(codes)).float()
            sq_binary += F.mse_loss(recon_bin, x, reduction="sum").item()
            saturated += int((codes.float().abs() > 0.95).sum().item())
            total_codes += codes.numel()
            signs.append(np.packbits((codes > 0).flatten(1).cpu().numpy(), axis=1))
    model.train(was_training)
    pixels = images.numel()
    mse = sq_soft / pixels
    _, counts = np.unique(np.concatenate(signs), axis=0, return_counts=True)
    return BLAEMetrics(
        mse=mse,
        psnr=psnr_from_mse(mse),
        psnr_binary=psnr_from_mse(sq_binary / pixels),
        brate=saturated / total_codes,
        distinct_codes=len(counts) / len(images),
        top_code_share=float(counts.max()) / len(images),
        psnr_mean_image=psnr_from_mse(_mean_image_mse(images)),
    )


def _mean_image_mse(images: torch.Tensor) -> float:
    """MSE of answering every image with the mean image: the pixels' variance, in [0, 1]²."""
    x = images.double() / 255.0
    return float(((x - x.mean(dim=0)) ** 2).mean())


StepCallback = Callable[[int, float], None]  # (step in epoch, loss)
EpochCallback = Callable[[int, BLAE, torch.optim.Optimizer], None]  # (epoch done, model, optim)


def train_blae(
    model: BLAE,
    train_images: torch.Tensor,
    config: BLAETrainConfig,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    start_epoch: int = 0,
    stop_epoch: int | None = None,
    on_step: StepCallback | None = None,
    on_epoch: EpochCallback | None = None,
) -> torch.optim.Optimizer:
    """Train on uint8 images (N, channels, size, size) from `start_epoch` to `config.epochs`.

    `stop_epoch` ends early (as an interruption would) while the schedule still spans
    `config.epochs`; resuming from that checkpoint then finishes the same run.
    """
    device = next(model.parameters()).device
    if device.type == "cpu":
        keep_freed_memory()
    if optimizer is None:
        optimizer = adam(model.parameters(), config.lr)
    steps_per_epoch = config.steps_per_epoch(len(train_images))
    total_steps = config.epochs * steps_per_epoch
    model.train()
    for epoch in range(start_epoch, min(config.epochs, stop_epoch or config.epochs)):
        shuffle = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
        noise = torch.Generator(device=device).manual_seed(config.seed * 1_000_003 + epoch + 1)
        for step, idx in enumerate(shuffled_batches(len(train_images), config.batch_size, shuffle)):
            # cosine decay from the global step, so a resumed run follows the same schedule
            progress = (epoch * steps_per_epoch + step) / total_steps
            set_cosine_lr(optimizer, config.lr, progress, floor=0.02)
            gain = model.config.code_gain
            if config.code_gain_start is not None:
                gain = config.code_gain_start * (gain / config.code_gain_start) ** progress
            x = to_unit(train_images[idx].to(device, non_blocking=True))
            with autocast_for(device, config.precision):
                out = model(x, generator=noise, gain=gain)
                loss = F.mse_loss(out.reconstruction.float(), x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if on_step is not None:
                on_step(step, loss.item())
        if epoch + 1 == config.epochs:
            polish_decoder(model, train_images, config, on_step=on_step)
        if on_epoch is not None:
            on_epoch(epoch + 1, model, optimizer)
    return optimizer


def polish_decoder(
    model: BLAE,
    train_images: torch.Tensor,
    config: BLAETrainConfig,
    *,
    on_step: StepCallback | None = None,
) -> None:
    """Train the decoder alone on hard-binarized codes (BLAETrainConfig.decoder_polish).

    Its own seeded shuffle and a fresh optimizer: a run resumed from the last epoch's
    checkpoint repeats the polish exactly.
    """
    steps = config.polish_steps(len(train_images))
    if steps == 0:
        return
    device = next(model.parameters()).device
    optimizer = adam(model.decoder.parameters(), config.polish_lr)
    shuffle = torch.Generator().manual_seed(config.seed * 1_000_003 + config.epochs + 2)
    # one shuffle per pass: a polish longer than an epoch passes over the images again
    passes = -(-steps * config.batch_size // len(train_images))
    order = torch.cat([torch.randperm(len(train_images), generator=shuffle) for _ in range(passes)])
    for step, idx in enumerate(order[: steps * config.batch_size].split(config.batch_size)):
        set_cosine_lr(optimizer, config.polish_lr, step / steps, floor=0.02)
        x = to_unit(train_images[idx].to(device, non_blocking=True))
        with autocast_for(device, config.precision):
            with torch.no_grad():
                codes = binarize(model.encode(x))
            loss = F.mse_loss(model.decode(codes).float(), x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step(step, loss.item())
