"""Round trips and failure modes of service.sources over small files in the real formats."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from service.data.sources import (
    FASHION_MNIST_CLASSES,
    DataSpec,
    ImageSet,
    describe,
    first_per_class_round,
    load_images,
)
from service.errors import InvalidInputError, SourceError

RNG = np.random.default_rng(0)


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """Encode a uint8 array as an IDX file: big-endian magic, dims, then the data."""
    dims = struct.pack(f">{array.ndim}I", *array.shape)
    return struct.pack(">I", magic) + dims + array.astype(np.uint8).tobytes()


def write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    """Write one IDX image/label pair, gzipped or plain."""
    folder.mkdir(parents=True, exist_ok=True)
    for kind, data, magic in (("images-idx3", images, 0x803), ("labels-idx1", labels, 0x801)):
        raw = idx_bytes(data, magic)
        name = f"{prefix}-{kind}-ubyte" + (".gz" if gz else "")
        (folder / name).write_bytes(gzip.compress(raw) if gz else raw)


def make_idx(folder: Path, n_train: int = 12, n_test: int = 5) -> dict[str, np.ndarray]:
    """Write a small MNIST-layout folder (train gzipped, test plain) and return its arrays."""
    arrays = {
        "train_x": RNG.integers(0, 256, (n_train, 4, 3), dtype=np.uint8),
        "train_y": np.arange(n_train, dtype=np.uint8) % 4,
        "test_x": RNG.integers(0, 256, (n_test, 4, 3), dtype=np.uint8),
        "test_y": np.arange(n_test, dtype=np.uint8) % 4,
    }
    write_idx(folder, "train", arrays["train_x"], arrays["train_y"], gz=True)
    if n_test:
        write_idx(folder, "t10k", arrays["test_x"], arrays["test_y"], gz=False)
    return arrays


def cifar_batch(n: int, seed: int) -> dict[bytes, Any]:
    """A CIFAR-10 batch dict as the python version pickles it."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    return {b"data": data, b"labels": [int(x) for x in rng.integers(0, 10, n)]}


CIFAR_NAMES = [f"class{i}".encode() for i in range(10)]


