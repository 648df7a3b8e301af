"""Exact nearest images by pixel error (DESIGN.md §7): one matrix product per query block.

‖x − y‖² = ‖x‖² + ‖y‖² − 2x·y is computed on pixels centred to integers in [−128, 127] and held in
float32, the queries scaled by −2 first (exactly): a product is an even integer of magnitude at
most 2^15 and any partial sum of D ≤ 1024 of them an even integer below 2^25, which float32 holds
exactly, so the matrix product is exact whatever the summation order (and bounded by the usual
γ_D error beyond that). Adding ‖y‖² rounds, by at most 3·D/1024 units of (1/255)², so near-ties can
swap: the k + SLACK best by that score are ranked again by their exact integer squared error (ties
by lower id), and a query is accepted only when the error bound proves that no other image can
come between; the rare query that fails (a crowd of near-ties) is searched again with more
candidates. Reported PSNRs come from exact integer errors.

PSNR = 10·log10(1 / MSE) with pixels in [0, 1] and MSE per pixel value; identical images
(MSE = 0) get PSNR_CAP_DB = 100 dB instead of infinity, and so does any MSE below 10^−10.
"""

from __future__ import annotations

import numpy as np
import torch

from service.evaluation.hamming import TopK

PSNR_CAP_DB = 100.0  # reported for identical images, where PSNR is infinite
MSE_FLOOR = 10 ** (-PSNR_CAP_DB / 10)  # MSE below this reads as PSNR_CAP_DB
SLACK = 8  # candidates beyond k ranked exactly per query: room for near-ties of the float score
SCORE_BYTES = 64 << 20  # float32 (queries × images) score block per matrix product
PAIR_ELEMENTS = 1 << 22  # int32 pixel differences per step of the exact re-ranking
_CENTRE = 128  # pixels − 128 ∈ [−128, 127]: |products| ≤ 2^14
_UNIT_ROUNDOFF = 2.0**-24  # float32


def psnr_from_squared_error(squared: np.ndarray, values: int) -> np.ndarray:
    """Summed squared uint8 errors over `values` pixel values → PSNR in dB, capped."""
    mse = np.asarray(squared, dtype=np.float64) / (255.0**2 * values)
    return np.minimum(PSNR_CAP_DB, 10 * np.log10(1.0 / np.maximum(mse, MSE_FLOOR)))


