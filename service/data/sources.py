"""Load image data sets (Fashion-MNIST, IDX, CIFAR-10, image folders) as uint8 arrays.

A source is named by a spec string: ``fashion-mnist`` (the default), ``idx:PATH``,
``cifar10:PATH`` or ``folder:PATH``. Every loader returns an :class:`ImageSet` holding
(N, C, H, W) uint8 images, int64 labels and a "train"/"test" split per image.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import tarfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from service.data.images import colour_and_alpha, flatten
from service.errors import InvalidInputError, SourceError, first_line

SPLITS = ("train", "test")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_ENV = "LATENTGRAM_FASHION_MNIST_DIR"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")  # fmt: skip
SPEC_FORMS = "fashion-mnist, idx:PATH, cifar10:PATH or folder:PATH"
EXPECTED = {  # what PATH should be, per scheme, for error messages
    "idx": "a folder of MNIST-layout IDX files",
    "cifar10": "cifar-10-python.tar.gz or the cifar-10-batches-py folder",
    "folder": "a folder of class sub-folders of images",
}
IDX_IMAGES, IDX_LABELS = 0x00000803, 0x00000801
IDX_PAIRS = {"train": "train", "test": "t10k"}  # split -> file name prefix of its IDX pair
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
CIFAR_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")

# images, labels, splits, class names: what each format-specific loader returns.
Loaded = tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]
Part = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class ImageSet:
    """Images of one data source: uint8 (N, C, H, W) with labels and a train/test split."""

    images: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    class_names: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        """Number of images."""
        return int(self.images.shape[0])

    def select(self, mask: np.ndarray) -> ImageSet:
        """Keep the images picked by a boolean mask or an index array."""
        mask = np.asarray(mask)
        if mask.dtype == bool and mask.shape != (len(self),):
            raise InvalidInputError(f"mask has shape {mask.shape}, expected ({len(self)},)")
        return replace(
            self,
            images=np.ascontiguousarray(self.images[mask]),
            labels=self.labels[mask],
            splits=self.splits[mask],
        )

    def split(self, name: str) -> ImageSet:
        """Keep only the images of split ``name`` ("train" or "test")."""
        if name not in SPLITS:
            raise InvalidInputError(f"unknown split {name!r} (expected one of {', '.join(SPLITS)})")
        return self.select(self.splits == name)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape (C, H, W) of one image."""
        _, c, h, w = self.images.shape
        return int(c), int(h), int(w)


def _parse_spec(source: str) -> tuple[str, Path]:
    """Split a source spec into its scheme and path."""
    if source == "fashion-mnist":
        # Read at call time so tests and users can point it elsewhere after import.
        return source, Path(os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DIR)
    scheme, sep, path = source.partition(":")
    if not sep or scheme not in EXPECTED or not path.strip():
        raise InvalidInputError(f"unknown data source {source!r} (expected {SPEC_FORMS})")
    found = Path(path).expanduser()
    if not found.exists():
        raise SourceError(f"no such file or folder: {found} (expected {EXPECTED[scheme]})")
    return scheme, found


