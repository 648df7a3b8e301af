"""The steps of a run after training, as functions the CLI and the API call: encode → build →
sample. (Training steps are in service/training/.)"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
from tqdm import tqdm

from models import BLAE
from service.checkpoint import Checkpoint
from service.data.fingerprint import check_same_data, data_record, source_flags
from service.data.latent_batches import count_train_images, iter_train_grids, read_latents_header
from service.data.parquet import read_latents, write_images, write_latents
from service.data.sources import DataSpec
from service.errors import InvalidInputError, RunError, first_line
from service.files import file_sha256
from service.latents.bits import pack_bits
from service.latents.codec import decode_bits, encode_images
from service.latents.latent_set import LatentSet
from service.ngram.build import (
    build_tables,
    images_per_chunk,
    index_memory_limit,
    limit_memory,
    parse_memory_limit,
)
from service.ngram.index import NgramIndex
from service.ngram.index_files import write_run_indexes
from service.ngram.modes import Mode, Sampler
from service.ngram.samples import SampleBatch, SampleConfig
from service.ngram.store import TableInfo, get_table, list_tables, open_store
from service.ngram.tokens import TokenGrids, tokens_to_bits
from service.ngram.windows import check_gamma, check_gamma_fits, default_gammas
from service.run.models import blae_training_data, has_arvm, load_arvm, load_blae
from service.run.paths import RunPaths
from service.run.record import read_run_json, update_run_json
from service.settings import BuildSettings

log = logging.getLogger(__name__)

BUILD_SCRATCH = "tmp"  # <run>/tmp: DuckDB's spill files and Spark's staging, removed after a build


def run_data_spec(paths: RunPaths) -> DataSpec:
    """The data spec recorded by train-ae."""
    data = read_run_json(paths).get("data")
    if not data:
        raise RunError(f"{paths.run_json} names no data source: run `latentgram train-ae` first")
    classes = data.get("classes")
    return DataSpec(data["source"], data.get("limit"), tuple(classes) if classes else None)


@dataclass(frozen=True)
class EncodeSummary:
    images: int
    seconds: float
    images_per_s: float
    brate: float
    latent_shape: tuple[int, int, int]


def encode_run(paths: RunPaths, *, device: str = "cpu", batch_size: int = 1024) -> EncodeSummary:
    """Encode every image of the run's data into images.parquet and latents.parquet."""
    checkpoint = load_blae(paths, device=device)
    spec = run_data_spec(paths)
    images = spec.load()
    now = data_record(spec, images)
    check_same_data(
        blae_training_data(paths, checkpoint),
        now,
        model=str(paths.blae_weights),
        remedy=f"retrain it with `{paths.remedy('prepare')} {source_flags(now)} --no-resume`, "
        "or start a new run with --run DIR",
    )
    ids = np.arange(len(images), dtype=np.int64)  # ids are positions in the loaded order
    started = time.perf_counter()
    packed, brate = encode_images(checkpoint.model, images.images, batch_size=batch_size)
    seconds = time.perf_counter() - started
    shape = checkpoint.model.config.latent_shape
    write_images(paths.images, images, ids)
    latents = LatentSet(ids, images.splits, images.labels, packed, shape, checkpoint.sha256)
    write_latents(paths.latents, latents)
    summary = EncodeSummary(len(images), seconds, len(images) / max(seconds, 1e-9), brate, shape)
    update_run_json(
        paths,
        "encode",
        {
            "images": len(images),
            "latent_shape": list(shape),
            "brate": brate,
            "images_per_s": round(summary.images_per_s),
            "model_sha256": checkpoint.sha256,
        },
    )
    return summary


def select_latents(latents: LatentSet, ids: Sequence[int] | None, limit: int | None) -> LatentSet:
    """The latents with the given ids (in that order), or the first `limit` ones."""
    if ids is not None:
        position = {int(i): k for k, i in enumerate(latents.ids)}
        missing = [i for i in ids if i not in position]
        if missing:
            raise InvalidInputError(
                f"no latents with ids {missing[:5]} (ids are 0..{len(latents) - 1})"
            )
        return latents.select(np.array([position[i] for i in ids], dtype=np.int64))
    if limit is not None:
        return latents.select(np.arange(min(limit, len(latents))))
    return latents