def squared_errors(queries: np.ndarray, table: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Exact Σ(x − y)² of query i (Q, D) uint8 against table rows positions[i] (Q, m) → (Q, m)."""
    q, m = positions.shape
    values = table.shape[1]
    dtype = np.int32 if values * 255**2 < 2**31 else np.int64
    rows = np.repeat(np.arange(q), m)
    flat = positions.ravel()
    out = np.empty(q * m, np.int64)
    step = max(1, PAIR_ELEMENTS // max(1, values))
    for s in range(0, q * m, step):  # bounded memory: step × D differences at a time
        diff = table[flat[s : s + step]].astype(dtype) - queries[rows[s : s + step]]
        out[s : s + step] = np.einsum("pd,pd->p", diff, diff)
    return out.reshape(q, m)


def _centred_norms(pixels: np.ndarray) -> np.ndarray:
    """Exact ‖p − 128‖² of each row of (N, D) uint8 → (N,) int64, a block of rows at a time."""
    out = np.empty(len(pixels), np.int64)
    step = max(1, PAIR_ELEMENTS // max(1, pixels.shape[1]))
    for s in range(0, len(pixels), step):  # float64 holds these integer sums exactly
        block = pixels[s : s + step].astype(np.float64)
        block -= _CENTRE
        out[s : s + step] = np.einsum("nd,nd->n", block, block)
    return out


def _best_k(exact: np.ndarray, positions: np.ndarray, k: int, n: int) -> TopK:
    """The k smallest exact errors of each row, ties by lower position."""
    key = np.sort(exact * n + positions, axis=1)[:, :k]  # unique: ties broken by position
    return TopK(key % n, key // n)


class PixelIndex:
    """Exact nearest images by summed squared pixel error (equivalently by PSNR)."""

    def __init__(self, images: np.ndarray) -> None:
        """images: (N, C, H, W) uint8."""
        n = len(images)
        pixels = np.ascontiguousarray(images.reshape(n, -1), dtype=np.uint8)  # (N, D)
        centred = pixels.astype(np.float32)  # (N, D)
        centred -= _CENTRE
        self._hold(pixels, centred, _centred_norms(pixels).astype(np.float32))

    @classmethod
    def from_arrays(cls, pixels: np.ndarray, centred: np.ndarray, norms: np.ndarray) -> PixelIndex:
        """An index over the arrays of `arrays()` (mapped read-only, say), used as they are."""
        index = cls.__new__(cls)
        index._hold(pixels, centred, norms)
        return index

    def arrays(self) -> dict[str, np.ndarray]:
        """What the index searches: pixels (N, D) uint8, centred (N, D) float32, norms (N,)."""
        return {"pixels": self.pixels, "centred": self._centred, "norms": self._norms}

    def _hold(self, pixels: np.ndarray, centred: np.ndarray, norms: np.ndarray) -> None:
        self.pixels = pixels  # (N, D) uint8
        self.values = self.pixels.shape[1]
        self._centred = centred  # (N, D) float32 pixels − 128
        self._norms = norms  # (N,) float32 ‖pixels − 128‖², exact while D ≤ 1024
        # Bound on |score − true score| (module docstring): one rounding of the norm and of the
        # sum, each ≤ u·|value| with |value| ≤ 3·D·2^14, plus γ_D·Σ|2x·y| where the product is
        # not exact. Doubled for margin; used only to decide when to look at more candidates.
        d = self.values
        bound = 4 * _UNIT_ROUNDOFF * d * 2**14
        if d * 2**14 >= 2**24:
            bound += d * _UNIT_ROUNDOFF / (1 - d * _UNIT_ROUNDOFF) * d * 2**15
        self._bound = 2 * bound

    def __len__(self) -> int:
        return len(self.pixels)

    def search(self, queries: np.ndarray, k: int) -> TopK:
        """Exact k nearest rows of each query (Q, D) uint8; distances are Σ squared errors."""
        n = len(self)
        if not 1 <= k <= n:
            raise ValueError(f"k must be in 1..{n}, got {k}")
        queries = np.ascontiguousarray(queries, dtype=np.uint8)
        step = max(1, SCORE_BYTES // (4 * n))
        parts = [self._search_block(queries[s : s + step], k) for s in range(0, len(queries), step)]
        return TopK.concatenate(parts, k)

    def _search_block(self, queries: np.ndarray, k: int) -> TopK:
        n = len(self)
        centred = queries.astype(np.float32) - _CENTRE  # (q, D)
        # score = ‖y‖² − 2x·y = ‖x − y‖² − ‖x‖²; the factor −2 is exact in floating point.
        scores = (centred * -2) @ self._centred.T  # (q, N) float32
        scores += self._norms
        m = min(n, k + SLACK)
        candidates = torch.topk(torch.from_numpy(scores), m, dim=1, largest=False, sorted=False)
        positions = candidates.indices.numpy()  # (q, m)
        best = _best_k(squared_errors(queries, self.pixels, positions), positions, k, n)
        if m == n:
            return best
        # Proof of exactness: every other image has score ≥ the m-th smallest score, so its true
        # squared error is ≥ that score − bound + ‖x‖², which must exceed the k-th best found.
        query_norms = _centred_norms(queries)
        floor = candidates.values.numpy().max(axis=1).astype(np.float64) - self._bound
        unproven = np.flatnonzero(floor + query_norms <= best.distances[:, -1])
        for i in unproven:  # rare: a crowd of (near-)ties at the k-th place
            best.positions[i], best.distances[i] = self._widen(queries[i], scores[i], k, m)
        return best

    def _widen(
        self, query: np.ndarray, scores: np.ndarray, k: int, m: int
    ) -> tuple[np.ndarray, ...]:
        """One query searched with 4× more candidates until proven (at worst all N)."""
        n, query_norm = len(self), float(_centred_norms(query[None])[0])
        while True:
            m = min(n, 4 * m)
            picked = np.argpartition(scores, m - 1)[:m] if m < n else np.arange(n)
            exact = squared_errors(query[None], self.pixels, picked[None])
            best = _best_k(exact, picked[None], k, n)
            floor = float(scores[picked].max()) - self._bound + query_norm
            if m == n or floor > best.distances[0, -1]:
                return best.positions[0], best.distances[0]
