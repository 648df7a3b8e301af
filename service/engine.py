"""A run loaded once and kept in memory, for the service: everything a request needs is here.

Loading reads the store through a read-only connection and closes it again, so a CLI build can
take the store's single write lock while the service runs; the service sees a rebuilt table only
after `RunEngine.load` is called again (a restart).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.arvm import GammaARVM
from service.arvm_training import arvm_paths, load_arvm
from service.bits import pack_bits, packed_size, tokens_to_bits, unpack_bits
from service.checkpoints import BLAECheckpoint, load_blae
from service.codec import decode_bits, encode_images
from service.errors import RunError
from service.generation import Generator
from service.index import NgramIndex
from service.nearest import NearestIndex
from service.parquet_io import LatentSet, read_images, read_latents
from service.pipeline import GeneratedSamples, check_tables_fresh, decode_samples
from service.run import RunPaths
from service.sampler import SampleConfig
from service.sources import ImageSet
from service.store import TableInfo, list_tables, open_store, upgrade_store

log = logging.getLogger(__name__)


@dataclass
class RunEngine:
    """The BL-AE, images, latents, n-gram indexes and γ-ARVMs of one run."""

    paths: RunPaths
    blae: BLAECheckpoint
    image_ids: np.ndarray  # (N,) ids of images.parquet, in file order
    images: ImageSet
    latents: LatentSet
    tables: list[TableInfo]
    indexes: dict[tuple[int, bool], NgramIndex]  # (γ, positional) → index
    networks: dict[tuple[int, bool], GammaARVM]  # (γ, positional) → γ-ARVM
    neighbours: NearestIndex  # the training split, searchable by pixels and by latents
    _generators: dict[bool, Generator] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load(cls, root: Path) -> RunEngine:
        """Load a prepared run; RunError says what is missing or stale."""
        paths = RunPaths(root)
        if not paths.root.is_dir():
            raise RunError(f"run directory {paths.root} does not exist: run `latentgram prepare`")
        blae = load_blae(paths)
        latents = read_latents(paths.require(paths.latents, "encode"))
        image_ids, images = read_images(paths.require(paths.images, "encode"))
        if latents.model_sha256 != blae.sha256:
            raise RunError(
                f"{paths.latents} was encoded by another BL-AE: run `latentgram encode` again"
            )
        if applied := upgrade_store(paths.require(paths.store, "build")):
            log.info("migrated %s: %s", paths.store, ", ".join(applied))
        with open_store(paths.store, read_only=True) as con:
            tables = list_tables(con)
            check_tables_fresh(paths, tables, latents)
            if not tables:
                raise RunError(f"no n-gram tables in {paths.store}: run `latentgram build`")
            indexes = {
                (t.gamma, t.positional): NgramIndex.load(con, t.gamma, t.positional) for t in tables
            }
        networks = {
            key: load_arvm(paths, *key) for key in indexes if arvm_paths(paths, *key)[0].exists()
        }
        neighbours = NearestIndex.from_training_split(paths, blae, image_ids, images, latents)
        return cls(paths, blae, image_ids, images, latents, tables, indexes, networks, neighbours)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.latents.shape

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape
        return (c, h, w)

    def describe(self) -> dict[str, Any]:
        """What the run holds, for /v1/info."""
        return {
            "run": str(self.paths.root),
            "model_sha256": self.blae.sha256,
            "image_shape": list(self.image_shape),
            "latent_shape": list(self.latent_shape),
            "latent_bytes": packed_size(self.latent_shape),
            "images": {
                "train": int((self.images.splits == "train").sum()),
                "test": int((self.images.splits == "test").sum()),
            },
            "class_names": list(self.images.class_names),
            "tables": [
                {
                    "gamma": t.gamma,
                    "positional": t.positional,
                    "contexts": t.contexts,
                    "rows": t.rows,
                    "arvm": (t.gamma, t.positional) in self.networks,
                }
                for t in sorted(self.tables, key=lambda t: (t.positional, t.gamma))
            ],
        }

    def generator(self, positional: bool) -> Generator:
        """One generator per table family, built once and shared by all requests."""
        with self._lock:
            if positional not in self._generators:
                self._generators[positional] = Generator(
                    self.latent_shape,
                    {g: i for (g, p), i in self.indexes.items() if p == positional},
                    {g: n for (g, p), n in self.networks.items() if p == positional},
                )
            return self._generators[positional]

    def sample(
        self,
        *,
        gamma: int,
        mode: str,
        config: SampleConfig,
        positional: bool = False,
        complete_with_hybrid: bool = False,
    ) -> GeneratedSamples:
        generator = self.generator(positional)
        batch = generator.sample(gamma, mode, config, complete_with_hybrid=complete_with_hybrid)
        return decode_samples(generator, batch, self.blae)

    @property
    def train_images(self) -> int:
        return int((self.latents.splits == "train").sum())

    def pack_tokens(self, tokens: np.ndarray) -> np.ndarray:
        """(N, H, W) tokens → packed latents (N, bytes)."""
        return pack_bits(tokens_to_bits(tokens, self.latent_shape[0]))

    def encode(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, C, H, W) → packed latents (N, bytes)."""
        packed, _ = encode_images(self.blae.model, images)
        return packed

    def decode(self, packed: np.ndarray) -> np.ndarray:
        """Packed latents (N, bytes) → uint8 images."""
        return decode_bits(self.blae.model, unpack_bits(packed, self.latent_shape))

    def nearest(
        self, *, images: np.ndarray, k: int, by: str, packed: np.ndarray | None = None
    ) -> list[list[dict[str, Any]]]:
        """Top-k training images of each query, ranked by pixel PSNR or latent Hamming distance.

        images: the queries' pixels (Q, C, H, W) uint8; packed: their latents, encoded when None.
        """
        if packed is None:
            packed = self.encode(images)
        if by == "pixels":
            result = self.neighbours.by_pixels(images, k, bits=packed)
        else:
            result = self.neighbours.by_latents(packed, k, decoded=images)
        return [[hit.to_dict() for hit in hits] for hits in result.to_hits()]

    def image(self, image_id: int) -> tuple[np.ndarray, int, str]:
        """One image of images.parquet by id: (C, H, W) uint8, label, split."""
        rows = np.flatnonzero(self.image_ids == image_id)
        if not len(rows):
            raise LookupError(f"no image with id {image_id} (ids are 0..{len(self.image_ids) - 1})")
        row = int(rows[0])
        return self.images.images[row], int(self.images.labels[row]), str(self.images.splits[row])
