"""The BL-AE's configs and named presets, apart from the model (torch is not imported here, so
the command line lists the presets and their defaults without loading it)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from models.config import NOISE_KINDS, PRECISIONS, ModelConfig

DECODER_HEADS = ("local", "global")
SIGMAS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)  # the σ ablation's noise scales: the paper's figure 4


def sigma_grid(sigmas: Sequence[float], noises: Sequence[str]) -> list[tuple[str, float]]:
    """The σ ablation's (noise, σ) points, each noise kind's σ ascending; ValueError saying what
    is allowed."""
    if not sigmas or not all(0 <= s < math.inf for s in sigmas):
        raise ValueError(f"sigmas must be finite and ≥ 0, got {list(sigmas)}")
    unknown = [n for n in noises if n not in NOISE_KINDS]
    if unknown or not noises:
        raise ValueError(f"noises must be among {', '.join(NOISE_KINDS)}, got {unknown}")
    return [(noise, float(sigma)) for noise in noises for sigma in sorted(sigmas)]


@dataclass(frozen=True)
class BLAEConfig(ModelConfig):
    image_channels: int = 1  # 1 for grey, 3 for RGB
    image_size: int = 28  # side of the (square) dataset images; padded up to a multiple of 2^levels
    grid: int = 0  # latent grid side H = W; 0: what the levels make of the padded image
    latent_channels: int = 12  # C: bits per grid cell, so tokens are 0 … 2^C − 1 (C ≤ 16)
    encoder_widths: tuple[int, ...] = (16, 64, 128)  # one stride-2 conv per entry: 32→16→8→4
    head_width: int = 256  # width of the hidden 1×1 convolutions (the paper's tables: 1024, 8196)
    head_layers: int = 1  # hidden 1×1 layers between the grid and the code, on each side
    # "local": the decoder's head is 1×1 convolutions, each cell decoded from its own code and
    # its neighbours' (the paper's tables); "global": dense layers over the whole code, so the
    # decoder can tell every training image apart and memorize it (see the paper-t1 preset).
    decoder_head: str = "local"
    decoder_head_width: int = 0  # width of the decoder's head layers; 0: head_width
    decoder_widths: tuple[int, ...] = (128, 64, 32, 16)  # levels + 1 entries: 4→8→16→32
    noise: str = "triangular"  # "triangular" (Tri(κ)) or "gaussian"
    sigma: float = 1.0  # noise scale; ≥ 1 is what makes the codes binary (0.5 leaves them soft)
    kappa: float = 2.0  # Tri(κ) shape; 2 puts most noise near ±σ (see models/noise.py)
    code_gain: float = (
        10.0  # z = tanh(gain · a) after training; see BLAETrainConfig.code_gain_start
    )
    # Training's forward pass uses the codes' signs, the stored bits, and the encoder's gradient
    # is tanh's at gain 1 (straight-through): the decoder learns from the codes it will serve,
    # and a saturated tanh no longer stops the encoder learning. False: the paper's way, the
    # noise alone drives the tanh codes to ±1.
    straight_through: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.latent_channels <= 16:
            raise ValueError(f"latent_channels must be 1..16, got {self.latent_channels}")
        if self.image_channels not in (1, 3):
            raise ValueError(f"image_channels must be 1 or 3, got {self.image_channels}")
        if len(self.decoder_widths) != len(self.encoder_widths) + 1:
            raise ValueError("decoder_widths needs one entry more than encoder_widths")
        if self.decoder_head not in DECODER_HEADS:
            raise ValueError(f"decoder_head must be one of {DECODER_HEADS}: {self.decoder_head!r}")
        if self.decoder_head_width < 0:
            raise ValueError(f"decoder_head_width must be ≥ 0, got {self.decoder_head_width}")
        if self.noise not in NOISE_KINDS:
            raise ValueError(f"noise must be one of {NOISE_KINDS}, got {self.noise!r}")
        if self.grid and self.grid * 2**self.levels < self.image_size:
            raise ValueError(
                f"a grid of {self.grid}×{self.grid} after {self.levels} stride-2 levels takes "
                f"images of at most {self.grid * 2**self.levels} px, got {self.image_size}"
            )
        finite = all(math.isfinite(v) for v in (self.sigma, self.kappa, self.code_gain))
        if not finite or self.sigma < 0 or self.kappa <= 0 or self.code_gain <= 0:
            raise ValueError(
                f"need finite sigma ≥ 0, kappa > 0 and code_gain > 0, got sigma={self.sigma}, "
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
# 1024 and 8196 wide) and want a GPU. "paper-t1" is for the paper's Table 1 claim, a decoder that
# memorizes its training images: the default's codes and convolutions with a global head, two
# dense layers 8192 wide (85 M parameters, ~1,400 per Fashion-MNIST training image: on frozen
# codes, 1,120 per image took 8,000 training images to 29.9 dB where test images stayed at 19.2).
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
    "paper-t1": BLAEConfig(
        straight_through=True,  # noise on the codes keeps any decoder from telling images apart
        sigma=0.0,
        decoder_head="global",
        decoder_head_width=8192,
        head_layers=2,
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


# Training settings of presets that differ from BLAETrainConfig's defaults. At 2e-3 the wide
# layers of the paper presets saturate the decoder's sigmoid within the first epoch (every image
# decodes to the same 6.8 dB picture), and so do paper-t1's 8192-wide ones (in 125 steps of 8
# images, and in its polish); at 2e-4 and 5e-4 they train. paper-t1 memorizes in a long
# decoder-only polish once its codes are learnt: with a 2048-wide head on 2,000 training images,
# 20 epochs and 60 of polish reached 30.4 dB, 80 epochs end to end 27.5 (the decoder chasing
# codes that still move).
PRESET_TRAINING: dict[str, dict[str, float]] = {
    "paper-t1": {"lr": 5e-4, "decoder_polish": 60.0, "polish_lr": 5e-4},
    "paper-t4": {"lr": 2e-4},
    "paper-t5": {"lr": 2e-4},
}


@dataclass(frozen=True)
class BLAETrainConfig(ModelConfig):
    epochs: int = 7  # passes over the training split (the default run: ~9 min on 2 CPU cores)
    batch_size: int = 64  # images per step: on a CPU, more steps of fewer images learn faster
    lr: float = 2e-3  # peak Adam learning rate, decayed along a cosine; paper presets need ~2e-4
    seed: int = 0  # weight init, shuffles and noise all derive from it
    precision: str = "auto"  # "fp32", "bf16" (autocast), or "auto": bf16 where the hardware has it
    eval_batch_size: int = 1024  # images per forward pass during evaluation
    # tanh gain at the first step, rising geometrically to the model's code_gain at the last
    # (annealing, as in HashNet): a low gain early keeps codes trainable, a high one at the end
    # makes them binary. None keeps the model's gain throughout.
    code_gain_start: float | None = 5.0
    # After the last epoch, this share of an epoch trains the decoder alone on hard-binarized
    # codes: stored latents are binary, so that is the input the decoder will serve. A decoder
    # step costs about half a full one and gains more PSNR (binary) late in training.
    decoder_polish: float = 0.5
    polish_lr: float = 3e-4  # peak Adam learning rate of the polish, cosine-decayed

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.epochs < 1 or self.batch_size < 1 or not 0 < self.lr < math.inf:
            raise ValueError(f"epochs and batch_size must be ≥ 1 and lr finite > 0, got {self.lr}")
        if not 0 <= self.decoder_polish < math.inf:
            raise ValueError(f"decoder_polish must be finite and ≥ 0, got {self.decoder_polish}")
        if not 0 < self.polish_lr < math.inf:
            raise ValueError(f"polish_lr must be finite and > 0, got {self.polish_lr}")

    @classmethod
    def for_preset(cls, preset: str, **fields: Any) -> BLAETrainConfig:
        """The config for a BL-AE preset: its own settings where `fields` gives None or nothing."""
        given = {k: v for k, v in fields.items() if v is not None}
        return cls(**{**PRESET_TRAINING.get(preset, {}), **given})

    def steps_per_epoch(self, images: int) -> int:
        """Optimizer steps in one pass over `images` training images (the last batch short)."""
        return -(-images // self.batch_size)

    def polish_steps(self, images: int) -> int:
        """Decoder-only steps after the last epoch, for `images` training images."""
        return -(-round(images * self.decoder_polish) // self.batch_size)
