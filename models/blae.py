"""Binary Latent Autoencoder (BL-AE), after Zhao & Basu, "Exploring Image Generation via Mutually
Exclusive Probability Spaces and Local Correlation/Dependence Hypothesis" (DESIGN.md §2).

Encoder: strided convolutions down to an H×W grid, 1×1 convolutions to C channels, tanh.
Training adds bounded noise σ·ε to the tanh output, which drives the codes to ±1; stored latents are
the signs, so each grid cell is a C-bit token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.config import ModelConfig
from models.noise import NOISE_KINDS, sample_noise

LEAK = 0.2  # LeakyReLU slope, also the gain used by the Kaiming initialization below


@dataclass(frozen=True)
class BLAEConfig(ModelConfig):
    image_channels: int = 1  # 1 for grey, 3 for RGB
    image_size: int = 28  # side of the (square) dataset images; padded up to a multiple of 2^levels
    grid: int = 0  # latent grid side H = W; 0: what the levels make of the padded image
    latent_channels: int = 12  # C: bits per grid cell, so tokens are 0 … 2^C − 1 (C ≤ 16)
    encoder_widths: tuple[int, ...] = (16, 64, 128)  # one stride-2 conv per entry: 32→16→8→4
    head_width: int = 256  # width of the hidden 1×1 convolutions (the paper's tables: 1024, 8196)
    head_layers: int = 1  # hidden 1×1 layers between the grid and the code, on each side
    decoder_widths: tuple[int, ...] = (128, 64, 32, 16)  # levels + 1 entries: 4→8→16→32
    noise: str = "triangular"  # "triangular" (Tri(κ)) or "gaussian"
    sigma: float = 1.0  # noise scale; ≥ 1 is what makes the codes binary (0.5 leaves them soft)
    kappa: float = 2.0  # Tri(κ) shape; 2 puts most noise near ±σ (see models/noise.py)
    code_gain: float = (
        10.0  # z = tanh(gain · a) after training; see BLAETrainConfig.code_gain_start
    )

    def __post_init__(self) -> None:
        if not 1 <= self.latent_channels <= 16:
            raise ValueError(f"latent_channels must be 1..16, got {self.latent_channels}")
        if self.image_channels not in (1, 3):
            raise ValueError(f"image_channels must be 1 or 3, got {self.image_channels}")
        if len(self.decoder_widths) != len(self.encoder_widths) + 1:
            raise ValueError("decoder_widths needs one entry more than encoder_widths")
        if self.noise not in NOISE_KINDS:
            raise ValueError(f"noise must be one of {NOISE_KINDS}, got {self.noise!r}")
        if self.grid and self.grid * 2**self.levels < self.image_size:
            raise ValueError(
                f"a grid of {self.grid}×{self.grid} after {self.levels} stride-2 levels takes "
                f"images of at most {self.grid * 2**self.levels} px, got {self.image_size}"
            )
        if self.sigma < 0 or self.kappa <= 0 or self.code_gain <= 0:
            raise ValueError(
                f"need sigma ≥ 0, kappa > 0 and code_gain > 0, got sigma={self.sigma}, "
                f"kappa={self.kappa}, code_gain={self.code_gain}"
            )

    @property
    def levels(self) -> int:
        return len(self.encoder_widths)

    @property
    def padded_size(self) -> int:
        """The image side the encoder sees: padded with black up to grid · 2^levels."""
        step = 2**self.levels
        return self.grid * step if self.grid else math.ceil(self.image_size / step) * step

    @property
    def latent_size(self) -> int:
        return self.padded_size // 2**self.levels

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image's code."""
        return (self.latent_channels, self.latent_size, self.latent_size)


# Named architectures, each 192 or 256 bits per 28×28 image. "default" trains on a 2-core CPU in
# minutes; "grid8" and "grid16" trade channels for positions (one and two stride-2 levels fewer),
# so that a γ-window is small against the grid; "rgb32" is sized for 32×32 colour images
# (CIFAR-10); "paper-t4"/"paper-t5" follow the widths of the paper's tables 4 and 5 (1×1 layers
# 1024 and 8196 wide) and want a GPU.
PRESETS: dict[str, BLAEConfig] = {
    "tiny": BLAEConfig(  # for tests: trains in seconds
        latent_channels=8,
        encoder_widths=(8, 16, 32),
        head_width=32,
        decoder_widths=(32, 32, 16, 8),
    ),
    "default": BLAEConfig(),
    "grid8": BLAEConfig(
        grid=8,
        latent_channels=4,
        encoder_widths=(32, 128),
        head_width=256,
        decoder_widths=(128, 64, 32),
    ),
    "grid16": BLAEConfig(
        grid=16,
        latent_channels=1,
        encoder_widths=(64,),
        head_width=256,
        decoder_widths=(128, 64),
    ),
    "rgb32": BLAEConfig(
        image_channels=3,
        image_size=32,
        latent_channels=16,
        encoder_widths=(32, 64, 128),
        head_width=256,
        decoder_widths=(128, 64, 32, 16),
    ),
    "paper-t4": BLAEConfig(
        latent_channels=16,
        code_gain=1.0,
        sigma=1.0,
        encoder_widths=(64, 128, 256),
        head_width=1024,
        head_layers=2,
        decoder_widths=(1024, 256, 128, 64),
    ),
    "paper-t5": BLAEConfig(
        latent_channels=16,
        code_gain=1.0,
        sigma=1.0,
        encoder_widths=(64, 128, 256),
        head_width=8196,
        head_layers=1,
        decoder_widths=(256, 256, 128, 64),
    ),
}


