"""PNG plots of run figures (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt


def plot_training_curve(records: Sequence[dict[str, Any]], path: Path) -> None:
    """PSNR (binarized latents) and brate per epoch, train and test, from metrics JSONL records."""
    epochs = [r["epoch"] for r in records]
    fig, (ax_psnr, ax_brate) = plt.subplots(1, 2, figsize=(9, 3.5))
    for split, style in (("train", "-o"), ("test", "--s")):
        if any(r[split] is None for r in records):  # a data source without a test split
            continue
        ax_psnr.plot(epochs, [r[split]["psnr_binary"] for r in records], style, label=split)
        ax_brate.plot(epochs, [r[split]["brate"] for r in records], style, label=split)
    ax_psnr.set(xlabel="epoch", ylabel="PSNR, binarized latents (dB)", title="reconstruction")
    ax_brate.set(xlabel="epoch", ylabel="share |z| > 0.95", title="brate", ylim=(0, 1.02))
    for ax in (ax_psnr, ax_brate):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