def make_cifar_tar(path: Path, skip: str = "") -> dict[str, dict[bytes, Any]]:
    """Write a real cifar-10-python.tar.gz with 2 images per batch, leaving out ``skip``."""
    batches = {f"data_batch_{i}": cifar_batch(2, i) for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(3, 99)
    files = {**batches, "batches.meta": {b"label_names": CIFAR_NAMES}}
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in files.items():
            if name == skip:
                continue
            raw = pickle.dumps(obj)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return batches


def save_png(path: Path, array: np.ndarray, mode: str) -> None:
    """Save an array as a PNG, making parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


# --- IDX ---------------------------------------------------------------------------------------


def test_idx_round_trip_mixed_gzip(tmp_path: Path) -> None:
    arrays = make_idx(tmp_path)
    data = load_images(f"idx:{tmp_path}")
    assert isinstance(data, ImageSet)
    assert data.images.shape == (17, 1, 4, 3) and data.shape == (1, 4, 3) and len(data) == 17
    assert data.images.dtype == np.uint8 and data.images.flags.c_contiguous
    assert data.labels.dtype == np.int64
    np.testing.assert_array_equal(data.split("train").images[:, 0], arrays["train_x"])
    np.testing.assert_array_equal(data.split("test").images[:, 0], arrays["test_x"])
    np.testing.assert_array_equal(data.split("train").labels, arrays["train_y"])
    np.testing.assert_array_equal(data.split("test").labels, arrays["test_y"])
    assert list(data.splits) == ["train"] * 12 + ["test"] * 5
    assert data.class_names == ("0", "1", "2", "3")
    assert data.source == f"idx:{tmp_path}"


def test_idx_without_test_pair_is_all_train(tmp_path: Path) -> None:
    make_idx(tmp_path, n_test=0)
    data = load_images(f"idx:{tmp_path}")
    assert len(data) == 12 and set(data.splits) == {"train"}


def test_idx_gzip_detected_by_magic_not_suffix(tmp_path: Path) -> None:
    images = RNG.integers(0, 256, (2, 2, 2), dtype=np.uint8)
    # Gzipped content under the plain name must still be decompressed.
    (tmp_path / "train-images-idx3-ubyte").write_bytes(gzip.compress(idx_bytes(images, 0x803)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([0, 1]), 0x801))
    np.testing.assert_array_equal(load_images(f"idx:{tmp_path}").images[:, 0], images)


def test_idx_wrong_magic(tmp_path: Path) -> None:
    make_idx(tmp_path)
    bad = idx_bytes(np.zeros((2, 4, 3), np.uint8), 0x1234)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bad))
    with pytest.raises(SourceError, match=r"not an IDX image file: .*magic 0x00001234"):
        load_images(f"idx:{tmp_path}")


def test_idx_truncated(tmp_path: Path) -> None:
    make_idx(tmp_path)
    raw = idx_bytes(np.zeros((5, 4, 3), np.uint8), 0x803)[:-7]
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(raw)
    with pytest.raises(SourceError, match=r"truncated IDX file: .*53 data bytes, expected 60"):
        load_images(f"idx:{tmp_path}")


def test_idx_count_mismatch(tmp_path: Path) -> None:
    write_idx(tmp_path, "train", np.zeros((3, 2, 2), np.uint8), np.zeros(2, np.uint8), gz=False)
    with pytest.raises(SourceError, match="3 train images but 2 labels"):
        load_images(f"idx:{tmp_path}")


def test_idx_corrupt_gzip(tmp_path: Path) -> None:
    make_idx(tmp_path)
    raw = (tmp_path / "train-labels-idx1-ubyte.gz").read_bytes()
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SourceError, match=r"corrupt gzip file: .*train-labels"):
        load_images(f"idx:{tmp_path}")


def test_idx_missing_label_file(tmp_path: Path) -> None:
    make_idx(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(SourceError, match="missing t10k IDX file"):
        load_images(f"idx:{tmp_path}")


# --- limit, classes, ImageSet ------------------------------------------------------------------


def test_limit_takes_each_class_in_turn(tmp_path: Path) -> None:
    arrays = make_idx(tmp_path)  # labels 0,1,2,3,0,1,... in file order
    data = load_images(f"idx:{tmp_path}", limit=3)
    assert list(data.splits) == ["train"] * 3 + ["test"] * 3
    np.testing.assert_array_equal(data.split("train").images[:, 0], arrays["train_x"][:3])
    np.testing.assert_array_equal(data.split("test").images[:, 0], arrays["test_x"][:3])


def test_classes_filter_then_limit(tmp_path: Path) -> None:
    arrays = make_idx(tmp_path)
    data = load_images(f"idx:{tmp_path}", classes=[1, 3], limit=2)
    keep = np.isin(arrays["train_y"], [1, 3])
    np.testing.assert_array_equal(data.split("train").images[:, 0], arrays["train_x"][keep][:2])
    assert list(data.labels) == [1, 3, 1, 3]
    assert data.class_names == ("0", "1", "2", "3")  # names keep their label positions


def test_limit_on_a_folder_stored_class_by_class_is_balanced(tmp_path: Path) -> None:
    # A folder source numbers its images class by class: a first-N limit kept only class 0.
    for cls in range(5):
        for i in range(12):
            save_png(
                tmp_path / f"c{cls}" / f"{i:02d}.png", np.full((3, 3), cls * 40 + i, np.uint8), "L"
            )
    data = load_images(f"folder:{tmp_path}", limit=16)
    train = data.split("train")
    counts = np.bincount(train.labels, minlength=5)
    assert len(train) == 16 and counts.max() - counts.min() <= 1 and counts.min() == 3
    # Within a class the earliest files come first: class 0 keeps its files 00, 01, 02, 03.
    np.testing.assert_array_equal(np.sort(train.images[train.labels == 0, 0, 0, 0]), [0, 1, 2, 3])
    figures = describe(data)
    assert figures["class_count"] == 5 and figures["train"] == 16
    assert sum(figures["per_class"]["train"].values()) == 16
    assert set(figures["per_class"]["test"]) == {"c0", "c1", "c2", "c3", "c4"}


def test_describe_counts_only_classes_present(tmp_path: Path) -> None:
    make_idx(tmp_path)
    figures = describe(load_images(f"idx:{tmp_path}", classes=[1, 3]))
    assert figures["class_count"] == 2
    assert figures["per_class"]["train"] == {"1": 3, "3": 3}


def test_balanced_draw_of_a_class_short_of_images_fills_from_the_others() -> None:
    labels = np.array([0] * 10 + [1] * 2 + [2] * 10)
    picked = first_per_class_round(labels, np.ones(len(labels), bool), 12)
    assert np.bincount(labels[picked]).tolist() == [5, 2, 5]
    assert np.all(np.diff(picked) > 0)  # returned in file order


@pytest.mark.parametrize("limit", [0, -1])
def test_limit_below_one(tmp_path: Path, limit: int) -> None:
    make_idx(tmp_path)
    with pytest.raises(InvalidInputError, match=f"limit must be at least 1, got {limit}"):
        load_images(f"idx:{tmp_path}", limit=limit)


def test_unknown_class(tmp_path: Path) -> None:
    make_idx(tmp_path)
    with pytest.raises(InvalidInputError, match=r"unknown class label 7 \(valid labels: 0=0, "):
        load_images(f"idx:{tmp_path}", classes=[1, 7])


def test_select_and_split(tmp_path: Path) -> None:
    make_idx(tmp_path)
    data = load_images(f"idx:{tmp_path}")
    picked = data.select(np.array([16, 0]))
    assert list(picked.splits) == ["test", "train"] and picked.images.flags.c_contiguous
    np.testing.assert_array_equal(picked.images[0], data.images[16])
    assert len(data.select(data.labels == 2)) == int((data.labels == 2).sum())
    with pytest.raises(InvalidInputError, match="unknown split 'valid'"):
        data.split("valid")
    with pytest.raises(InvalidInputError, match=r"mask has shape \(3,\), expected \(17,\)"):
        data.select(np.array([True, False, True]))


# --- spec parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["mnist", "png:/tmp", "idx:", "cifar100:/x"])
def test_unknown_scheme(spec: str) -> None:
    expected = r"unknown data source .*expected fashion-mnist, idx:PATH"
    with pytest.raises(InvalidInputError, match=expected):
        load_images(spec)


@pytest.mark.parametrize("scheme", ["idx", "cifar10", "folder"])
def test_missing_path(tmp_path: Path, scheme: str) -> None:
    with pytest.raises(SourceError, match=r"no such file or folder: .*nothing-here \(expected"):
        load_images(f"{scheme}:{tmp_path / 'nothing-here'}")


# --- CIFAR-10 ----------------------------------------------------------------------------------


def expected_cifar(batches: dict[str, dict[bytes, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) and labels in file order, decoded independently of the loader."""
    order = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    rows = np.concatenate([batches[n][b"data"] for n in order])
    planes = [[r[c * 1024 : (c + 1) * 1024].reshape(32, 32) for c in range(3)] for r in rows]
    images = np.array(planes, dtype=np.uint8)
    return images, np.concatenate([batches[n][b"labels"] for n in order])


def test_cifar_tar_round_trip(tmp_path: Path) -> None:
    batches = make_cifar_tar(tmp_path / "cifar-10-python.tar.gz")
    data = load_images(f"cifar10:{tmp_path / 'cifar-10-python.tar.gz'}")
    images, labels = expected_cifar(batches)
    assert data.images.shape == (13, 3, 32, 32) and data.images.flags.c_contiguous
    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_array_equal(data.labels, labels)
    assert list(data.splits) == ["train"] * 10 + ["test"] * 3
    assert data.class_names == tuple(f"class{i}" for i in range(10))
    # Pixel (0, 0) of the green plane is byte 1024 of the row.
    assert data.images[0, 1, 0, 0] == batches["data_batch_1"][b"data"][0, 1024]
    assert not (tmp_path / "cifar-10-batches-py").exists()  # read in memory, not extracted


def test_cifar_extracted_folder(tmp_path: Path) -> None:
    archive = tmp_path / "cifar-10-python.tar.gz"
    batches = make_cifar_tar(archive)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path, filter="data")
    images, labels = expected_cifar(batches)
    for spec in (tmp_path, tmp_path / "cifar-10-batches-py"):
        data = load_images(f"cifar10:{spec}", limit=1)
        np.testing.assert_array_equal(data.images, images[[0, 10]])
        np.testing.assert_array_equal(data.labels, labels[[0, 10]])


