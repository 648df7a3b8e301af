"""The σ ablation of the paper's Theorem 3.3 (its figure 4), PyTorch only.

Noise of scale σ on the codes bounds how well any decoder can tell the codes apart, so the
reconstruction error it can reach grows with σ. To see it, the trained encoder is frozen and a
fresh decoder is trained for each σ on its codes plus σ·ε; its PSNR is then read on held-out
images with the same noise (the quantity the bound is about) and with the clean binary codes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.blae import BLAE, binarize
from models.blae_train import psnr_from_mse
from models.common import adam, set_cosine_lr, shuffled_batches, to_unit
from models.noise import sample_noise


@dataclass(frozen=True)
class AblationConfig:
    epochs: int = 2  # passes over the images per decoder
    batch_size: int = 64
    lr: float = 2e-3  # Adam's peak learning rate, cosine-decayed
    seed: int = 0  # decoder init, shuffles and noise

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs and batch_size must be ≥ 1 and lr > 0")


@dataclass(frozen=True)
class AblationPoint:
    noise: str
    sigma: float
    psnr_noisy: float  # dB, decoding the codes plus σ·ε: what the theorem bounds
    psnr_clean: float  # dB, decoding the clean binary codes


def retrain_decoder(
    model: BLAE, images: torch.Tensor, noise: str, sigma: float, config: AblationConfig
) -> BLAE:
    """A copy of `model` with a fresh decoder trained on the frozen encoder's codes plus σ·ε.

    The encoder is not in the optimizer and its gradients are off: its weights come out as they
    went in. uint8 images (N, channels, size, size).
    """
    torch.manual_seed(config.seed)
    trained = copy.deepcopy(model)
    trained.decoder.load_state_dict(BLAE(model.config).decoder.state_dict())
    trained.encoder.requires_grad_(False)
    trained.eval()  # the frozen encoder at its final gain; the noise is added here, not by forward
    device = next(trained.parameters()).device
    optimizer = adam(trained.decoder.parameters(), config.lr)
    shuffle = torch.Generator().manual_seed(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed + 1)
    steps = config.epochs * -(-len(images) // config.batch_size)
    step = 0
    for _ in range(config.epochs):
        for idx in shuffled_batches(len(images), config.batch_size, shuffle):
            set_cosine_lr(optimizer, config.lr, step / steps, floor=0.02)
            x = to_unit(images[idx].to(device))
            with torch.no_grad():
                codes = trained.encode(x)
            z = codes + sigma * sample_noise(codes, noise, model.config.kappa, generator)
            loss = F.mse_loss(trained.decode(z), x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    return trained


@torch.no_grad()
def ablation_point(
    model: BLAE, images: torch.Tensor, noise: str, sigma: float, seed: int = 0
) -> AblationPoint:
    """PSNR of `model` on uint8 images, from noisy codes and from the clean binary codes."""
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    noisy = clean = 0.0
    for idx in shuffled_batches(len(images), 1024, None):
        x = to_unit(images[idx].to(device))
        codes = model.encode(x)
        z = codes + sigma * sample_noise(codes, noise, model.config.kappa, generator)
        noisy += F.mse_loss(model.decode(z), x, reduction="sum").item()
        clean += F.mse_loss(model.decode(binarize(codes)), x, reduction="sum").item()
    pixels = images.numel()
    return AblationPoint(noise, sigma, psnr_from_mse(noisy / pixels), psnr_from_mse(clean / pixels))
