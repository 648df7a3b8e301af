"""Nearest training images and the memorization flags (DESIGN.md §7).

Two exact top-k searches over all training images: by pixel PSNR (one matrix product per query
batch) and by Hamming distance between binary latents (service/hamming.py). Each hit reports
both distances, the PSNR to the BL-AE's own reconstruction of the training image, and the two
memorization flags: PSNR above 30 dB (the paper's rule) and equal latents.

Pixel search. ‖x − y‖² = ‖x‖² + ‖y‖² − 2x·y is computed on pixels centred to integers in
[−128, 127] and held in float32: a product is at most 2^14 and any partial sum of D ≤ 1024 of
them stays below 2^24, so the matrix product is exact in float32 whatever the summation order
(and bounded by the usual γ_D error beyond that). Adding ‖y‖² rounds, by at most 3·D/1024 units
of (1/255)², so near-ties can swap: the k + SLACK best by that score are ranked again by their
exact integer squared error (ties by lower id), and a query is accepted only when the error bound
proves that no other image can come between; the rare query that fails (a crowd of near-ties) is
searched again with more candidates. Reported PSNRs come from exact integer errors.

PSNR = 10·log10(1 / MSE) with pixels in [0, 1] and MSE per pixel value; identical images
(MSE = 0) get PSNR_CAP_DB = 100 dB instead of infinity, and so does any MSE below 10^−10.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from models import BLAE
from service.bits import packed_size
from service.checkpoints import BLAECheckpoint, load_blae
from service.codec import decode_packed, encode_images
from service.errors import InvalidInputError, RunError
from service.hamming import HammingIndex, TopK
from service.parquet_io import LatentSet, read_images, read_latents
from service.run import RunPaths
from service.sources import ImageSet

log = logging.getLogger(__name__)

MEMORIZED_PSNR_DB = 30.0  # the paper's rule: a sample this close to a training image is a copy
PSNR_CAP_DB = 100.0  # reported for identical images, where PSNR is infinite
MSE_FLOOR = 10 ** (-PSNR_CAP_DB / 10)  # MSE below this reads as PSNR_CAP_DB
SLACK = 8  # candidates beyond k ranked exactly per query: room for near-ties of the float score
SCORE_BYTES = 64 << 20  # float32 (queries × images) score block per matrix product
PAIR_ELEMENTS = 1 << 22  # int32 pixel differences per step of the exact re-ranking
RECONSTRUCTIONS_PREFIX = "train-reconstructions-"  # + key + ".npy" in the run directory
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
        self.pixels = np.ascontiguousarray(images.reshape(n, -1), dtype=np.uint8)  # (N, D)
        self.values = self.pixels.shape[1]
        self._centred = self.pixels.astype(np.float32)  # (N, D)
        self._centred -= _CENTRE
        self._norms = _centred_norms(self.pixels).astype(np.float32)  # (N,) exact while D ≤ 1024
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


@dataclass(frozen=True)
class Hit:
    """One training image near a query."""

    id: int  # images.parquet id
    label: int
    label_name: str | None
    psnr: float  # dB, query vs the training image
    psnr_reconstruction: float  # dB, query vs the BL-AE reconstruction of the training image
    hamming: int  # bits that differ between the query's latent and the training latent
    memorized: bool  # psnr > MEMORIZED_PSNR_DB
    exact_copy: bool  # hamming == 0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class NearestResult:
    """Top-k training images of Q queries, best first; every array is (Q, k)."""

    ranked_by: str  # "pixels" (PSNR) or "latents" (Hamming distance)
    ids: np.ndarray  # int64
    labels: np.ndarray  # int64
    psnr: np.ndarray  # float64 dB
    psnr_reconstruction: np.ndarray  # float64 dB
    hamming: np.ndarray  # int64
    class_names: tuple[str, ...]

    @property
    def memorized(self) -> np.ndarray:
        """(Q, k) bool: PSNR above MEMORIZED_PSNR_DB, the paper's rule."""
        return self.psnr > MEMORIZED_PSNR_DB

    @property
    def exact_copy(self) -> np.ndarray:
        """(Q, k) bool: the latents are equal."""
        return self.hamming == 0

    def __len__(self) -> int:
        return len(self.ids)

    def hits(self, query: int) -> list[Hit]:
        """The hits of one query, best first."""
        names = self.class_names
        return [
            Hit(
                id=int(self.ids[query, j]),
                label=int(label),
                label_name=names[label] if 0 <= label < len(names) else None,
                psnr=float(self.psnr[query, j]),
                psnr_reconstruction=float(self.psnr_reconstruction[query, j]),
                hamming=int(self.hamming[query, j]),
                memorized=bool(self.psnr[query, j] > MEMORIZED_PSNR_DB),
                exact_copy=bool(self.hamming[query, j] == 0),
            )
            for j, label in enumerate(self.labels[query].tolist())
        ]

    def to_hits(self) -> list[list[Hit]]:
        return [self.hits(i) for i in range(len(self))]


