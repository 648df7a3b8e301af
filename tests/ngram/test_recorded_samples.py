"""Samples recorded before a change to the engine's code, replayed after it: the same seed must
still give the same bytes (tokens, provenance, backtracks, steps) in the modes that need no
network. A deliberate change to what a seed draws updates RECORDED and says so in README.md:
the exact search's forward checking and backjumping did, and so did its compiled loop, which
checks a candidate when it is drawn and draws again from those left (its first draws are
unchanged, so the cases it never prunes kept their bytes), and so did listing a position's
candidates with the next position's context checked for all of them at once, and drawing from a
list by its Fenwick tree (a drawn candidate no longer trades places with the list's last), and
asking the above parts of their Bloom filter alone (one case here met a false positive)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from service.ngram.build import build_table
from service.ngram.index import NgramIndex
from service.ngram.modes import Sampler
from service.ngram.samples import Mode, SampleBatch, SampleConfig
from service.ngram.store import open_store
from service.ngram.tokens import TokenGrids

# (grid)-(γ)-(mode)-(seed)-(temperature)-(budget) → (digest of the batch, samples finished)
RECORDED = {
    "4x4x3-g3-exact-s0-T1.0-b1000": ("8feb549d6aa3aa75", 64),
    "4x4x3-g3-exact-s5-T0.5-b200": ("c9a6e1d88e5091aa", 64),
    "4x4x3-g3-exact-s9-T2.0-b50": ("7222f8d7ec9be05f", 60),
    "4x4x3-g3-backoff-s0-T1.0-b1000": ("e173afcc45d33dc6", 4),
    "4x4x3-g3-backoff-s5-T0.5-b200": ("23a8e80e0072d8eb", 11),
    "4x4x3-g3-backoff-s9-T2.0-b50": ("aa6dd865a93b49f0", 2),
    "4x4x3-g5-exact-s0-T1.0-b1000": ("cf4a1924b4a8264e", 64),
    "4x4x3-g5-exact-s5-T0.5-b200": ("60e38784eaa65506", 64),
    "4x4x3-g5-exact-s9-T2.0-b50": ("cd4d3e5cd46be998", 64),
    "4x4x3-g5-backoff-s0-T1.0-b1000": ("c2217e0e95594593", 26),
    "4x4x3-g5-backoff-s5-T0.5-b200": ("084e81437bfa32e2", 30),
    "4x4x3-g5-backoff-s9-T2.0-b50": ("30c6204a926c4b77", 17),
    "4x4x3-g7-exact-s0-T1.0-b1000": ("c527d77d9e45ab1a", 64),
    "4x4x3-g7-exact-s5-T0.5-b200": ("9e0008ae46039ac3", 64),
    "4x4x3-g7-exact-s9-T2.0-b50": ("409ee30920bd4e1c", 64),
    "4x4x3-g7-backoff-s0-T1.0-b1000": ("609d18e0f3d47d6d", 64),
    "4x4x3-g7-backoff-s5-T0.5-b200": ("82a35605fb125842", 64),
    "4x4x3-g7-backoff-s9-T2.0-b50": ("bbde23952c987be5", 64),
    "8x8x2-g3-exact-s0-T1.0-b1000": ("ae7a92c8e2ccb90d", 64),
    "8x8x2-g3-exact-s5-T0.5-b200": ("730e1e603900e139", 64),
    "8x8x2-g3-exact-s9-T2.0-b50": ("5424af95d4924166", 0),
    "8x8x2-g3-backoff-s0-T1.0-b1000": ("35c6c1679166f87c", 64),
    "8x8x2-g3-backoff-s5-T0.5-b200": ("297fd443bfa51d96", 64),
    "8x8x2-g3-backoff-s9-T2.0-b50": ("c3fc4744a740a697", 64),
    "8x8x2-g5-exact-s0-T1.0-b1000": ("de36a5bdf08a3a12", 64),
    "8x8x2-g5-exact-s5-T0.5-b200": ("77931c98279f3f1c", 64),
    "8x8x2-g5-exact-s9-T2.0-b50": ("da21b824c011ace9", 0),
    "8x8x2-g5-backoff-s0-T1.0-b1000": ("d6a50d18837c17f5", 64),
    "8x8x2-g5-backoff-s5-T0.5-b200": ("82ac56d1eb3f53cd", 64),
    "8x8x2-g5-backoff-s9-T2.0-b50": ("c7ddb051541b0261", 64),
    "8x8x2-g7-exact-s0-T1.0-b1000": ("92a4781951b8e0d8", 64),
    "8x8x2-g7-exact-s5-T0.5-b200": ("32a68b93338b38f4", 64),
    "8x8x2-g7-exact-s9-T2.0-b50": ("92dbaa929f75ae81", 0),
    "8x8x2-g7-backoff-s0-T1.0-b1000": ("9cc2e9b286d817d4", 64),
    "8x8x2-g7-backoff-s5-T0.5-b200": ("89ef04257623a256", 64),
    "8x8x2-g7-backoff-s9-T2.0-b50": ("398a9505f9e2cf9c", 64),
}
RUNS = [(0, 1.0, 1000), (5, 0.5, 200), (9, 2.0, 50)]  # seed, temperature, budget


def digest(batch: SampleBatch) -> str:
    h = hashlib.sha256()
    for name in ("tokens", "ok", "backtracks", "steps", "examples", "answered_by", "placed"):
        h.update(np.ascontiguousarray(getattr(batch, name)).astype(np.int64).tobytes())
    h.update("|".join(batch.failure.tolist()).encode())
    return h.hexdigest()[:16]


def smooth_grids(n: int, side: int, channels: int) -> TokenGrids:
    """Random grids whose rows mostly repeat the token to their left, so windows recur."""
    rng = np.random.default_rng(7)
    tokens = rng.integers(0, 1 << channels, (n, side, side))
    keep = rng.random((n, side, side - 1)) < 0.6
    tokens[:, :, 1:] = np.where(keep, tokens[:, :, :-1], tokens[:, :, 1:])
    return TokenGrids(tokens, np.arange(n), channels)


@pytest.mark.parametrize(("n", "side", "channels"), [(300, 4, 3), (120, 8, 2)])
def test_recorded_samples_are_drawn_again(tmp_path: Path, n: int, side: int, channels: int) -> None:
    grids = smooth_grids(n, side, channels)
    with open_store(tmp_path / "s.duckdb") as con:
        for gamma in (3, 5, 7):
            build_table(con, grids, gamma=gamma)
        indexes = {g: NgramIndex.load(con, g) for g in (3, 5, 7)}
    sampler = Sampler((channels, side, side), indexes, {})
    modes: tuple[Mode, ...] = ("exact", "backoff")
    for gamma in (3, 5, 7):
        for mode in modes:
            for seed, temperature, budget in RUNS:
                config = SampleConfig(n=64, seed=seed, temperature=temperature, budget=budget)
                batch = sampler.sample(gamma, mode, config)
                key = f"{side}x{side}x{channels}-g{gamma}-{mode}-s{seed}-T{temperature}-b{budget}"
                assert (digest(batch), int(batch.ok.sum())) == RECORDED[key], key
