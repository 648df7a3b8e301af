"""Where and in what precision models run: CUDA when present, bf16 where the hardware is fast."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from models.config import PRECISIONS


def pick_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else the CPU; ValueError for an unusable name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here")
    return device


def cpu_has_bf16() -> bool:
    """True where the CPU computes bf16 natively (AMX or AVX-512 BF16); elsewhere it is slower."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def autocast_for(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    """The autocast context for a precision setting; "auto" uses bf16 only where it is fast."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        fast = device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())
        precision = "bf16" if fast else "fp32"
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def enable_tf32(device: torch.device) -> None:
    """TF32 matrix products on CUDA: ~8× the fp32 rate on Hopper, ample for these losses."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