def built_gammas(paths: RunPaths, positional: bool = False) -> list[int]:
    """The γ of the run's tables of one family, ascending."""
    with open_store(paths.require(paths.store, "build"), read_only=True) as con:
        return [t.gamma for t in list_tables(con) if t.positional == positional]


def build_run_tables(
    paths: RunPaths,
    gammas: Sequence[int] | None = None,
    *,
    positional: bool = False,
    progress: bool = True,
    settings: BuildSettings | None = None,
) -> list[TableInfo]:
    """Build (or rebuild) the n-gram tables of the run's training latents, one per γ; without
    `gammas`, the grid's default ones, from local to global (ngram/windows.py). Each table's
    index files are written beside the store afterwards, for the service to map.

    The latents are streamed from latents.parquet a batch of images at a time, on DuckDB
    (within `settings.memory_limit`, spilling to <run>/tmp) or on Spark (`settings.engine`);
    <run>/tmp is removed afterwards. Every check that can fail is made before the store is
    touched, so a bad setting leaves the tables served as they were.
    """
    settings = settings or BuildSettings.from_env()
    gammas = _checked_build(paths, gammas, settings)
    scratch = paths.root / BUILD_SCRATCH
    try:
        with contextlib.ExitStack() as stack:
            spark = None
            if settings.engine == "spark":
                from service.run.spark_build import spark_session

                spark = stack.enter_context(
                    spark_session(settings.spark_master, work_dir=scratch / "spark")
                )
            con = stack.enter_context(open_store(paths.store))
            limit_memory(con, settings.memory_limit, scratch / "duckdb")
            if spark is None:
                built = _build_on_duckdb(paths, con, gammas, positional, progress)
            else:
                steps = tqdm(gammas, desc="build n-gram tables", unit="table", disable=not progress)
                built = [_build_on_spark(paths, con, spark, g, positional) for g in steps]
            # the index files hold a table's arrays here: DuckDB needs less meanwhile
            limit_memory(con, index_memory_limit(settings.memory_limit), None)
            write_run_indexes(con, paths.store)
    except duckdb.Error as exc:  # out of memory or disk past the limit: the old tables stay
        raise RunError(f"the build failed in DuckDB: {first_line(exc)}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    figures = {t.name: {"contexts": t.contexts, "rows": t.rows, "seconds": t.build_seconds}
               for t in built}  # fmt: skip
    update_run_json(paths, "tables", figures)
    return built


def _checked_build(
    paths: RunPaths, gammas: Sequence[int] | None, settings: BuildSettings
) -> Sequence[int]:
    """The γ to build (the grid's defaults without `gammas`), once the γ, the memory limit, the
    latents and the BL-AE that encoded them are checked."""
    for gamma in gammas or ():
        check_gamma(gamma)
    if settings.memory_limit is not None:
        parse_memory_limit(settings.memory_limit)
    latents = paths.require(paths.latents, "encode")
    header = read_latents_header(latents)
    _, height, width = header.shape
    gammas = gammas or default_gammas(height, width)
    for gamma in gammas:
        check_gamma_fits(gamma, height, width)
    blae = paths.require(paths.blae_weights, "train-ae")
    if header.model_sha256 != file_sha256(blae):
        raise RunError(
            f"{paths.latents} was encoded by another BL-AE than {blae} (retrained since?): "
            f"run `{paths.remedy('encode')}` first"
        )
    return gammas


def _build_on_duckdb(
    paths: RunPaths,
    con: duckdb.DuckDBPyConnection,
    gammas: Sequence[int],
    positional: bool,
    progress: bool,
) -> list[TableInfo]:
    """Every γ's table in one pass over batches of the latents, with a bar over the images."""
    header = read_latents_header(paths.latents)
    _, height, width = header.shape
    bar = tqdm(
        total=count_train_images(paths.latents),
        desc=f"count windows (γ = {', '.join(map(str, gammas))})",
        unit="image",
        unit_scale=True,
        disable=not progress,
    )

    def batches() -> Iterator[TokenGrids]:
        for batch in iter_train_grids(paths.latents, images_per_chunk(height, width)):
            yield batch
            bar.update(len(batch))

    with bar:
        return build_tables(
            con, batches(), gammas=gammas, positional=positional, run=str(paths.root)
        )


