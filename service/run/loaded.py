"""A run loaded once and kept in memory, for the service and the report: everything a request
needs is here.

Loading reads the store through a read-only connection and closes it again, so a CLI build can
take the store's single write lock while the service runs. A table rebuilt since is picked up by
`with_rebuilt_tables`, which the service calls when the store changes (api/state.py): the new
run shares everything but the changed tables, and requests already running keep the old one.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from models import BLAE, GammaARVM
from service.checkpoint import Checkpoint
from service.data.images import RGB, background_colour
from service.data.parquet import read_images, read_latents
from service.data.sources import ImageSet
from service.errors import InvalidInputError, RunError
from service.evaluation.nearest import NearestBy, NearestIndex, shared_nearest_index
from service.evaluation.reconstructions import cached_reconstructions
from service.latents.bits import pack_bits, packed_size, unpack_bits
from service.latents.codec import decode_bits, encode_images
from service.latents.latent_set import LatentSet
from service.ngram.index import NgramIndex
from service.ngram.index_files import load_index
from service.ngram.modes import Sampler
from service.ngram.samples import Mode, SampleConfig
from service.ngram.store import TableInfo, list_tables, open_store, upgrade_store
from service.ngram.tokens import tokens_to_bits
from service.run.models import has_arvm, load_arvm, load_blae
from service.run.paths import RunPaths
from service.run.steps import GeneratedSamples, check_tables_fresh, decode_samples

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunFiles:
    """The BL-AE, images and latents of a run, read and checked to belong together."""

    paths: RunPaths
    blae: Checkpoint[BLAE]
    image_ids: np.ndarray  # (N,) ids of images.parquet, in file order
    images: ImageSet
    latents: LatentSet

    @classmethod
    def read(cls, paths: RunPaths, *, device: str = "cpu") -> RunFiles:
        blae = load_blae(paths.existing(), device=device)
        latents = read_latents(paths.require(paths.latents, "encode"))
        image_ids, images = read_images(paths.require(paths.images, "encode"))
        if latents.model_sha256 != blae.sha256:
            raise RunError(
                f"{paths.latents} was encoded by another BL-AE: run `latentgram encode` again"
            )
        return cls(paths, blae, image_ids, images, latents)

    def nearest_index(self) -> NearestIndex:
        """The training split searchable by pixels and by latents, with the reconstructions."""
        paths, images, ids = self.paths, self.images, self.image_ids
        train_images = images.select(images.splits == "train")
        ids = ids[images.splits == "train"]
        train = self.latents.select(self.latents.splits == "train")
        if len(train) == 0:
            raise RunError(f"{paths.latents} has no training images")
        by_image, by_latent = np.argsort(ids), np.argsort(train.ids)
        if not np.array_equal(ids[by_image], train.ids[by_latent]):
            raise RunError(
                f"{paths.images} and {paths.latents} hold different training images: "
                f"run `latentgram encode --run {paths.root}` again"
            )
        packed = train.packed[by_latent]
        model = self.blae.model
        return shared_nearest_index(
            paths.root,
            train_images.images[by_image],
            packed,
            ids[by_image],
            train_images.labels[by_image],
            cached_reconstructions(paths.root, model, self.blae.sha256, packed),
            latent_shape=train.shape,
            class_names=images.class_names,
            model=model,
        )


def _networks(
    paths: RunPaths, indexes: dict[tuple[int, bool], NgramIndex], blae_sha256: str
) -> dict[tuple[int, bool], GammaARVM]:
    """The run's γ-ARVMs of the loaded tables, checked against its BL-AE's known checksum."""
    return {
        key: load_arvm(paths, *key, blae_sha256=blae_sha256)
        for key in indexes
        if has_arvm(paths, *key)
    }


def load_nearest_index(paths: RunPaths, *, device: str = "cpu") -> NearestIndex:
    """The nearest-image index of a run's training split, from its files."""
    return RunFiles.read(paths, device=device).nearest_index()