def test_cifar_missing_batch(tmp_path: Path) -> None:
    make_cifar_tar(tmp_path / "c.tar.gz", skip="data_batch_3")
    with pytest.raises(SourceError, match="CIFAR-10 file missing: data_batch_3"):
        load_images(f"cifar10:{tmp_path / 'c.tar.gz'}")


def test_cifar_wrong_keys(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"pixels": b"", b"labels": []}))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": CIFAR_NAMES}))
    with pytest.raises(SourceError, match=r"bad CIFAR-10 file: data_batch_1 .*key b'data'"):
        load_images(f"cifar10:{folder}")


def test_cifar_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "c.tar.gz").write_bytes(b"not a tar at all")
    with pytest.raises(SourceError, match="not a readable CIFAR-10 archive"):
        load_images(f"cifar10:{tmp_path / 'c.tar.gz'}")


# --- image folders -----------------------------------------------------------------------------


def test_folder_holdout_rule_and_grey(tmp_path: Path) -> None:
    pixels = {}
    for cls, count in (("boot", 11), ("arm", 21)):
        for i in range(count):
            pixels[cls, i] = RNG.integers(0, 256, (5, 6), dtype=np.uint8)
            save_png(tmp_path / cls / f"img{i:02d}.png", pixels[cls, i], "L")
    (tmp_path / "arm" / "notes.txt").write_text("ignored")
    data = load_images(f"folder:{tmp_path}")
    assert data.class_names == ("arm", "boot") and data.images.shape == (32, 1, 5, 6)
    # Within each class, files sorted by name: indices 9, 19, ... are test.
    assert list(data.splits[:21]) == ["test" if i % 10 == 9 else "train" for i in range(21)]
    assert list(data.splits[21:]) == ["test" if i % 10 == 9 else "train" for i in range(11)]
    assert list(data.labels) == [0] * 21 + [1] * 11
    np.testing.assert_array_equal(data.images[21, 0], pixels["boot", 0])
    np.testing.assert_array_equal(data.split("test").images[:, 0][2], pixels["boot", 9])