def _build_on_spark(
    paths: RunPaths, con: duckdb.DuckDBPyConnection, spark: Any, gamma: int, positional: bool
) -> TableInfo:
    """One table, counted on Spark and imported into the store."""
    from service.run.spark_build import build_table_spark

    return build_table_spark(
        con,
        spark,
        paths.latents,
        paths.root / BUILD_SCRATCH,
        gamma=gamma,
        positional=positional,
        run=str(paths.root),
    )


@dataclass(frozen=True)
class GeneratedSamples:
    batch: SampleBatch
    images: np.ndarray  # (n, channels, size, size) uint8 decoded through the BL-AE
    index_bytes: int
    latent_shape: tuple[int, int, int]
    model_sha256: str  # the BL-AE that decoded them


def check_tables_fresh(paths: RunPaths, tables: Sequence[TableInfo], latents: LatentSet) -> None:
    """RunError when a table was built from latents of another BL-AE than the run's."""
    stale = [t.name for t in tables if t.model_sha256 != latents.model_sha256]
    if stale:
        raise RunError(
            f"tables {', '.join(stale)} were built from latents of another BL-AE: "
            f"run `latentgram build --run {paths.root}` again"
        )


def decode_samples(
    sampler: Sampler, batch: SampleBatch, blae: Checkpoint[BLAE]
) -> GeneratedSamples:
    """A batch of samples decoded through the BL-AE, with what drew them."""
    bits = tokens_to_bits(batch.tokens, sampler.latent_shape[0])
    index_bytes = sum(i.nbytes for i in sampler.indexes.values())
    images = decode_bits(blae.model, bits)
    return GeneratedSamples(batch, images, index_bytes, sampler.latent_shape, blae.sha256)


def load_sampler(paths: RunPaths, *, gamma: int, mode: Mode, positional: bool = False) -> Sampler:
    """The tables and γ-ARVM that sampling in `mode` at `gamma` needs, loaded from the run."""
    check_gamma(gamma)
    latents = read_latents(paths.require(paths.latents, "encode"))
    check_gamma_fits(gamma, *latents.shape[1:])
    indexes = {}
    if mode != "neural":
        with open_store(paths.require(paths.store, "build"), read_only=True) as con:
            get_table(con, gamma, positional)  # the γ table itself must exist: a clear error
            built = [t for t in list_tables(con) if t.positional == positional]
            low = mode == "backoff"
            wanted = [t for t in built if t.gamma == gamma or (low and t.gamma < gamma)]
            check_tables_fresh(paths, wanted, latents)
            indexes = {t.gamma: NgramIndex.load(con, t.gamma, positional) for t in wanted}
    networks = {}
    if has_arvm(paths, gamma, positional):
        networks[gamma] = load_arvm(paths, gamma, positional)
    return Sampler(latents.shape, indexes, networks, positional=positional)


def sample_run(
    paths: RunPaths,
    *,
    gamma: int,
    config: SampleConfig,
    mode: Mode = "exact",
    positional: bool = False,
    complete_with_hybrid: bool = False,
) -> GeneratedSamples:
    """Draw samples from the run in any mode and decode them through the BL-AE."""
    sampler = load_sampler(paths, gamma=gamma, mode=mode, positional=positional)
    batch = sampler.sample(gamma, mode, config, complete_with_hybrid=complete_with_hybrid)
    return decode_samples(sampler, batch, load_blae(paths))


def samples_as_latents(generated: GeneratedSamples) -> LatentSet:
    """Finished samples as a LatentSet (split "sample", ids = sample numbers), for Parquet."""
    batch = generated.batch
    bits = tokens_to_bits(batch.tokens[batch.ok], generated.latent_shape[0])
    ids = np.flatnonzero(batch.ok).astype(np.int64)
    return LatentSet(
        ids=ids,
        splits=np.full(len(ids), "sample"),
        labels=np.full(len(ids), -1, np.int64),
        packed=pack_bits(bits),
        shape=generated.latent_shape,
        model_sha256=generated.model_sha256,
    )