@dataclass
class LoadedRun:
    """The BL-AE, images, latents, n-gram indexes and γ-ARVMs of one run."""

    files: RunFiles
    tables: list[TableInfo]
    indexes: dict[tuple[int, bool], NgramIndex]  # (γ, positional) → index
    networks: dict[tuple[int, bool], GammaARVM]  # (γ, positional) → γ-ARVM
    neighbours: NearestIndex  # the training split, searchable by pixels and by latents
    search_threads: int | None = None  # threads one exact search may use (None: every core)
    _samplers: dict[bool, Sampler] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load(cls, root: Path) -> LoadedRun:
        """Load a prepared run; RunError says what is missing or stale."""
        files = RunFiles.read(RunPaths(root))
        paths = files.paths
        if applied := upgrade_store(paths.require(paths.store, "build")):
            log.info("migrated %s: %s", paths.store, ", ".join(applied))
        with open_store(paths.store, read_only=True) as con:
            tables = list_tables(con)
            check_tables_fresh(paths, tables, files.latents)
            if not tables:
                raise RunError(f"no n-gram tables in {paths.store}: run `latentgram build`")
            started = time.perf_counter()
            indexes = {(t.gamma, t.positional): load_index(con, paths.store, t) for t in tables}
            log.info(
                "indexes of %d tables ready in %.2f s", len(indexes), time.perf_counter() - started
            )
        networks = _networks(paths, indexes, files.blae.sha256)
        return cls(files, tables, indexes, networks, files.nearest_index())

    def with_rebuilt_tables(self) -> LoadedRun | None:
        """This run with the store's current tables, or None when none was rebuilt, added or
        dropped since it was loaded. Unchanged tables, the files and the nearest-image index are
        shared; tables built from other latents than the loaded ones load the whole run again."""
        paths = self.paths
        with open_store(paths.store, read_only=True) as con:
            tables = list_tables(con)
            if {t.table_id for t in tables} == {t.table_id for t in self.tables}:
                return None
            if any(t.model_sha256 != self.blae.sha256 for t in tables):
                return LoadedRun.load(paths.root)
            check_tables_fresh(paths, tables, self.latents)
            if not tables:
                raise RunError(f"no n-gram tables in {paths.store}: run `latentgram build`")
            loaded = {(t.gamma, t.positional): t.table_id for t in self.tables}
            indexes = {
                (t.gamma, t.positional): self.indexes[t.gamma, t.positional]
                if loaded.get((t.gamma, t.positional)) == t.table_id
                else load_index(con, paths.store, t)
                for t in tables
            }
        networks = _networks(paths, indexes, self.blae.sha256)
        return LoadedRun(
            self.files, tables, indexes, networks, self.neighbours, self.search_threads
        )

    @property
    def paths(self) -> RunPaths:
        return self.files.paths

    @property
    def images(self) -> ImageSet:
        return self.files.images

    @property
    def latents(self) -> LatentSet:
        return self.files.latents

    @property
    def blae(self) -> Checkpoint[BLAE]:
        return self.files.blae

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.latents.shape

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.images.shape

    @cached_property
    def background(self) -> RGB:
        """The colour uploads are flattened onto when they have alpha: the training images'
        median border colour (black for Fashion-MNIST)."""
        return background_colour(self.images.images[self.images.splits == "train"])

    @property
    def gammas(self) -> list[int]:
        """The γ with a table (positional or not), ascending."""
        return sorted({gamma for gamma, _ in self.indexes})

    @property
    def train_images(self) -> int:
        return int((self.latents.splits == "train").sum())

    def describe(self) -> dict[str, Any]:
        """What the run holds, for /v1/info."""
        return {
            "run": str(self.paths.root),
            "model_sha256": self.blae.sha256,
            "image_shape": list(self.image_shape),
            "latent_shape": list(self.latent_shape),
            "latent_bytes": packed_size(self.latent_shape),
            "search_passes": self.latents.search_passes,  # what encoding an image costs
            "images": {
                "train": self.train_images,
                "test": int((self.images.splits == "test").sum()),
            },
            "class_names": list(self.images.class_names),
            "background": list(self.background),
            "tables": [
                {
                    "id": t.table_id,
                    "gamma": t.gamma,
                    "positional": t.positional,
                    "contexts": t.contexts,
                    "rows": t.rows,
                    "arvm": (t.gamma, t.positional) in self.networks,
                }
                for t in sorted(self.tables, key=lambda t: (t.positional, t.gamma))
            ],
        }

    def sampler(self, positional: bool) -> Sampler:
        """One sampler per table family, built once and shared by all requests."""
        with self._lock:
            if positional not in self._samplers:
                self._samplers[positional] = Sampler(
                    self.latent_shape,
                    {g: i for (g, p), i in self.indexes.items() if p == positional},
                    {g: n for (g, p), n in self.networks.items() if p == positional},
                    positional=positional,
                    search_threads=self.search_threads,
                )
            return self._samplers[positional]

    def sample(
        self,
        *,
        gamma: int,
        mode: Mode,
        config: SampleConfig,
        positional: bool = False,
        complete_with_hybrid: bool = False,
    ) -> GeneratedSamples:
        sampler = self.sampler(positional)
        batch = sampler.sample(gamma, mode, config, complete_with_hybrid=complete_with_hybrid)
        return decode_samples(sampler, batch, self.blae)

    def pack_tokens(self, tokens: np.ndarray) -> np.ndarray:
        """(N, H, W) tokens → packed latents (N, bytes)."""
        return pack_bits(tokens_to_bits(tokens, self.latent_shape[0]))

    def encode(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, C, H, W) → packed latents (N, bytes)."""
        passes = self.latents.search_passes  # as the training images' latents were found
        packed, _ = encode_images(self.blae.model, images, search_passes=passes)
        return packed

    def decode(self, packed: np.ndarray) -> np.ndarray:
        """Packed latents (N, bytes) → uint8 images."""
        return decode_bits(self.blae.model, unpack_bits(packed, self.latent_shape))

    def nearest(
        self, *, images: np.ndarray, k: int, by: NearestBy, packed: np.ndarray | None = None
    ) -> list[list[dict[str, Any]]]:
        """Top-k training images of each query, ranked by pixel PSNR or latent Hamming distance.

        images: the queries' pixels (Q, C, H, W) uint8; packed: their latents, encoded when None.
        """
        if packed is None:
            packed = self.encode(images)
        if by == "pixels":
            result = self.neighbours.by_pixels(images, k, bits=packed)
        elif by == "latent":
            result = self.neighbours.by_latents(packed, k, decoded=images)
        else:
            raise InvalidInputError(f"by must be pixels or latent, got {by!r}")
        return [[hit.to_dict() for hit in hits] for hits in result.to_hits()]

    def image(self, image_id: int) -> tuple[np.ndarray, int, str]:
        """One image of images.parquet by id: (C, H, W) uint8, label, split."""
        rows = np.flatnonzero(self.files.image_ids == image_id)
        if not len(rows):
            ids = self.files.image_ids
            raise LookupError(f"no image with id {image_id} (ids are 0..{len(ids) - 1})")
        row = int(rows[0])
        return self.images.images[row], int(self.images.labels[row]), str(self.images.splits[row])
