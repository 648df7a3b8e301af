"""Held-out likelihood (DESIGN.md §6): bits per token of the test and the training windows, per γ,
for four models of p(next token | γ-context):

- unigram: token frequencies of the training windows (mixed with uniform, so none is impossible);
- ngram: the exact tables smoothed by interpolated Witten-Bell down the γ chain to the unigram
  (ngram/smoothing.py);
- arvm: the γ-ARVM;
- interpolated: the γ table mixed with the γ-ARVM by the same Witten-Bell rule, the table's
  weight n(c) / (n(c) + T(c)) growing with its context's count; the γ-ARVM alone where the
  table never saw the context.

The generalization gap is test minus train bits per token: it opens as γ grows, the likelihood
view of memorization. The test windows are those of the "report" half of the test split (odd
image ids): the other half chose the fallback γ-ARVM's epoch (training/arvm.py).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models import GammaARVM
from service.data.parquet import read_latents
from service.errors import InvalidInputError
from service.evaluation.plots import plot_likelihood
from service.files import write_atomic
from service.latents.latent_set import LatentSet
from service.ngram.index import NgramIndex
from service.ngram.smoothing import CountLookup, smoothed_chain, unigram_probabilities, witten_bell
from service.ngram.store import list_tables, open_store
from service.ngram.windows import build_windows
from service.run.models import has_arvm, load_arvm
from service.run.paths import RunPaths
from service.run.steps import check_tables_fresh

log = logging.getLogger(__name__)

LIKELIHOOD_JSON = "likelihood.json"  # in the run's reports/ folder
LIKELIHOOD_PLOT = "likelihood-vs-gamma.png"
MODELS = ("unigram", "ngram", "arvm", "interpolated")
NETWORK_BATCH = 4096  # contexts per forward pass
PROBABILITY_FLOOR = 1e-300  # log2 of an underflowed probability stays finite


@dataclass(frozen=True)
class QueryWindows:
    """Every window of some token grids, at every γ of the chain."""

    tokens: np.ndarray  # (Q,) next tokens
    keys: dict[int, np.ndarray]  # γ → (Q,) context keys
    contexts: dict[int, np.ndarray]  # γ → (Q, K) context tokens

    @classmethod
    def of(cls, latents: LatentSet, gammas: list[int]) -> QueryWindows:
        grids = latents.token_grids()
        windows = {g: build_windows(grids.tokens, grids.image_ids, g, grids.pad) for g in gammas}
        first = windows[gammas[0]]
        return cls(
            first.tokens,
            {g: w.keys for g, w in windows.items()},
            {g: w.contexts for g, w in windows.items()},
        )


def bits(p: np.ndarray) -> float:
    """Mean −log2 p: bits per token."""
    return float(-np.log2(np.maximum(p, PROBABILITY_FLOOR)).mean())


@torch.no_grad()
def network_probabilities(net: GammaARVM, contexts: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """(Q,) p(token | context) from the γ-ARVM, each distinct context computed once."""
    distinct, inverse = np.unique(contexts, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    device = next(net.parameters()).device
    log_p = np.empty(len(tokens))
    net.eval()
    for first in range(0, len(distinct), NETWORK_BATCH):
        batch = torch.from_numpy(distinct[first : first + NETWORK_BATCH].astype(np.int64))
        logits = torch.log_softmax(net(batch.to(device)).float(), dim=-1).cpu().numpy()
        rows = np.flatnonzero((inverse >= first) & (inverse < first + NETWORK_BATCH))
        log_p[rows] = logits[inverse[rows] - first, tokens[rows]]
    return np.exp(log_p)


def split_bits(
    indexes: dict[int, NgramIndex],
    networks: dict[int, GammaARVM],
    windows: QueryWindows,
) -> dict[str, Any]:
    """Bits per token of one split's windows under every model, per γ."""
    gammas = sorted(indexes)
    unigram = unigram_probabilities(indexes[gammas[0]])
    lookups = [CountLookup(indexes[g]) for g in gammas]
    chain = smoothed_chain(lookups, [windows.keys[g] for g in gammas], windows.tokens, unigram)
    figures: dict[str, Any] = {"unigram": bits(unigram[windows.tokens])}
    for model in MODELS[1:]:
        figures[model] = {}
    for gamma, lookup, smoothed in zip(gammas, lookups, chain, strict=True):
        figures["ngram"][str(gamma)] = bits(smoothed)
        if gamma not in networks:
            continue
        p_net = network_probabilities(networks[gamma], windows.contexts[gamma], windows.tokens)
        counts = lookup.counts(windows.keys[gamma], windows.tokens)
        figures["arvm"][str(gamma)] = bits(p_net)
        figures["interpolated"][str(gamma)] = bits(witten_bell(counts, p_net))
    return figures