def _read_maybe_gzip(path: Path) -> bytes:
    """Read a file, decompressing it when it starts with the gzip magic bytes."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise SourceError(f"corrupt gzip file: {path} ({exc}; expected a valid gzip)") from exc


def _parse_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one uint8 IDX file (3-D images or 1-D labels) into an array."""
    raw = _read_maybe_gzip(path)
    kind, ndim = ("image", 3) if magic == IDX_IMAGES else ("label", 1)
    found = struct.unpack(">I", raw[:4])[0] if len(raw) >= 4 else None
    if found != magic:
        shown = "none" if found is None else f"0x{found:08x}"
        raise SourceError(f"not an IDX {kind} file: {path} (magic {shown}, expected 0x{magic:08x})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise SourceError(f"truncated IDX file: {path} (header cut short, expected {header} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    size, expected = len(raw) - header, int(np.prod(dims))
    if size != expected:
        what = "truncated" if size < expected else "oversized"
        raise SourceError(
            f"{what} IDX file: {path} ({size} data bytes, expected {expected} "
            f"for dims {'x'.join(map(str, dims))})"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _stack(parts: list[tuple[np.ndarray, np.ndarray, str]]) -> Part:
    """Concatenate (images, labels, split name) parts into images, labels and splits."""
    splits = np.concatenate([np.full(len(lab), split, dtype="<U5") for _, lab, split in parts])
    labels = np.concatenate([lab for _, lab, _ in parts]).astype(np.int64)
    return np.concatenate([img for img, _, _ in parts]), labels, splits


def _idx_file(folder: Path, kind: str) -> Path | None:
    """Find the IDX file ``kind`` (e.g. "t10k-labels") in ``folder``, gzipped or not."""
    stem = f"{kind}-idx3-ubyte" if kind.endswith("images") else f"{kind}-idx1-ubyte"
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _load_idx(folder: Path) -> Loaded:
    """Load an MNIST-layout folder of IDX files; the t10k pair is optional."""
    if not folder.is_dir():
        raise SourceError(f"not a folder: {folder} (expected a folder of MNIST-layout IDX files)")
    parts: list[tuple[np.ndarray, np.ndarray, str]] = []
    for split, prefix in IDX_PAIRS.items():
        img, lab = _idx_file(folder, f"{prefix}-images"), _idx_file(folder, f"{prefix}-labels")
        if img is None and lab is None and split == "test":
            continue  # no test pair: everything is train
        if img is None or lab is None:
            raise SourceError(
                f"missing {prefix} IDX file in {folder} (expected "
                f"{prefix}-images-idx3-ubyte[.gz] and {prefix}-labels-idx1-ubyte[.gz])"
            )
        images, labels = _parse_idx(img, IDX_IMAGES), _parse_idx(lab, IDX_LABELS)
        if len(images) != len(labels):
            raise SourceError(
                f"IDX count mismatch in {folder}: {len(images)} {prefix} images "
                f"but {len(labels)} labels (expected equal counts)"
            )
        parts.append((images[:, None], labels, split))
    images, labels, splits = _stack(parts)
    top = int(labels.max()) + 1 if len(labels) else 0
    return images, labels, splits, tuple(str(i) for i in range(top))


def _load_fashion_mnist(folder: Path) -> Loaded:
    """Load Fashion-MNIST from the Debian package folder (or its env override)."""
    kinds = [f"{prefix}-{kind}" for prefix in IDX_PAIRS.values() for kind in ("images", "labels")]
    if any(_idx_file(folder, kind) is None for kind in kinds):
        raise SourceError(
            f"Fashion-MNIST not found in {folder} (expected its four IDX files: "
            "run `apt-get install dataset-fashion-mnist` on Debian, or set "
            f"{FASHION_MNIST_ENV}, or pass idx:PATH to a folder holding them)"
        )
    images, labels, splits, _ = _load_idx(folder)
    return images, labels, splits, FASHION_MNIST_CLASSES


def _cifar_files(path: Path) -> dict[str, bytes]:
    """Read the CIFAR-10 files by name from the tar archive (in memory) or the folder."""
    if path.is_dir():
        sub = path / "cifar-10-batches-py"
        folder = sub if sub.is_dir() else path
        return {f.name: f.read_bytes() for f in folder.iterdir() if f.name in CIFAR_FILES}
    try:
        with tarfile.open(path, "r:*") as tar:
            files = {}
            for member in tar.getmembers():
                name = Path(member.name).name
                handle = tar.extractfile(member) if name in CIFAR_FILES else None
                if handle is not None:
                    files[name] = handle.read()
            return files
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise SourceError(f"not a readable CIFAR-10 archive: {path} ({first_line(exc)})") from exc


def _unpickle(files: dict[str, bytes], name: str, key: bytes, path: Path) -> dict:
    """Unpickle one CIFAR-10 file and check it holds ``key``."""
    if name not in files:
        raise SourceError(
            f"CIFAR-10 file missing: {name} in {path} (expected {', '.join(CIFAR_FILES)})"
        )
    try:
        # pickle can run code: we only ever unpickle files the user pointed us at.
        data = pickle.loads(files[name], encoding="bytes")
    except Exception as exc:  # a bad pickle can raise almost any type
        raise SourceError(f"unreadable CIFAR-10 file: {name} in {path} ({exc})") from exc
    if not isinstance(data, dict) or key not in data:
        raise SourceError(f"bad CIFAR-10 file: {name} in {path} (expected a dict with key {key!r})")
    return data


def _load_cifar10(path: Path) -> Loaded:
    """Load CIFAR-10 (python version) from its tar.gz or extracted folder."""
    files = _cifar_files(path)
    meta = _unpickle(files, "batches.meta", b"label_names", path)
    parts = []
    for name in CIFAR_FILES[:6]:
        batch = _unpickle(files, name, b"data", path)
        data, labels = np.asarray(batch[b"data"], np.uint8), batch.get(b"labels")
        if labels is None or data.shape[1:] != (3072,) or len(labels) != len(data):
            raise SourceError(
                f"bad CIFAR-10 batch: {name} in {path} (expected N×3072 b'data' and N b'labels')"
            )
        # Rows are channel-major (R, G, B planes of 32×32), so a reshape gives (N, C, H, W).
        split = "test" if name == "test_batch" else "train"
        parts.append((data.reshape(-1, 3, 32, 32), np.asarray(labels, np.int64), split))
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta[b"label_names"])
    return (*_stack(parts), names)


def _load_folder(path: Path) -> Loaded:
    """Load a folder of class sub-folders of images (optionally under train/ and test/)."""
    if not path.is_dir():
        raise SourceError(f"not a folder: {path} (expected a folder of class sub-folders)")
    roots = [(path / s, s) for s in SPLITS] if all((path / s).is_dir() for s in SPLITS) else []
    class_dirs = {
        d.name
        for r, _ in roots or [(path, "")]
        for d in r.iterdir()
        if d.is_dir() and not d.name.startswith(".")
    }
    names = tuple(sorted(class_dirs))
    files: list[tuple[Path, int, str]] = []
    for label, name in enumerate(names):
        for root, split in roots or [(path, "")]:
            found = sorted(
                f
                for f in (root / name).glob("*")
                if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
            )
            # Without train/test folders, hold out every 10th file per class, deterministically.
            files += [
                (f, label, split or ("test" if i % 10 == 9 else "train"))
                for i, f in enumerate(found)
            ]
    if not files:
        raise SourceError(f"no images found in {path} (expected class sub-folders of image files)")
    images = _folder_pixels([f for f, _, _ in files])
    labels = np.array([lab for _, lab, _ in files], np.int64)
    return images, labels, np.array([s for _, _, s in files], dtype="<U5"), names


def _folder_pixels(files: list[Path]) -> np.ndarray:
    """Read image files of one size into (N, C, H, W) uint8, converted like uploads are
    (service/data/images.py). Alpha goes over the folder's background: the median colour of
    its opaque border pixels. C = 1 when every image is grey (R = G = B)."""
    read = []
    for f in files:
        try:
            with Image.open(f) as img:
                img.load()
                read.append(colour_and_alpha(img, str(f)))
        except InvalidInputError as exc:
            raise SourceError(str(exc)) from None
        except Exception as exc:  # Pillow raises many types on bad files
            raise SourceError(f"unreadable image file: {f} ({exc})") from exc
        if read[-1][0].shape != read[0][0].shape:
            (h, w), (h0, w0) = read[-1][0].shape[:2], read[0][0].shape[:2]
            raise SourceError(
                f"image size differs: {f} is {w}x{h}, expected {w0}x{h0} like {files[0]}"
            )
    opaque = [_border(c)[_border(a) == 1] if a is not None else _border(c) for c, a in read]
    stacked = np.concatenate(opaque) if opaque else np.zeros((0, 3), np.uint8)
    median = np.median(stacked, axis=0) if len(stacked) else np.zeros(3)
    background = (int(median[0]), int(median[1]), int(median[2]))
    try:
        rgb = np.stack(
            [flatten(c, a, background, str(f)) for (c, a), f in zip(read, files, strict=True)]
        )
    except InvalidInputError as exc:
        raise SourceError(str(exc)) from None
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return rgb[:, None, :, :, 0]
    return rgb.transpose(0, 3, 1, 2)


def _border(pixels: np.ndarray) -> np.ndarray:
    """The border pixels of an (H, W, ...) array, as (2H + 2W - 4, ...)."""
    return np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])


