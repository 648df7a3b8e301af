"""The memorization report (DESIGN.md §7): how close samples come to training images, per γ and
mode, beside a baseline of held-out test images. Written by `latentgram report`, served at
/v1/report.

Three closeness figures per query image:
- psnr: to the nearest training image (raw pixels). The paper's rule calls a sample memorized
  above 30 dB. A sample is decoded through the BL-AE, so even an exact copy of a training latent
  only reaches the autoencoder's own reconstruction PSNR (about 20 dB on the default run): by
  raw pixels, nothing can count as memorized there.
- psnr_reconstruction: to the nearest BL-AE reconstruction of a training image. A decoded copy of
  a training latent scores the 100 dB cap, so the 30 dB rule measures copying again.
- hamming: bits to the nearest training latent; 0 is an exact copy.
The test baseline queries the raw test images for psnr and their decoded latents for the other
two, so each figure compares like with like. Novelty, likewise, compares decoded images with
decoded images: a sample is novel when it is farther from every training reconstruction than the
median decoded test image is (by raw pixels, a blurred exact copy could pass for novel).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.nn import Module
from tqdm import tqdm

from service.data.sources import first_per_class_round
from service.errors import InvalidInputError
from service.evaluation.features import checked_inception, classifier_features, inception_features
from service.evaluation.frechet import frechet_distance
from service.evaluation.likelihood import evaluate_likelihood
from service.evaluation.nearest import MEMORIZED_PSNR_DB, NearestIndex
from service.evaluation.pixels import PixelIndex, psnr_from_squared_error, squared_errors
from service.evaluation.plots import plot_memorization, plot_psnr_histograms
from service.evaluation.report_config import REPORT_JSON, REPORT_PLOT, ReportConfig
from service.evaluation.sheets import PairCaption, write_sheet
from service.files import write_atomic
from service.ngram.samples import Mode, SampleConfig
from service.run.loaded import LoadedRun
from service.training.classifier import ClassifierCheckpoint, ensure_classifier

log = logging.getLogger(__name__)

HISTOGRAM_PLOT = "nearest-psnr-histograms.png"
PSNR_EDGES = [*range(0, 51), 101]  # 1 dB bins up to 50 dB, then one bin up to the 100 dB cap
SHEET_PAIRS = 32  # samples per sheet, each beside its nearest training image


@dataclass(frozen=True)
class Closeness:
    """How close each of Q query images is to the training set (module docstring)."""

    psnr: np.ndarray  # (Q,) dB to the nearest training image
    nearest: np.ndarray  # (Q,) training row of that image
    copied: np.ndarray  # (Q,) training row of the nearest latent (the one copied when hamming 0)
    psnr_reconstruction: np.ndarray  # (Q,) dB to the nearest training reconstruction
    hamming: np.ndarray  # (Q,) bits to the nearest training latent

    @property
    def memorized(self) -> np.ndarray:
        return self.psnr > MEMORIZED_PSNR_DB

    @property
    def memorized_reconstruction(self) -> np.ndarray:
        return self.psnr_reconstruction > MEMORIZED_PSNR_DB

    @property
    def exact_copy(self) -> np.ndarray:
        return self.hamming == 0


class ClosenessMeter:
    """Measures closeness to a run's training set: raw images, reconstructions and latents."""

    def __init__(self, neighbours: NearestIndex) -> None:
        self.neighbours = neighbours
        self.reconstructions = PixelIndex(neighbours.reconstructions)

    def measure(
        self, images: np.ndarray, packed: np.ndarray, decoded: np.ndarray | None = None
    ) -> Closeness:
        """images: (Q, C, H, W) uint8 compared to raw training images; decoded: what is compared
        to the reconstructions (the images themselves when None); packed: (Q, bytes) latents."""
        flat = images.reshape(len(images), -1)
        decoded_flat = flat if decoded is None else decoded.reshape(len(decoded), -1)
        raw = self.neighbours.pixels.search(flat, 1)
        recon = self.reconstructions.search(decoded_flat, 1)
        bits = self.neighbours.latents.search(packed, 1)
        values = flat.shape[1]
        return Closeness(
            psnr=psnr_from_squared_error(raw.distances[:, 0], values),
            nearest=raw.positions[:, 0],
            copied=bits.positions[:, 0],
            psnr_reconstruction=psnr_from_squared_error(recon.distances[:, 0], values),
            hamming=bits.distances[:, 0],
        )


QUANTILES = (5, 25, 50, 75, 95)


def _quantiles(values: np.ndarray) -> dict[str, float | None]:
    if not len(values):
        return {f"p{q}": None for q in QUANTILES}
    points = np.percentile(values, QUANTILES)
    return {f"p{q}": round(float(v), 3) for q, v in zip(QUANTILES, points, strict=True)}


