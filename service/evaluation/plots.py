"""PNG plots (matplotlib, headless): the BL-AE training curve, memorization rates against γ, and
nearest-neighbour PSNR histograms."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt

from service.files import atomic_path


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
    _save(fig, path)


RATES = (
    ("memorization_rate_reconstruction", "memorized: > 30 dB to a\ntraining reconstruction"),
    ("exact_copy_rate", "exact copies: latent equals\na training latent"),
    ("memorization_rate", "memorized: > 30 dB to a\ntraining image (raw pixels)"),
)
HISTOGRAMS = (("psnr", "raw training images"), ("psnr_reconstruction", "training reconstructions"))


def _finished(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in report["results"].values() if "skipped" not in r and r["count"]]


def plot_memorization(report: dict[str, Any], path: Path) -> None:
    """One panel per rate; one line per mode against γ; the test baseline dashed. With the
    held-out likelihood in the report, two more panels: bits per token and the gap."""
    results = _finished(report)
    likelihood = report.get("likelihood")
    panels = len(RATES) + (2 if likelihood else 0)
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 3.6))
    if likelihood:
        draw_likelihood(likelihood, axes[-2], axes[-1])
    for ax, (rate, title) in zip(axes, RATES, strict=False):
        for mode in sorted({r["mode"] for r in results}):
            points = sorted((r["gamma"], r[rate]) for r in results if r["mode"] == mode)
            ax.plot([g for g, _ in points], [v for _, v in points], "-o", label=mode)
        ax.axhline(report["baseline"][rate], color="grey", ls="--", label="test images")
        ax.set(xlabel="γ", ylabel="share of samples", title=title, ylim=(-0.02, 1.02))
        ax.set_xticks(sorted({r["gamma"] for r in results}) or [0])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    _save(fig, path)


def plot_psnr_histograms(report: dict[str, Any], path: Path) -> None:
    """Rows: PSNR to raw images and to reconstructions; columns: γ; a step line per mode."""
    results = _finished(report)
    gammas = sorted({r["gamma"] for r in results}) or [0]
    edges = np.asarray(report["psnr_edges"], dtype=float)
    edges[-1] = edges[-2] + 1  # draw the capped bin one dB wide
    fig, axes = plt.subplots(len(HISTOGRAMS), len(gammas), figsize=(4 * len(gammas), 6))
    axes = np.asarray(axes).reshape(len(HISTOGRAMS), len(gammas))
    for row, (figure, target) in enumerate(HISTOGRAMS):
        for col, gamma in enumerate(gammas):
            ax = axes[row, col]
            sets = [(r["mode"], r) for r in results if r["gamma"] == gamma]
            for label, r in [*sets, ("test images", report["baseline"])]:
                counts = np.asarray(r[f"{figure}_histogram"], dtype=float)
                ax.stairs(counts / max(counts.sum(), 1), edges, label=label)
            ax.axvline(report["memorized_psnr_db"], color="red", ls=":", lw=1)
            ax.set(xlabel=f"PSNR to nearest, {target} (dB)", title=f"γ = {gamma}")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    _save(fig, path)


def plot_sigma_ablation(points: Sequence[dict[str, Any]], path: Path) -> None:
    """PSNR against σ, one line per noise kind: from noisy codes (solid), clean codes (dashed)."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for i, noise in enumerate(sorted({p["noise"] for p in points})):
        mine = sorted(
            (p["sigma"], p["psnr_noisy"], p["psnr_clean"]) for p in points if p["noise"] == noise
        )
        sigmas = [m[0] for m in mine]
        ax.plot(sigmas, [m[1] for m in mine], "-o", color=f"C{i}", label=f"{noise}, noisy codes")
        ax.plot(sigmas, [m[2] for m in mine], "--", color=f"C{i}", label=f"{noise}, clean codes")
    ax.set(xlabel="σ", ylabel="reconstruction PSNR (dB)", title="σ ablation (Theorem 3.3)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


LIKELIHOOD_STYLES = {"ngram": "C0", "arvm": "C1", "interpolated": "C2"}


def draw_likelihood(likelihood: dict[str, Any], bits_ax: Any, gap_ax: Any) -> None:
    """Bits per token against γ (test solid, train dashed) and the gap, one colour per model."""
    gammas = likelihood["gammas"]
    splits = likelihood["bits_per_token"]
    for model, colour in LIKELIHOOD_STYLES.items():
        for split, style in (("test", "-o"), ("train", "--s")):
            points = [(g, splits[split][model].get(str(g))) for g in gammas]
            points = [(g, v) for g, v in points if v is not None]
            if points:
                label = f"{model} ({split})"
                bits_ax.plot(*zip(*points, strict=True), style, color=colour, label=label)
        gap = [(g, likelihood["gap"][model].get(str(g))) for g in gammas]
        gap = [(g, v) for g, v in gap if v is not None]
        if gap:
            gap_ax.plot(*zip(*gap, strict=True), "-o", color=colour, label=model)
    bits_ax.axhline(splits["test"]["unigram"], color="grey", ls=":", label="unigram")
    bits_ax.set(xlabel="γ", ylabel="bits per token", title="held-out likelihood")
    gap_ax.set(xlabel="γ", ylabel="test − train bits per token", title="generalization gap")
    for ax in (bits_ax, gap_ax):
        ax.set_xticks(gammas)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)


def plot_likelihood(likelihood: dict[str, Any], path: Path) -> None:
    fig, (bits_ax, gap_ax) = plt.subplots(1, 2, figsize=(9, 3.6))
    draw_likelihood(likelihood, bits_ax, gap_ax)
    _save(fig, path)
