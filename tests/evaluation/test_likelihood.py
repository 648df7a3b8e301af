"""Held-out likelihood: bits per token on an example worked out by hand, and its refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models import ARVMConfig, GammaARVM
from service.errors import InvalidInputError
from service.evaluation.likelihood import evaluate_likelihood
from service.latents.bits import pack_bits
from service.latents.latent_set import LatentSet
from service.ngram.tokens import tokens_to_bits
from tests.helpers import index_of

# C = 1 (tokens 0, 1), grids of 1 × 2. Training: [0 1], [0 0], [1 1]; test: [1 0].
TRAIN = np.array([[[0, 1]], [[0, 0]], [[1, 1]]])
TEST = np.array([[[1, 0]]])


def latents() -> LatentSet:
    tokens = np.concatenate([TRAIN, TEST])
    return LatentSet(
        ids=np.array([0, 2, 4, 1]),  # the test image has an odd id: the report half
        splits=np.array(["train", "train", "train", "test"]),
        labels=np.zeros(4, np.int64),
        packed=pack_bits(tokens_to_bits(tokens, 1)),
        shape=(1, 1, 2),
        model_sha256="0" * 64,
    )


def uniform_network() -> GammaARVM:
    """Every weight zero: the same logits for every token, p = 1/2."""
    net = GammaARVM(ARVMConfig(gamma=3, context_size=4, latent_channels=1, hidden=8))
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    return net


def test_bits_per_token_of_a_hand_computed_example(tmp_path: Path) -> None:
    """Unigram: 3 zeros and 3 ones, T0 = 2, V = 2 → p0 = (3 + 1) / (6 + 2) = 1/2.
    γ = 3, position 0 (context all PAD): n = 3, T = 2, n(·, 1) = 1 → p(1) = (1 + 2·½) / 5 = 0.4.
    Position 1 after a 1: n = 1, T = 1, n(·, 0) = 0 → p(0) = (0 + 1·½) / 2 = 0.25.
    Test [1 0]: (−log2 0.4 − log2 0.25) / 2 bits per token; the γ-ARVM (uniform) gives 1 bit and
    mixed with the table by the same rule gives the same as the chain here (its p0 is uniform).
    Training windows: 0|PAD 0.6 twice, 1|PAD 0.4; 1|0 0.5, 0|0 0.5, 1|1 0.75."""
    index = index_of(tmp_path / "s.duckdb", TRAIN, 1, 3)
    figures = evaluate_likelihood({3: index}, {3: uniform_network()}, latents(), images=10)
    test, train = figures["bits_per_token"]["test"], figures["bits_per_token"]["train"]
    expected = (-np.log2(0.4) - np.log2(0.25)) / 2
    assert test["ngram"]["3"] == pytest.approx(expected)
    assert test["interpolated"]["3"] == pytest.approx(expected)
    assert test["unigram"] == pytest.approx(1.0) and test["arvm"]["3"] == pytest.approx(1.0)
    train_expected = -np.log2([0.6, 0.6, 0.4, 0.5, 0.5, 0.75]).mean()
    assert train["ngram"]["3"] == pytest.approx(train_expected)
    assert figures["gap"]["ngram"]["3"] == pytest.approx(expected - train_expected)
    assert figures["images"] == {"test": 1, "train": 3}


def test_a_run_without_a_test_split_is_refused(tmp_path: Path) -> None:
    index = index_of(tmp_path / "s.duckdb", TRAIN, 1, 3)
    train_only = latents().select(np.arange(3))
    with pytest.raises(InvalidInputError, match="no test split"):
        evaluate_likelihood({3: index}, {}, train_only)
    with pytest.raises(InvalidInputError, match="images must be ≥ 1"):
        evaluate_likelihood({3: index}, {}, latents(), images=0)
