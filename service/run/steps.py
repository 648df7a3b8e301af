"""The steps of a run after training, as functions the CLI and the API call: encode, then
sample. (The build is service/run/build.py; training steps are in service/training/.)"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from models import BLAE
from models.blae_train import psnr_from_mse
from service.checkpoint import Checkpoint
from service.data.fingerprint import check_same_data, data_record, source_flags
from service.data.parquet import read_latents, write_images, write_latents
from service.data.sources import DataSpec
from service.errors import InvalidInputError, RunError
from service.latents.bits import pack_bits
from service.latents.codec import decode_bits, decode_packed, encode_images
from service.latents.latent_set import LatentSet
from service.ngram.index import NgramIndex
from service.ngram.modes import Sampler
from service.ngram.samples import Mode, SampleBatch, SampleConfig
from service.ngram.store import TableInfo, get_table, list_tables, open_store
from service.ngram.tokens import tokens_to_bits
from service.ngram.windows import check_gamma, check_gamma_fits
from service.run.models import blae_training_data, has_arvm, load_arvm, load_blae
from service.run.paths import RunPaths
from service.run.record import read_run_json, update_run_json

log = logging.getLogger(__name__)


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
    search_passes: int
    test_psnr: float | None  # of the stored latents, decoded, against the test images


def encode_run(
    paths: RunPaths,
    *,
    device: str = "cpu",
    batch_size: int = 1024,
    search_passes: int = 0,
    progress: bool = True,
) -> EncodeSummary:
    """Encode every image of the run's data into images.parquet and latents.parquet, each code
    improved by `search_passes` proposed bit flips (models/code_search.py) when > 0."""
    if search_passes < 0:
        raise InvalidInputError(f"search_passes must be ≥ 0, got {search_passes}")
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
    with tqdm(total=len(images), desc="encode", unit="img", disable=not progress) as bar:
        packed, brate = encode_images(
            checkpoint.model,
            images.images,
            batch_size=batch_size,
            search_passes=search_passes,
            on_batch=bar.update,
        )
    seconds = time.perf_counter() - started
    shape = checkpoint.model.config.latent_shape
    write_images(paths.images, images, ids)
    latents = LatentSet(
        ids, images.splits, images.labels, packed, shape, checkpoint.sha256, search_passes
    )
    write_latents(paths.latents, latents)
    test = images.splits == "test"
    test_psnr = _psnr(checkpoint.model, packed[test], images.images[test])
    rate = len(images) / max(seconds, 1e-9)
    summary = EncodeSummary(len(images), seconds, rate, brate, shape, search_passes, test_psnr)
    update_run_json(
        paths,
        "encode",
        {
            "images": len(images),
            "latent_shape": list(shape),
            "brate": brate,
            "search_passes": search_passes,
            "test_psnr": test_psnr,
            "images_per_s": round(summary.images_per_s),
            "model_sha256": checkpoint.sha256,
        },
    )
    return summary


def _psnr(model: BLAE, packed: np.ndarray, images: np.ndarray) -> float | None:
    """PSNR in dB of the decoded latents against their images (None for no images)."""
    if not len(images):
        return None
    decoded = decode_packed(model, packed)
    mse = float(np.mean((decoded.astype(np.float64) - images) ** 2)) / 255.0**2
    return psnr_from_mse(mse)


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
