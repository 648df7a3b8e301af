"""What every sampling mode shares: the request (SampleConfig), the result with its provenance
(SampleBatch), and counter-based randomness, so a sample depends only on its seed and history."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal, get_args

import numpy as np

from service.errors import InvalidInputError
from service.ngram.windows import splitmix64

Mode = Literal["exact", "backoff", "hybrid", "neural"]  # the one list of sampling modes
MODES: tuple[Mode, ...] = get_args(Mode)
# Seeds a user may give: the API's range (a JSON number keeps integers exact up to 2^53 − 1), so
# that a seed given on the command line draws the same samples when asked of the API.
MAX_SEED = 2**53 - 1
MAX_TEMPERATURE = 20.0
MIN_TEMPERATURE = 0.05  # below this count^(1/T) is a hard argmax in float64 anyway
FAILED_BUDGET = "budget"  # the search used its budget of steps before finishing
# Every candidate order was tried and no sample exists. A guard: with untruncated histograms a
# training latent is always a complete path, so only a budget-capped order can end here.
FAILED_EXHAUSTED = "exhausted"
FAILED_DEADLINE = "deadline"  # the request's time ran out before the search reached the sample
FAILED_UNKNOWN = "unknown context"  # backoff without a network met a context no table knows
NEURAL = 0  # `answered_by` of a position the γ-ARVM filled
UNFILLED = -1  # `answered_by` of a position a failed sample never reached


def parse_mode(text: str) -> Mode:
    """A user's mode name, or InvalidInputError listing the modes."""
    for mode in MODES:
        if text == mode:
            return mode
    raise InvalidInputError(f"mode must be one of {', '.join(MODES)}, got {text!r}")


@dataclass(frozen=True)
class SampleConfig:
    n: int = 16  # samples to draw
    seed: int = 0  # same seed, same samples
    temperature: float = 1.0  # weight count^(1/T): < 1 sharpens, > 1 flattens
    budget: int = 1000  # exact search steps per sample (a step places a token, or goes back)
    time_limit: float | None = None  # seconds for the exact search; samples it did not reach fail

    def __post_init__(self) -> None:
        if self.n < 0:
            raise InvalidInputError(f"n must be ≥ 0, got {self.n}")
        if not MIN_TEMPERATURE <= self.temperature <= MAX_TEMPERATURE:
            raise InvalidInputError(
                f"temperature must be in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}], "
                f"got {self.temperature}"
            )
        if self.budget < 1:
            raise InvalidInputError(f"budget must be ≥ 1, got {self.budget}")
        if self.time_limit is not None and self.time_limit <= 0:
            raise InvalidInputError(f"time_limit must be > 0 seconds, got {self.time_limit}")


@dataclass(frozen=True)
class SampleBatch:
    """Samples and their provenance; arrays are indexed by sample, then (y, x)."""

    tokens: np.ndarray  # (n, H, W) int64; positions a failed sample never filled hold junk
    ok: np.ndarray  # (n,) bool: every position is filled
    failure: np.ndarray  # (n,) str: "" when ok, else why (FAILED_BUDGET, FAILED_EXHAUSTED, …)
    backtracks: np.ndarray  # (n,) int64: times the search went back (one position or more)
    jumps: np.ndarray  # (n,) int64: those backtracks that skipped positions (backjumping)
    steps: np.ndarray  # (n,) int64
    examples: np.ndarray  # (n, H, W) int64: a training image holding the window, −1 if neural
    answered_by: np.ndarray  # (n, H, W) int64: γ of the table that chose the token, 0 neural
    placed: np.ndarray  # (n,) int64: positions filled (all of them when ok)

    def __len__(self) -> int:
        return len(self.ok)

    @property
    def neural_share(self) -> np.ndarray:
        """(n,) share of each sample's positions that the γ-ARVM filled."""
        return (self.answered_by == NEURAL).mean(axis=(1, 2))

    @staticmethod
    def concatenate(parts: list[SampleBatch]) -> SampleBatch:
        return SampleBatch(
            *(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(SampleBatch))
        )


def uniform(seed: int, sample: np.ndarray, step: np.ndarray, j: np.ndarray | int = 0) -> np.ndarray:
    """Counter-based uniforms in (0, 1) from (seed, sample number, step, candidate j)."""
    with np.errstate(over="ignore"):
        x = splitmix64(np.asarray(j, dtype=np.uint64) + np.uint64(0x632BE59BD9B4E019))
        x = splitmix64(x ^ np.asarray(step, dtype=np.int64).astype(np.uint64))
        x = splitmix64(x ^ np.asarray(sample, dtype=np.int64).astype(np.uint64))
        x = splitmix64(x ^ np.uint64(seed & 0xFFFFFFFFFFFFFFFF))
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
