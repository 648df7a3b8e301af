"""Nearest training images and the memorization flags (DESIGN.md §7).

Two exact top-k searches over all training images: by pixel PSNR (evaluation/pixels.py) and by
Hamming distance between binary latents (evaluation/hamming.py). Each hit reports both distances,
the PSNR to the BL-AE's own reconstruction of the training image, and the two memorization flags:
PSNR above 30 dB (the paper's rule) and equal latents.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from models import BLAE
from service.array_files import StaleArrays, read_arrays, remove_others, write_arrays
from service.errors import InvalidInputError
from service.evaluation.hamming import HammingIndex
from service.evaluation.pixels import PixelIndex, psnr_from_squared_error, squared_errors
from service.latents.bits import packed_size
from service.latents.codec import decode_packed, encode_images

log = logging.getLogger(__name__)

NEAREST_DIR = (
    "nearest"  # <run>/nearest/<key>/: a run's NearestIndex arrays, mapped by every process
)
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
    memorized_reconstruction: bool  # psnr_reconstruction > MEMORIZED_PSNR_DB
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
    def memorized_reconstruction(self) -> np.ndarray:
        """(Q, k) bool: the paper's rule against the reconstruction, which a decoded copy passes
        whatever the BL-AE's own PSNR."""
        return self.psnr_reconstruction > MEMORIZED_PSNR_DB

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
                memorized_reconstruction=bool(self.memorized_reconstruction[query, j]),
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
        sorted_ids = np.asarray(ids, dtype=np.int64)[order]
        if np.any(sorted_ids[1:] == sorted_ids[:-1]):
            raise ValueError("training ids must be unique")
        self._hold(
            {
                "ids": sorted_ids,
                "labels": np.asarray(labels, dtype=np.int64)[order],
                "packed": np.ascontiguousarray(packed[order]),
                **PixelIndex(images[order]).arrays(),
                "words": HammingIndex(packed[order], int(np.prod(latent_shape))).words,
            },
            np.ascontiguousarray(reconstructions[order].reshape(n, -1)),
            image_shape=images.shape[1:],
            latent_shape=latent_shape,
            class_names=class_names,
            model=model,
        )

    @classmethod
    def from_arrays(
        cls,
        arrays: Mapping[str, np.ndarray],
        reconstructions: np.ndarray,
        *,
        image_shape: tuple[int, ...],
        latent_shape: tuple[int, int, int],
        class_names: tuple[str, ...] = (),
        model: BLAE | None = None,
    ) -> NearestIndex:
        """An index over the arrays of another's `arrays()` (mapped read-only, say), used as they
        are; reconstructions (N, C, H, W) uint8 in the same (id) order."""
        index = cls.__new__(cls)
        flat = reconstructions.reshape(len(reconstructions), -1)  # a view: no copy
        index._hold(
            arrays,
            flat,
            image_shape=image_shape,
            latent_shape=latent_shape,
            class_names=class_names,
            model=model,
        )
        return index

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array the searches read but the reconstructions (cached on their own), by name."""
        return {
            "ids": self.ids,
            "labels": self.labels,
            "packed": self.packed,
            **self.pixels.arrays(),
            "words": self.latents.words,
        }

    def _hold(
        self,
        arrays: Mapping[str, np.ndarray],
        reconstructions: np.ndarray,
        *,
        image_shape: tuple[int, ...],
        latent_shape: tuple[int, int, int],
        class_names: tuple[str, ...],
        model: BLAE | None,
    ) -> None:
        self.ids = arrays["ids"]  # (N,) int64, ascending
        self.labels = arrays["labels"]  # (N,) int64
        self.packed = arrays["packed"]  # (N, bytes) uint8
        c, h, w = image_shape
        self.image_shape = (int(c), int(h), int(w))
        self.latent_shape = latent_shape
        self.class_names = tuple(class_names)
        self.model = model
        self.pixels = PixelIndex.from_arrays(arrays["pixels"], arrays["centred"], arrays["norms"])
        self.latents = HammingIndex.from_words(arrays["words"], int(np.prod(latent_shape)))
        self.reconstructions = reconstructions  # (N, C·H·W) uint8

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


def nearest_key(images: np.ndarray, packed: np.ndarray, ids: np.ndarray, labels: np.ndarray) -> str:
    """A digest of what a NearestIndex is built from: other images or latents, another key."""
    digest = hashlib.sha256()
    for array in (images, packed, np.asarray(ids, np.int64), np.asarray(labels, np.int64)):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.data.cast("B"))
    return digest.hexdigest()[:16]


def shared_nearest_index(
    folder: Path,
    images: np.ndarray,
    packed: np.ndarray,
    ids: np.ndarray,
    labels: np.ndarray,
    reconstructions: np.ndarray,
    *,
    latent_shape: tuple[int, int, int],
    class_names: tuple[str, ...] = (),
    model: BLAE | None = None,
) -> NearestIndex:
    """NearestIndex(images, packed, ids, labels, reconstructions, ...) with its arrays mapped
    read-only from folder/nearest/<key>/, so that the processes serving a run share one copy of
    their pages (the pixels in float32 alone are 4 bytes per pixel of the training set). Built
    and saved there when missing or damaged; built in memory where `folder` cannot be written."""
    key = nearest_key(images, packed, ids, labels)
    target = folder / NEAREST_DIR / key
    meta = {"key": key, "rows": len(ids), "image_shape": list(images.shape[1:])}
    try:
        arrays = read_arrays(target, meta)
        _check_rows(arrays, len(ids))
    except StaleArrays as why:
        log.info("building the nearest-image arrays in %s: %s", target, why)
        index = NearestIndex(
            images,
            packed,
            ids,
            labels,
            reconstructions,
            latent_shape=latent_shape,
            class_names=class_names,
            model=model,
        )
        try:
            arrays = write_arrays(target, index.arrays(), meta)
        except OSError as exc:
            log.warning(
                "cannot cache the nearest-image arrays in %s (%s): kept in memory", folder, exc
            )
            return index
        remove_others(target.parent, {key})
    order = np.argsort(ids, kind="stable")
    if np.any(order != np.arange(len(order))):
        reconstructions = reconstructions[order]  # a copy; in id order already, they stay mapped
    return NearestIndex.from_arrays(
        arrays,
        reconstructions,
        image_shape=images.shape[1:],
        latent_shape=latent_shape,
        class_names=class_names,
        model=model,
    )


def _check_rows(arrays: Mapping[str, np.ndarray], rows: int) -> None:
    """Each array has a row per training image (the words hold them as columns)."""
    names = ("ids", "labels", "packed", "pixels", "centred", "norms", "words")
    for name in names:
        if name not in arrays:
            raise StaleArrays(f"the nearest-image arrays lack {name}")
        axis = 1 if name == "words" else 0
        if arrays[name].ndim <= axis or arrays[name].shape[axis] != rows:
            raise StaleArrays(f"{name} has no row for each of the {rows} training images")