LOADERS: dict[str, Callable[[Path], Loaded]] = {
    "fashion-mnist": _load_fashion_mnist,
    "idx": _load_idx,
    "cifar10": _load_cifar10,
    "folder": _load_folder,
}


def load_images(
    source: str = "fashion-mnist", *, limit: int | None = None, classes: Sequence[int] | None = None
) -> ImageSet:
    """Load ``source`` as an ImageSet, keeping ``classes`` and ``limit`` per split (balanced)."""
    if limit is not None and limit < 1:
        raise InvalidInputError(f"limit must be at least 1, got {limit}")
    scheme, path = _parse_spec(source)
    images, labels, splits, names = LOADERS[scheme](path)
    data = ImageSet(np.ascontiguousarray(images, np.uint8), labels, splits, names, source)
    if classes is not None:
        bad = [c for c in classes if not 0 <= int(c) < len(names)]
        if bad:
            valid = ", ".join(f"{i}={n}" for i, n in enumerate(names))
            raise InvalidInputError(f"unknown class label {bad[0]} (valid labels: {valid})")
        data = data.select(np.isin(data.labels, np.asarray(classes, np.int64)))
    if limit is not None:
        keep = [first_per_class_round(data.labels, data.splits == s, limit) for s in SPLITS]
        data = data.select(np.sort(np.concatenate(keep)))
    return data