def evaluate_likelihood(
    indexes: dict[int, NgramIndex],
    networks: dict[int, GammaARVM],
    latents: LatentSet,
    *,
    images: int = 5000,
) -> dict[str, Any]:
    """Bits per token on the report half of the test split and on as many training images
    (the first `images` of each), for every model and γ; with the gaps."""
    if not indexes:
        raise InvalidInputError("no n-gram tables built: run `latentgram build` first")
    if images < 1:
        raise InvalidInputError(f"images must be ≥ 1, got {images}")
    _, report = latents.holdout_halves()
    if not len(report):
        raise InvalidInputError("the run has no test split: held-out likelihood needs one")
    train = latents.select(np.flatnonzero(latents.splits == "train")[:images])
    gammas = sorted(indexes)
    results = {
        name: split_bits(indexes, networks, QueryWindows.of(split, gammas))
        for name, split in (("test", report.select(np.arange(min(images, len(report))))),
                            ("train", train))
    }  # fmt: skip
    gap: dict[str, Any] = {
        model: {g: results["test"][model][g] - results["train"][model][g]
                for g in results["test"][model]}
        for model in MODELS[1:]
    }  # fmt: skip
    gap["unigram"] = results["test"]["unigram"] - results["train"]["unigram"]
    return {
        "gammas": gammas,
        "images": {"test": min(images, len(report)), "train": len(train)},
        "test_images": "odd image ids of the test split (the even ids chose the γ-ARVM's epoch)",
        "smoothing": "interpolated Witten-Bell down the γ chain to the unigram",
        "interpolation": "the γ table and the γ-ARVM by Witten-Bell: weight n(c) / (n(c) + T(c))",
        "bits_per_token": results,
        "gap": gap,
    }


def write_likelihood(folder: Path, figures: dict[str, Any]) -> Path:
    """likelihood.json and its plot; returns the JSON's path."""
    folder.mkdir(parents=True, exist_ok=True)
    plot_likelihood(figures, folder / LIKELIHOOD_PLOT)
    path = folder / LIKELIHOOD_JSON
    write_atomic(path, json.dumps(figures, indent=2, allow_nan=False))
    return path


def evaluate_run(paths: RunPaths, *, images: int = 5000) -> dict[str, Any]:
    """The held-out likelihood of a run's non-positional tables and their γ-ARVMs, written to
    reports/likelihood.json and its plot (`latentgram evaluate`)."""
    latents = read_latents(paths.require(paths.latents, "encode"))
    with open_store(paths.require(paths.store, "build"), read_only=True) as con:
        tables = [t for t in list_tables(con) if not t.positional]
        check_tables_fresh(paths, tables, latents)
        indexes = {t.gamma: NgramIndex.load(con, t.gamma) for t in tables}
    networks = {g: load_arvm(paths, g) for g in indexes if has_arvm(paths, g)}
    figures = evaluate_likelihood(indexes, networks, latents, images=images)
    write_likelihood(paths.reports, figures)
    return figures