def test_folder_train_test_layout_rgb(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    grey = RNG.integers(0, 256, (4, 4), dtype=np.uint8)
    save_png(tmp_path / "train" / "cat" / "a.png", rgb, "RGB")
    save_png(tmp_path / "train" / "dog" / "b.png", grey, "L")
    save_png(tmp_path / "test" / "dog" / "c.png", grey, "L")
    data = load_images(f"folder:{tmp_path}")
    assert data.class_names == ("cat", "dog") and data.images.shape == (3, 3, 4, 4)
    assert list(data.splits) == ["train", "train", "test"] and list(data.labels) == [0, 1, 1]
    np.testing.assert_array_equal(data.images[0], rgb.transpose(2, 0, 1))
    np.testing.assert_array_equal(data.images[1], np.stack([grey] * 3))  # grey converted to RGB


def test_folder_mixed_sizes(tmp_path: Path) -> None:
    save_png(tmp_path / "a" / "1.png", np.zeros((4, 4), np.uint8), "L")
    save_png(tmp_path / "a" / "2.png", np.zeros((5, 4), np.uint8), "L")
    with pytest.raises(SourceError, match=r"image size differs: .*2\.png is 4x5, expected 4x4"):
        load_images(f"folder:{tmp_path}")


def test_folder_unreadable_image(tmp_path: Path) -> None:
    save_png(tmp_path / "a" / "1.png", np.zeros((4, 4), np.uint8), "L")
    (tmp_path / "a" / "2.jpg").write_bytes(b"definitely not a jpeg")
    with pytest.raises(SourceError, match=r"unreadable image file: .*2\.jpg"):
        load_images(f"folder:{tmp_path}")


def test_folder_empty(tmp_path: Path) -> None:
    (tmp_path / "loose.png").write_bytes(b"")
    with pytest.raises(SourceError, match="no images found in"):
        load_images(f"folder:{tmp_path}")


# --- Fashion-MNIST -----------------------------------------------------------------------------


def test_fashion_mnist_missing_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LATENTGRAM_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(SourceError, match=r"apt-get install dataset-fashion-mnist.*idx:PATH"):
        load_images()


def test_fashion_mnist_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_idx(tmp_path)
    monkeypatch.setenv("LATENTGRAM_FASHION_MNIST_DIR", str(tmp_path))
    data = load_images("fashion-mnist")
    assert len(data) == 17 and data.class_names == FASHION_MNIST_CLASSES
    assert data.class_names[9] == "Ankle boot" and data.source == "fashion-mnist"


def test_fashion_mnist_real(monkeypatch: pytest.MonkeyPatch) -> None:
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("dataset-fashion-mnist is not installed")
    monkeypatch.delenv("LATENTGRAM_FASHION_MNIST_DIR", raising=False)
    data = load_images(limit=100)
    assert data.images.shape == (200, 1, 28, 28)
    assert (data.splits == "train").sum() == 100 and (data.splits == "test").sum() == 100
    assert data.labels.min() >= 0 and data.labels.max() <= 9 and len(set(data.labels)) > 5


def test_a_relative_source_path_is_recorded_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = DataSpec("folder:pictures", limit=4)  # run.json keeps it for later steps
    assert spec.source == f"folder:{tmp_path / 'pictures'}"
    assert DataSpec(spec.source).source == spec.source
    assert DataSpec("fashion-mnist").source == "fashion-mnist"