def summarize(c: Closeness, novelty_psnr: float | None) -> dict[str, Any]:
    """Rates and distributions of one set of queries."""
    n = len(c.psnr)
    figures: dict[str, Any] = {
        "count": n,
        "memorization_rate": float(c.memorized.mean()) if n else None,
        "memorization_rate_reconstruction": float(c.memorized_reconstruction.mean()) if n else None,
        "exact_copy_rate": float(c.exact_copy.mean()) if n else None,
        "psnr": _quantiles(c.psnr),
        "psnr_reconstruction": _quantiles(c.psnr_reconstruction),
        "hamming": _quantiles(c.hamming.astype(np.float64)),
        "psnr_histogram": np.histogram(c.psnr, PSNR_EDGES)[0].tolist(),
        "psnr_reconstruction_histogram": np.histogram(c.psnr_reconstruction, PSNR_EDGES)[
            0
        ].tolist(),
        "hamming_histogram": np.bincount(c.hamming, minlength=1).tolist(),
    }
    if novelty_psnr is not None and n:
        # farther from every training reconstruction than the typical decoded test image is
        figures["novelty_rate"] = float((c.psnr_reconstruction < novelty_psnr).mean())
    return figures


class FrechetScorer:
    """Fréchet distances of image sets to the held-out test images."""

    def __init__(
        self, classifier: ClassifierCheckpoint, reference: np.ndarray, inception: Module | None
    ) -> None:
        self.classifier = classifier
        self.reference = classifier_features(classifier.model, reference)
        self.inception = inception
        self.reference_inception = (
            inception_features(inception, reference) if inception is not None else None
        )

    def score(self, images: np.ndarray) -> dict[str, float | None]:
        if len(images) < 2:
            return {"classifier_frechet": None, "fid": None}
        features = classifier_features(self.classifier.model, images)
        fid = None
        if self.inception is not None and self.reference_inception is not None:
            fid = frechet_distance(
                inception_features(self.inception, images), self.reference_inception
            )
        return {"classifier_frechet": frechet_distance(features, self.reference), "fid": fid}


