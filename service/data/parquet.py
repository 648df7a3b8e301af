"""images.parquet and latents.parquet (DESIGN.md §1).

Plain Arrow types only (int64, string, fixed-size binary), so pandas, polars and DuckDB open the
files as they are. Shapes and the model checksum travel in the schema metadata under the key
"latentgram", as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from service.data.sources import ImageSet
from service.errors import RunError
from service.files import atomic_path
from service.latents.bits import packed_size
from service.latents.latent_set import LatentSet

METADATA_KEY = b"latentgram"
FORMAT_VERSION = 1
ROW_GROUP_SIZE = 16_384  # rows per row group: small enough to stream, large enough to compress


def _fixed_binary(rows: np.ndarray) -> pa.FixedSizeBinaryArray:
    """(N, width) uint8 → one fixed_size_binary(width) value per row, without copying per row."""
    rows = np.ascontiguousarray(rows, dtype=np.uint8)
    width = rows.shape[1]
    buffer = pa.py_buffer(rows.tobytes())
    return pa.Array.from_buffers(pa.binary(width), len(rows), [None, buffer])


def binary_rows(column: pa.Array | pa.ChunkedArray, width: int, what: str) -> np.ndarray:
    """A binary column of `width` bytes a row, fixed-size (as latentgram writes it) or
    variable-size (as Spark hands it over), → (N, width) uint8, without a Python loop over rows.
    RunError naming `what` when a row has another size (a damaged or foreign file)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = []
    for chunk in chunks:
        if pa.types.is_fixed_size_binary(chunk.type):
            if chunk.type.byte_width != width:
                raise RunError(f"{what} are {chunk.type.byte_width} bytes each, not {width}")
            data = np.frombuffer(chunk.buffers()[1], np.uint8)
            parts.append(data[chunk.offset * width : (chunk.offset + len(chunk)) * width])
            continue
        if not (pa.types.is_binary(chunk.type) or pa.types.is_large_binary(chunk.type)):
            raise RunError(f"{what} are {chunk.type}, not binary")
        offset_type = np.int64 if pa.types.is_large_binary(chunk.type) else np.int32
        offsets = np.frombuffer(chunk.buffers()[1], offset_type)
        offsets = offsets[chunk.offset : chunk.offset + len(chunk) + 1]
        if np.any(np.diff(offsets) != width):
            raise RunError(f"{what} must be {width} bytes each: some are not")
        data = np.frombuffer(chunk.buffers()[2], np.uint8)
        parts.append(data[offsets[0] : offsets[-1]])
    if not parts:
        return np.zeros((0, width), np.uint8)
    return np.concatenate(parts).reshape(-1, width)


def _write(path: Path, table: pa.Table, meta: dict[str, Any]) -> None:
    meta = {"format_version": FORMAT_VERSION, **meta}
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=ROW_GROUP_SIZE, compression="zstd")


IMAGE_KEYS = ("image_shape", "class_names", "source")  # what each file's metadata must hold
LATENT_KEYS = ("latent_shape", "model_sha256")
IMAGES_FILE_COLUMNS = ("id", "split", "label", "pixels")  # and the columns it must have
LATENTS_FILE_COLUMNS = ("id", "split", "label", "bits")


def _read(
    path: Path, made_by: str, needs: tuple[str, ...], columns: tuple[str, ...]
) -> tuple[pa.Table, dict[str, Any]]:
    if not path.exists():
        raise RunError(f"{path} is missing: run `latentgram {made_by}` first")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise RunError(f"{path} is not a readable Parquet file: {exc}") from exc
    meta = file_metadata(path, table.schema, needs)
    require_columns(path, table.schema, columns)
    return table, meta


def damaged(path: Path, why: str) -> RunError:
    """The error of a latentgram file whose contents are not what latentgram writes."""
    return RunError(f"{path} is damaged: {why}: run `latentgram encode` again")


def require_columns(path: Path, schema: pa.Schema, columns: tuple[str, ...]) -> None:
    """RunError naming the columns a latentgram file lacks."""
    if missing := [name for name in columns if schema.get_field_index(name) < 0]:
        raise damaged(path, f"it has no column {', '.join(missing)}")