def first_per_class_round(labels: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """Indices of ``n`` masked items drawn class-balanced: the first image of every class, then
    the second of every class, and so on (in file order within a round, so a shuffled source
    keeps its first images).

    A plain first-n would keep whole classes of a source stored class by class (a folder), and
    a seeded shuffle would change which images a small run sees whenever the source grows."""
    rows = np.flatnonzero(mask)
    by_class = rows[np.argsort(labels[rows], kind="stable")]
    classes = labels[by_class]
    rank = np.arange(len(by_class)) - np.searchsorted(classes, classes, side="left")
    return np.sort(by_class[np.lexsort((by_class, rank))[:n]])


@dataclass(frozen=True)
class DataSpec:
    """Which images a run is built from; stored in run.json so later steps reload the same."""

    source: str = "fashion-mnist"
    limit: int | None = None  # N images of each split, class-balanced
    classes: tuple[int, ...] | None = None  # labels to keep

    def __post_init__(self) -> None:
        """A relative path is kept absolute, so that later steps find it from any folder."""
        scheme, sep, path = self.source.partition(":")
        if sep and scheme in EXPECTED and path.strip():
            absolute = Path(path).expanduser().absolute()
            object.__setattr__(self, "source", f"{scheme}:{absolute}")

    def load(self) -> ImageSet:
        return load_images(self.source, limit=self.limit, classes=self.classes)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "limit": self.limit, "classes": self.classes}


def describe(images: ImageSet) -> dict[str, Any]:
    """Counts and shapes of an image set, for run.json and the CLI: classes counted as present,
    with images per class and split, so a subset that lost classes shows it."""
    per_class = {
        split: {
            images.class_names[label]: int(count)
            for label, count in zip(
                *np.unique(images.labels[images.splits == split], return_counts=True), strict=True
            )
        }
        for split in SPLITS
    }
    return {
        "source": images.source,
        "shape": list(images.shape),
        "train": int((images.splits == "train").sum()),
        "test": int((images.splits == "test").sum()),
        "class_count": len(np.unique(images.labels)),
        "per_class": per_class,
    }