def build_report(
    run: LoadedRun, config: ReportConfig, *, progress: bool = True, inception: Module | None = None
) -> dict[str, Any]:
    """Sample every (γ, mode), measure, and write reports/: JSON, plots and sample sheets.
    `inception`: config.inception's network when the caller has checked it already."""
    started = time.perf_counter()
    built = sorted(t.gamma for t in run.tables if not t.positional)
    gammas = tuple(config.gammas or built)
    missing = [g for g in gammas if g not in built]
    if missing:
        raise InvalidInputError(f"no table built for gamma={missing}; built: {built}")
    if not (run.latents.splits == "test").any():
        raise InvalidInputError("the run has no test split: the report needs its baseline")
    if inception is None and config.inception is not None:
        inception = checked_inception(config.inception)
    meter = ClosenessMeter(run.neighbours)
    baseline, novelty_psnr, scorer = _baseline(run, meter, config, inception)
    jobs = [(g, m) for g in gammas for m in config.modes]
    results = {
        f"g{gamma}-{mode}": _measure_samples(run, meter, scorer, config, gamma, mode, novelty_psnr)
        for gamma, mode in tqdm(jobs, desc="memorization report", unit="set", disable=not progress)
    }
    likelihood = evaluate_likelihood(
        {g: i for (g, positional), i in run.indexes.items() if not positional},
        {g: n for (g, positional), n in run.networks.items() if not positional},
        run.latents,
    )
    report = {
        "run": str(run.paths.root),
        "model_sha256": run.blae.sha256,
        "config": {**asdict(config), "inception": str(config.inception or "") or None},
        "memorized_psnr_db": MEMORIZED_PSNR_DB,
        "psnr_edges": PSNR_EDGES,
        "classifier_test_accuracy": scorer.classifier.test_accuracy,
        "novelty_psnr_db": novelty_psnr,
        "baseline": baseline,
        "results": results,
        "likelihood": likelihood,
        "summary": summary_table(results, baseline),
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_report(run.paths.reports, report)
    return report


def baseline_rows(labels: np.ndarray, splits: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the n test and n training images the baseline measures, drawn as --limit draws
    (class by class), so that a source stored class by class still gives every class."""
    return (
        first_per_class_round(labels, splits == "test", n),
        first_per_class_round(labels, splits == "train", n),
    )


def _baseline(
    run: LoadedRun, meter: ClosenessMeter, config: ReportConfig, inception: Module | None
) -> tuple[dict[str, Any], float, FrechetScorer]:
    """The held-out test images measured like samples: the report's baseline, the novelty
    threshold (their decoded latents' median PSNR to the training reconstructions) and the
    Fréchet scorer against them."""
    rows, train_rows = baseline_rows(run.images.labels, run.latents.splits, config.samples)
    test_images = run.images.images[rows]
    test_packed = run.latents.packed[rows]
    closeness = meter.measure(test_images, test_packed, decoded=run.decode(test_packed))
    novelty_psnr = float(np.median(closeness.psnr_reconstruction))
    classifier = ensure_classifier(run.paths, run.images, progress=False)
    scorer = FrechetScorer(classifier, test_images, inception)
    baseline = {
        **summarize(closeness, novelty_psnr),
        **scorer.score(run.images.images[train_rows]),  # real training vs real test images
        # decoded training latents: the Fréchet distance of exact copies, the floor of anything
        # decoded through this BL-AE (its blur, not the samples' choice, sets it)
        "reconstructions": scorer.score(run.decode(run.latents.packed[train_rows])),
    }
    return baseline, novelty_psnr, scorer


def _measure_samples(
    run: LoadedRun,
    meter: ClosenessMeter,
    scorer: FrechetScorer,
    config: ReportConfig,
    gamma: int,
    mode: Mode,
    novelty_psnr: float,
) -> dict[str, Any]:
    """Draw the samples of one (γ, mode) and measure them; skipped without the γ-ARVM it needs."""
    if mode != "exact" and (gamma, False) not in run.networks:
        return {"gamma": gamma, "mode": mode, "skipped": "no γ-ARVM for this γ"}
    sample_config = SampleConfig(n=config.samples, seed=config.seed, budget=config.budget)
    generated = run.sample(gamma=gamma, mode=mode, config=sample_config)
    ok = generated.batch.ok
    images = generated.images[ok]
    packed = run.pack_tokens(generated.batch.tokens[ok])
    closeness = meter.measure(images, packed)
    sheet = run.paths.reports / "sheets" / f"g{gamma}-{mode}.png"
    return {
        "gamma": gamma,
        "mode": mode,
        "drawn": len(ok),
        "finished": int(ok.sum()),
        "neural_share": float(generated.batch.neural_share[ok].mean()) if ok.any() else None,
        **summarize(closeness, novelty_psnr),
        **scorer.score(images),
        "sheet": str(sheet),
        "sheet_pairs": [asdict(c) for c in _sample_sheet(images, packed, meter, closeness, sheet)],
    }


def summary_table(results: dict[str, dict[str, Any]], baseline: dict[str, Any]) -> dict[str, str]:
    """One line per (γ, mode) for the CLI and the web page."""

    def line(r: dict[str, Any]) -> str:
        if "skipped" in r:
            return f"skipped: {r['skipped']}"
        if not r["count"]:
            return "no sample finished"
        return (
            f"memorized {r['memorization_rate_reconstruction']:.1%} (vs reconstructions), "
            f"{r['memorization_rate']:.1%} (raw), exact copies {r['exact_copy_rate']:.1%}"
        )

    table = {"test baseline": line(baseline)}
    table.update({key: line(r) for key, r in results.items()})
    return table


def _sample_sheet(
    images: np.ndarray, packed: np.ndarray, meter: ClosenessMeter, c: Closeness, path: Path
) -> list[PairCaption]:
    """Up to SHEET_PAIRS samples, each beside a training image, captioned with the figures of
    that pair: an exact copy beside the image it copies (its nearest by pixels may be another,
    its decoding being blurred), any other sample beside its nearest by pixels."""
    count = min(SHEET_PAIRS, len(images))
    index = meter.neighbours
    rows = np.where(c.exact_copy, c.copied, c.nearest)[:count]
    flat = images[:count].reshape(count, -1)
    psnr = psnr_from_squared_error(
        squared_errors(flat, index.pixels.pixels, rows[:, None]), flat.shape[1]
    )
    hamming = index.latents.distances_at(packed[:count], rows[:, None])
    names = index.class_names
    captions = [
        PairCaption(
            psnr_db=round(float(psnr[i, 0]), 2),
            hamming_bits=int(hamming[i, 0]),
            training_id=int(index.ids[row]),
            label=names[index.labels[row]]
            if index.labels[row] < len(names)
            else str(index.labels[row]),
            exact_copy=bool(hamming[i, 0] == 0),
        )
        for i, row in enumerate(rows)
    ]
    shown = index.pixels.pixels[rows].reshape(images[:count].shape)
    write_sheet(images[:count], shown, captions, path)
    return captions


def write_report(folder: Path, report: dict[str, Any]) -> None:
    """JSON and plots; the JSON goes last and atomically: its presence means a whole report."""
    folder.mkdir(parents=True, exist_ok=True)
    plot_memorization(report, folder / REPORT_PLOT)
    plot_psnr_histograms(report, folder / HISTOGRAM_PLOT)
    write_atomic(folder / REPORT_JSON, json.dumps(report, indent=2, allow_nan=False))