class NearestIndex:
    """All training images of a run, their latents and reconstructions, searchable both ways."""

    def __init__(
        self,
        images: np.ndarray,
        packed: np.ndarray,
        ids: np.ndarray,
        labels: np.ndarray,
        reconstructions: np.ndarray,
        *,
        latent_shape: tuple[int, int, int],
        class_names: tuple[str, ...] = (),
        model: BLAE | None = None,
    ) -> None:
        """images, reconstructions: (N, C, H, W) uint8; packed: (N, bytes) uint8 latents; ids,
        labels: (N,). Without a model, queries must come with their bits and decoded pixels."""
        n = len(ids)
        if images.ndim != 4 or images.dtype != np.uint8 or len(images) != n:
            raise ValueError(
                f"images must be uint8 (N={n}, C, H, W), got {images.dtype} {images.shape}"
            )
        if reconstructions.shape != images.shape or reconstructions.dtype != np.uint8:
            raise ValueError(
                f"reconstructions must be uint8 {images.shape}, got {reconstructions.shape}"
            )
        if packed.shape != (n, packed_size(latent_shape)) or len(labels) != n or n == 0:
            raise ValueError(f"need N ≥ 1 rows of images, latents {latent_shape}, ids and labels")
        order = np.argsort(ids, kind="stable")  # position order = id order: ties go to lower ids
        self.ids = np.asarray(ids, dtype=np.int64)[order]
        if np.any(self.ids[1:] == self.ids[:-1]):
            raise ValueError("training ids must be unique")
        self.labels = np.asarray(labels, dtype=np.int64)[order]
        c, h, w = images.shape[1:]
        self.image_shape = (int(c), int(h), int(w))
        self.latent_shape = latent_shape
        self.class_names = tuple(class_names)
        self.model = model
        self.pixels = PixelIndex(images[order])
        self.latents = HammingIndex(packed[order], int(np.prod(latent_shape)))
        self.reconstructions = np.ascontiguousarray(reconstructions[order].reshape(n, -1))
        self.packed = np.ascontiguousarray(packed[order])

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_run(cls, paths: RunPaths, *, device: str = "cpu") -> NearestIndex:
        """The training split of a run, its BL-AE, and the cached reconstructions."""
        checkpoint = load_blae(paths, device=device)
        latents = read_latents(paths.require(paths.latents, "encode"))
        if latents.model_sha256 != checkpoint.sha256:
            raise RunError(
                f"{paths.latents} was encoded by another BL-AE: "
                f"run `latentgram encode --run {paths.root}` again"
            )
        image_ids, images = read_images(paths.require(paths.images, "encode"))
        return cls.from_training_split(paths, checkpoint, image_ids, images, latents)

    @classmethod
    def from_training_split(
        cls,
        paths: RunPaths,
        checkpoint: BLAECheckpoint,
        image_ids: np.ndarray,
        images: ImageSet,
        latents: LatentSet,
    ) -> NearestIndex:
        """The training split of a run's images and latents, already read."""
        train_images = images.select(images.splits == "train")
        image_ids = image_ids[images.splits == "train"]
        train = latents.select(latents.splits == "train")
        if len(train) == 0:
            raise RunError(f"{paths.latents} has no training images")
        by_image, by_latent = np.argsort(image_ids), np.argsort(train.ids)
        if not np.array_equal(image_ids[by_image], train.ids[by_latent]):
            raise RunError(
                f"{paths.images} and {paths.latents} hold different training images: "
                f"run `latentgram encode --run {paths.root}` again"
            )
        packed = train.packed[by_latent]
        return cls(
            train_images.images[by_image],
            packed,
            image_ids[by_image],
            train_images.labels[by_image],
            cached_reconstructions(paths, checkpoint, packed),
            latent_shape=train.shape,
            class_names=images.class_names,
            model=checkpoint.model,
        )

    def by_pixels(
        self, images: np.ndarray, k: int, *, bits: np.ndarray | None = None
    ) -> NearestResult:
        """The k training images of highest PSNR to each query image (Q, C, H, W) uint8.

        bits: the queries' packed latents (Q, bytes); encoded through the BL-AE when None.
        """
        self._check_k(k)
        images = self._check_images(images, "images")
        if bits is None:
            if self.model is None:
                raise InvalidInputError(
                    "bits are required: this index has no BL-AE to encode images"
                )
            bits, _ = encode_images(self.model, images)
        bits = self._check_packed(bits, "bits", len(images))
        flat = images.reshape(len(images), -1)
        top = self.pixels.search(flat, k)
        hamming = self.latents.distances_at(bits, top.positions)
        return self._result("pixels", flat, top.positions, top.distances, hamming)

    def by_latents(
        self, packed: np.ndarray, k: int, *, decoded: np.ndarray | None = None
    ) -> NearestResult:
        """The k training latents of least Hamming distance to each query (Q, bytes) uint8.

        decoded: the queries decoded to pixels (Q, C, H, W) uint8, for the PSNRs; decoded through
        the BL-AE when None.
        """
        self._check_k(k)
        packed = self._check_packed(packed, "latents", None)
        if decoded is None:
            if self.model is None:
                raise InvalidInputError("decoded is required: this index has no BL-AE to decode")
            decoded = decode_packed(self.model, packed)
        decoded = self._check_images(decoded, "decoded", len(packed))
        flat = decoded.reshape(len(decoded), -1)
        top = self.latents.search(packed, k)
        squared = squared_errors(flat, self.pixels.pixels, top.positions)
        return self._result("latents", flat, top.positions, squared, top.distances)

    def _result(
        self,
        ranked_by: str,
        queries: np.ndarray,
        positions: np.ndarray,
        squared: np.ndarray,
        hamming: np.ndarray,
    ) -> NearestResult:
        values = self.pixels.values
        to_reconstruction = squared_errors(queries, self.reconstructions, positions)
        return NearestResult(
            ranked_by=ranked_by,
            ids=self.ids[positions],
            labels=self.labels[positions],
            psnr=psnr_from_squared_error(squared, values),
            psnr_reconstruction=psnr_from_squared_error(to_reconstruction, values),
            hamming=hamming.astype(np.int64),
            class_names=self.class_names,
        )

    def _check_k(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(self):
            raise InvalidInputError(
                f"k must be an integer from 1 to {len(self)} (the number of training images), "
                f"got {k!r}"
            )

    def _check_images(self, images: np.ndarray, field: str, count: int | None = None) -> np.ndarray:
        images = np.asarray(images)
        c, h, w = self.image_shape
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != self.image_shape:
            raise InvalidInputError(
                f"{field} must be uint8 of shape (Q, {c}, {h}, {w}), "
                f"got {images.dtype} {images.shape}"
            )
        _check_count(field, len(images), count)
        return images

    def _check_packed(self, packed: np.ndarray, field: str, count: int | None) -> np.ndarray:
        packed = np.asarray(packed)
        width = packed_size(self.latent_shape)
        if packed.dtype != np.uint8 or packed.ndim != 2 or packed.shape[1] != width:
            raise InvalidInputError(
                f"{field} must be packed uint8 of shape (Q, {width}) for latents of shape "
                f"{self.latent_shape}, got {packed.dtype} {packed.shape}"
            )
        _check_count(field, len(packed), count)
        return packed


def _check_count(field: str, rows: int, count: int | None) -> None:
    if count is not None and rows != count:
        raise InvalidInputError(f"{field} must have one row per query ({count}), got {rows}")


def reconstructions_path(paths: RunPaths, model_sha256: str, packed: np.ndarray) -> Path:
    """Cache file of the decoded training latents, keyed by the BL-AE checksum and the latents."""
    digest = hashlib.sha256(model_sha256.encode())
    digest.update(repr(packed.shape).encode())
    digest.update(np.ascontiguousarray(packed).tobytes())
    return paths.root / f"{RECONSTRUCTIONS_PREFIX}{digest.hexdigest()[:16]}.npy"


def cached_reconstructions(
    paths: RunPaths, checkpoint: BLAECheckpoint, packed: np.ndarray
) -> np.ndarray:
    """BL-AE reconstructions (N, C, H, W) uint8 of training latents (N, bytes), decoded once.

    A cache file whose key differs (another BL-AE or other latents) is never read, and is removed
    when the new one is written. A read-only run directory only costs the decode on every load.
    """
    path = reconstructions_path(paths, checkpoint.sha256, packed)
    cfg = checkpoint.model.config
    shape = (len(packed), cfg.image_channels, cfg.image_size, cfg.image_size)
    if path.exists():
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.dtype == np.uint8 and cached.shape == shape:
                return cached
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", path, exc)
    started = time.perf_counter()
    reconstructions = decode_packed(checkpoint.model, packed)
    log.info("decoded %d training latents in %.1f s", len(packed), time.perf_counter() - started)
    try:
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            np.save(f, reconstructions, allow_pickle=False)
        os.replace(tmp, path)
        for stale in paths.root.glob(f"{RECONSTRUCTIONS_PREFIX}*.npy"):
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("cannot cache reconstructions in %s: %s", paths.root, exc)
    return reconstructions
