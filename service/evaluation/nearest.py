"""Nearest training images and the memorization flags (DESIGN.md §7).

Two exact top-k searches over all training images: by pixel PSNR (evaluation/pixels.py) and by
Hamming distance between binary latents (evaluation/hamming.py). Each hit reports both distances,
the PSNR to the BL-AE's own reconstruction of the training image, and the two memorization flags:
PSNR above 30 dB (the paper's rule) and equal latents.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, get_args

import numpy as np

from models import BLAE
from service.errors import InvalidInputError
from service.evaluation.hamming import HammingIndex
from service.evaluation.pixels import PixelIndex, psnr_from_squared_error, squared_errors
from service.latents.bits import packed_size
from service.latents.codec import decode_packed, encode_images

MEMORIZED_PSNR_DB = 30.0  # the paper's rule: a sample this close to a training image is a copy
NearestBy = Literal["pixels", "latent"]  # the one list of what a nearest search ranks by
NEAREST_BY: tuple[NearestBy, ...] = get_args(NearestBy)


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

    ranked_by: NearestBy  # "pixels" (PSNR) or "latent" (Hamming distance)
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
                memorized=bool(self.memorized[query, j]),
                exact_copy=bool(self.exact_copy[query, j]),
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
        return self._result("latent", flat, top.positions, squared, top.distances)

    def _result(
        self,
        ranked_by: NearestBy,
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
