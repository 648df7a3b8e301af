"""latents.parquet read a batch of whole images at a time (DESIGN.md §10): the table build
streams it so that its memory does not grow with the corpus, and the Spark build turns the Arrow
batches Spark hands it into token grids the same way.

An image is one row, so a batch never splits an image: each image's windows are all in one
batch, which is what keeps the build's per-image counts exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from service.data.parquet import (
    LATENT_KEYS,
    binary_rows,
    damaged,
    file_metadata,
    require_columns,
)
from service.errors import RunError, first_line
from service.latents.bits import packed_size, unpack_bits
from service.ngram.tokens import TokenGrids, bits_to_tokens

LATENT_COLUMNS = ("id", "split", "bits")  # what a build reads of latents.parquet


@dataclass(frozen=True)
class LatentsHeader:
    """What latents.parquet says about itself, read without its rows."""

    shape: tuple[int, int, int]  # (C, H, W) of one latent
    model_sha256: str  # the BL-AE that encoded them
    rows: int  # images, every split


def read_latents_header(path: Path) -> LatentsHeader:
    """The shape, model and row count of latents.parquet, from its footer alone."""
    if not path.exists():
        raise RunError(f"{path} is missing: run `latentgram encode` first")
    try:
        meta = pq.read_metadata(path)
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise RunError(f"{path} is not a readable Parquet file: {exc}") from exc
    info = file_metadata(path, schema, LATENT_KEYS)
    require_columns(path, schema, LATENT_COLUMNS)
    c, h, w = info["latent_shape"]
    bits, width = schema.field("bits").type, packed_size((c, h, w))
    if pa.types.is_fixed_size_binary(bits) and bits.byte_width != width:
        needs = f"its latent_shape {[c, h, w]} needs {width}"
        raise damaged(path, f"its bits are {bits.byte_width} bytes each, {needs}")
    return LatentsHeader((c, h, w), info["model_sha256"], meta.num_rows)


def train_grids(
    batch: pa.RecordBatch | pa.Table, shape: tuple[int, int, int], model_sha256: str = ""
) -> TokenGrids:
    """The training-split rows of a batch of latents.parquet as token grids."""
    train = batch.filter(pc.equal(batch.column("split"), "train"))
    packed = binary_rows(train.column("bits"), packed_size(shape), "latent bits")
    tokens = bits_to_tokens(unpack_bits(packed, shape))  # (N, H, W)
    ids = train.column("id").to_numpy().astype(np.int64)
    return TokenGrids(tokens, ids, shape[0], model_sha256)


def iter_train_grids(path: Path, images_per_batch: int) -> Iterator[TokenGrids]:
    """The training grids of latents.parquet, at most `images_per_batch` images at a time."""
    header = read_latents_header(path)
    with pq.ParquetFile(path) as source:
        batches = source.iter_batches(batch_size=images_per_batch, columns=LATENT_COLUMNS)
        while (batch := _next_batch(path, batches)) is not None:
            try:
                grids = train_grids(batch, header.shape, header.model_sha256)
            except RunError as why:
                raise damaged(path, str(why)) from None
            yield grids


def _next_batch(path: Path, batches: Iterator[pa.RecordBatch]) -> pa.RecordBatch | None:
    """The next batch, None after the last; RunError when the file's data is damaged (its footer
    read, a page that does not decompress)."""
    try:
        return next(batches, None)
    except (OSError, pa.ArrowException) as exc:
        raise damaged(path, first_line(exc)) from None


def count_train_images(path: Path) -> int:
    """Training-split rows of latents.parquet, reading its split column alone."""
    with pq.ParquetFile(path) as source:
        return sum(
            pc.sum(pc.equal(batch.column("split"), "train")).as_py() or 0
            for batch in source.iter_batches(batch_size=1 << 20, columns=["split"])
        )
