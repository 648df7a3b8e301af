"""images.parquet / latents.parquet open in pandas, polars and DuckDB as they are."""

import json

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.data.latent_batches import iter_train_grids, read_latents_header
from service.data.parquet import read_images, read_latents, write_images, write_latents
from service.data.sources import ImageSet
from service.errors import RunError
from service.latents.latent_set import LatentSet


@pytest.fixture
def latents(rng: np.random.Generator) -> LatentSet:
    n, shape = 50, (12, 4, 4)
    packed = rng.integers(0, 256, (n, 24), dtype=np.uint8)
    splits = np.where(np.arange(n) < 40, "train", "test")
    return LatentSet(np.arange(n) + 100, splits, np.arange(n) % 10, packed, shape, "ab" * 32)


def test_latents_round_trip_and_metadata(tmp_path, latents: LatentSet) -> None:
    path = tmp_path / "latents.parquet"
    write_latents(path, latents)
    back = read_latents(path)
    np.testing.assert_array_equal(back.packed, latents.packed)
    np.testing.assert_array_equal(back.ids, latents.ids)
    np.testing.assert_array_equal(back.splits, latents.splits)
    assert back.shape == (12, 4, 4) and back.model_sha256 == "ab" * 32
    meta = json.loads(pq.read_schema(path).metadata[b"latentgram"])
    assert meta["latent_shape"] == [12, 4, 4] and meta["model_sha256"] == "ab" * 32


def test_latents_open_in_duckdb_pandas_polars(tmp_path, latents: LatentSet) -> None:
    path = tmp_path / "latents.parquet"
    write_latents(path, latents)
    rows = duckdb.sql(f"SELECT id, bits FROM '{path}' ORDER BY id").fetchall()
    assert [r[0] for r in rows] == list(latents.ids)
    assert bytes(rows[7][1]) == latents.packed[7].tobytes()
    frame = pd.read_parquet(path)
    assert frame["bits"].iloc[3] == latents.packed[3].tobytes()
    assert list(frame["split"].unique()) == ["train", "test"]
    polars = pl.read_parquet(path)
    assert polars["bits"][5] == latents.packed[5].tobytes()
    assert polars.height == 50


def test_images_round_trip_in_all_readers(tmp_path, rng: np.random.Generator) -> None:
    pixels = rng.integers(0, 256, (6, 3, 5, 7), dtype=np.uint8)
    images = ImageSet(pixels, np.arange(6), np.array(["train"] * 4 + ["test"] * 2), ("a",) * 6, "x")
    path = tmp_path / "images.parquet"
    write_images(path, images, np.arange(6))
    ids, back = read_images(path)
    np.testing.assert_array_equal(back.images, pixels)
    assert back.class_names == images.class_names and list(ids) == list(range(6))
    one = duckdb.sql(
        f"SELECT pixels, height, width, channels FROM '{path}' WHERE id = 4"
    ).fetchall()
    assert one[0][1:] == (5, 7, 3)
    np.testing.assert_array_equal(np.frombuffer(one[0][0], np.uint8).reshape(3, 5, 7), pixels[4])
    assert pd.read_parquet(path)["pixels"].iloc[2] == pixels[2].tobytes()
    assert pl.read_parquet(path)["label"].to_list() == list(range(6))


def test_foreign_or_missing_parquet_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(RunError, match="missing"):
        read_latents(tmp_path / "nope.parquet")
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(RunError, match="not written by latentgram"):
        read_latents(tmp_path / "other.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(RunError, match="not a readable Parquet"):
        read_latents(tmp_path / "junk.parquet")


def test_encoded_run_matches_its_images(tiny_run) -> None:
    """Round trip of the real pipeline: every image has one latent, ids and splits agree."""
    ids, images = read_images(tiny_run.images)
    latents = read_latents(tiny_run.latents)
    np.testing.assert_array_equal(ids, latents.ids)
    np.testing.assert_array_equal(images.splits, latents.splits)
    assert latents.shape == (8, 4, 4) and len(latents) == 1024


def test_latents_with_damaged_pages_are_a_clear_error(tmp_path, latents: LatentSet) -> None:
    """The footer reads, a page does not: the batches say which file, not pyarrow's internals."""
    path = tmp_path / "latents.parquet"
    write_latents(path, latents)
    data = bytearray(path.read_bytes())
    start = pq.ParquetFile(path).metadata.row_group(0).column(3).data_page_offset  # the bits
    data[start + 8 : start + 40] = bytes(32)
    path.write_bytes(bytes(data))
    assert read_latents_header(path).shape == (12, 4, 4)
    with pytest.raises(RunError, match=r"latents.parquet is damaged: .+: run `latentgram encode"):
        list(iter_train_grids(path, images_per_batch=16))


def forged_latents(path, shape, bits: pa.Array | None) -> None:
    """A latents file with latentgram's metadata over contents it would not write."""
    columns = {"id": pa.array([1, 2]), "split": pa.array(["train", "test"]), "label": [0, 1]}
    if bits is not None:
        columns["bits"] = bits
    meta = {"format_version": 1, "latent_shape": shape, "model_sha256": "ab" * 32}
    table = pa.table(columns).replace_schema_metadata({"latentgram": json.dumps(meta)})
    pq.write_table(table, path)


FORGED = {
    "bits of another width": ([12, 4, 4], pa.array([b"\x01" * 12] * 2, pa.binary(12))),
    "bits of varying width": ([12, 4, 4], pa.array([b"\x01" * 20, b"\x01" * 24])),
    "bits not binary": ([12, 4, 4], pa.array([1, 2])),
    "no bits column": ([12, 4, 4], None),
    "a shape of two sides": ([12, 4], pa.array([b"\x01" * 24] * 2, pa.binary(24))),
    "a shape of zero": ([12, 0, 4], pa.array([b"\x01" * 24] * 2, pa.binary(24))),
    "a shape not of numbers": (["12", 4, 4], pa.array([b"\x01" * 24] * 2, pa.binary(24))),
}


@pytest.mark.parametrize("forgery", FORGED)
def test_forged_latents_are_refused_by_every_reader(tmp_path, forgery: str) -> None:
    """Readable Parquet and latentgram's metadata, contents it would not write: each reader
    says which file is damaged instead of failing inside numpy."""
    path = tmp_path / "latents.parquet"
    forged_latents(path, *FORGED[forgery])
    with pytest.raises(RunError, match=r"latents.parquet is damaged: .+"):
        read_latents(path)
    with pytest.raises(RunError, match=r"latents.parquet is damaged: .+"):
        list(iter_train_grids(path, images_per_batch=16))