def describe_preset(name: str) -> str:
    """ "grid8: 4×8×8 = 256 bits" — the latent shape and bits per image of a preset."""
    c, h, w = PRESETS[name].latent_shape
    return f"{name}: {c}×{h}×{w} = {c * h * w} bits"


def blae_preset(name: str, **overrides: Any) -> BLAEConfig:
    """A preset config with some fields replaced (e.g. image_size, image_channels)."""
    if name not in PRESETS:
        raise ValueError(f"unknown BL-AE preset {name!r}; choose one of {sorted(PRESETS)}")
    return BLAEConfig.from_dict({**PRESETS[name].to_dict(), **overrides})


class BLAEOutput(NamedTuple):
    reconstruction: torch.Tensor  # (B, channels, size, size) in [0, 1]
    codes: torch.Tensor  # (B, C, H, W) tanh output before noise, in (−1, 1)


def _head(width_in: int, width: int, layers: int, width_out: int) -> list[nn.Module]:
    """1×1 convolutions: width_in → width (× layers, LeakyReLU) → width_out."""
    modules: list[nn.Module] = []
    for _ in range(layers):
        modules += [nn.Conv2d(width_in, width, 1), nn.LeakyReLU(LEAK)]
        width_in = width
    modules.append(nn.Conv2d(width_in, width_out, 1))
    return modules


class BLAE(nn.Module):
    """Images in [0, 1] → tanh codes (B, C, H, W) → images; noise on the codes while training."""

    config_class: ClassVar[type[BLAEConfig]] = BLAEConfig

    def __init__(self, config: BLAEConfig) -> None:
        super().__init__()
        self.config = config
        enc: list[nn.Module] = []
        width = config.image_channels
        for w in config.encoder_widths:
            enc += [nn.Conv2d(width, w, 4, stride=2, padding=1), nn.LeakyReLU(LEAK)]
            width = w
        enc += _head(width, config.head_width, config.head_layers, config.latent_channels)
        self.encoder = nn.Sequential(*enc)

        dec = _head(
            config.latent_channels, config.head_width, config.head_layers, config.decoder_widths[0]
        )
        dec.append(nn.LeakyReLU(LEAK))
        for w_in, w_out in zip(config.decoder_widths, config.decoder_widths[1:], strict=False):
            dec += [nn.ConvTranspose2d(w_in, w_out, 4, stride=2, padding=1), nn.LeakyReLU(LEAK)]
        dec += [nn.Conv2d(config.decoder_widths[-1], config.image_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        self.reset_parameters()
        # NHWC weights make oneDNN (CPU) and cuDNN pick their faster channels-last kernels:
        # on 2 CPU cores a training step takes ~25 % less time and decoding ~1.5× less.
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # not in the stubs

    def reset_parameters(self) -> None:
        """Kaiming initialization for LeakyReLU.

        PyTorch's default init let every tanh output saturate to the same code within a few dozen
        steps (all images one token). A transposed convolution of stride s sums only k²/s² taps
        per output pixel, so its fan-in is in·k²/s², not what kaiming_normal_ reads off its weight.
        """
        gain = math.sqrt(2.0 / (1 + LEAK**2))
        for m in self.modules():
            if isinstance(m, nn.ConvTranspose2d):
                k, s = m.kernel_size[0], m.stride[0]
                fan_in = m.in_channels * k * k / (s * s)
                nn.init.normal_(m.weight, std=gain / math.sqrt(fan_in))
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=LEAK, nonlinearity="leaky_relu")
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def encode(self, images: torch.Tensor, gain: float | None = None) -> torch.Tensor:
        """(B, channels, size, size) in [0, 1] → tanh codes (B, C, H, W).

        `gain` overrides config.code_gain while training follows its gain schedule.
        """
        pad = self.config.padded_size - self.config.image_size
        x = F.pad(images * 2 - 1, (pad // 2, pad - pad // 2) * 2, value=-1.0)
        return torch.tanh((gain or self.config.code_gain) * self.encoder(x))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) codes, soft or ±1 → images (B, channels, size, size) in [0, 1]."""
        x = torch.sigmoid(self.decoder(codes))
        pad = self.config.padded_size - self.config.image_size
        lo = pad // 2
        return x[..., lo : lo + self.config.image_size, lo : lo + self.config.image_size]

    def forward(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
        gain: float | None = None,
    ) -> BLAEOutput:
        codes = self.encode(images, gain)
        z = codes
        if self.training and self.config.sigma > 0:
            noise = sample_noise(codes, self.config.noise, self.config.kappa, generator)
            z = codes + self.config.sigma * noise
        return BLAEOutput(self.decode(z), codes)


def binarize(codes: torch.Tensor) -> torch.Tensor:
    """Hard ±1 codes: the bit is (z > 0), as stored."""
    return torch.where(codes > 0, 1.0, -1.0).to(codes.dtype)