def file_metadata(path: Path, schema: pa.Schema, needs: tuple[str, ...]) -> dict[str, Any]:
    """The latentgram metadata of a file's schema; RunError unless it holds `needs` (a latents
    file given where images are wanted, or the reverse, lacks them)."""
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise RunError(f"{path} has no latentgram metadata: it was not written by latentgram")
    try:
        meta = json.loads(raw)
    except ValueError:
        meta = None
    missing = [key for key in needs if not isinstance(meta, dict) or key not in meta]
    if missing:
        kind = "a latents" if needs == LATENT_KEYS else "an images"
        raise RunError(f"{path} is not {kind} file: its metadata lacks {', '.join(missing)}")
    assert isinstance(meta, dict)
    for key in ("latent_shape", "image_shape"):
        shape = meta.get(key, [1, 1, 1])
        if not (isinstance(shape, list) and len(shape) == 3 and all(_positive(v) for v in shape)):
            raise damaged(path, f"its {key} must be 3 positive integers, not {shape}")
    return meta


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def write_images(path: Path, images: ImageSet, ids: np.ndarray) -> None:
    """One row per image: id, split, label, height, width, channels, raw uint8 pixels."""
    n, c, h, w = images.images.shape
    table = pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "split": pa.array(images.splits.astype(str), pa.string()),
            "label": pa.array(images.labels, pa.int64()),
            "height": pa.array(np.full(n, h), pa.int32()),
            "width": pa.array(np.full(n, w), pa.int32()),
            "channels": pa.array(np.full(n, c), pa.int32()),
            "pixels": _fixed_binary(images.images.reshape(n, -1)),
        }
    )
    meta = {
        "image_shape": [c, h, w],
        "pixel_layout": "CHW uint8",
        "class_names": list(images.class_names),
        "source": images.source,
    }
    _write(path, table, meta)


def read_images(path: Path) -> tuple[np.ndarray, ImageSet]:
    """(ids, images) from images.parquet."""
    table, meta = _read(path, "encode", IMAGE_KEYS, IMAGES_FILE_COLUMNS)
    c, h, w = meta["image_shape"]
    pixels = _column_rows(path, table, "pixels", c * h * w).reshape(-1, c, h, w)
    images = ImageSet(
        images=pixels,
        labels=table.column("label").to_numpy(),
        splits=np.asarray(table.column("split").to_pylist(), dtype=str),
        class_names=tuple(meta["class_names"]),
        source=meta["source"],
    )
    return table.column("id").to_numpy(), images


def write_latents(path: Path, latents: LatentSet) -> None:
    """One row per image: id, split, label, bits (C·H·W bits packed, fixed-size binary)."""
    if latents.packed.shape[1:] != (packed_size(latents.shape),):
        raise ValueError(f"packed latents of {latents.packed.shape} do not match {latents.shape}")
    table = pa.table(
        {
            "id": pa.array(latents.ids, pa.int64()),
            "split": pa.array(latents.splits.astype(str), pa.string()),
            "label": pa.array(latents.labels, pa.int64()),
            "bits": _fixed_binary(latents.packed),
        }
    )
    meta = {
        "latent_shape": list(latents.shape),
        "bit_order": "bits in (channel, row, column) order, packed most significant bit first",
        "model_sha256": latents.model_sha256,
        "search_passes": latents.search_passes,
    }
    _write(path, table, meta)


def read_latents(path: Path) -> LatentSet:
    table, meta = _read(path, "encode", LATENT_KEYS, LATENTS_FILE_COLUMNS)
    c, h, w = meta["latent_shape"]
    packed = _column_rows(path, table, "bits", packed_size((c, h, w)))
    return LatentSet(
        ids=table.column("id").to_numpy(),
        splits=np.asarray(table.column("split").to_pylist(), dtype=str),
        labels=table.column("label").to_numpy(),
        packed=packed,
        shape=(c, h, w),
        model_sha256=meta["model_sha256"],
        search_passes=int(meta.get("search_passes", 0)),  # files written before the search: 0
    )


def _column_rows(path: Path, table: pa.Table, name: str, width: int) -> np.ndarray:
    """binary_rows of a file's column, its RunError saying which file is damaged."""
    try:
        return binary_rows(table.column(name), width, f"the values of {name}")
    except RunError as why:
        raise damaged(path, str(why)) from None
