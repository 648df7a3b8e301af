"""The BL-AE's reconstructions of the training images, decoded once and cached in the run
directory: the report and the service compare samples with them (a decoded copy of a training
latent is exactly its reconstruction)."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np

from models import BLAE
from service.array_files import map_npy
from service.files import atomic_path
from service.latents.codec import decode_packed

log = logging.getLogger(__name__)

RECONSTRUCTIONS_PREFIX = "train-reconstructions-"  # + key + ".npy" in the run directory


def reconstructions_path(folder: Path, model_sha256: str, packed: np.ndarray) -> Path:
    """Cache file of the decoded training latents, keyed by the BL-AE checksum and the latents."""
    digest = hashlib.sha256(model_sha256.encode())
    digest.update(repr(packed.shape).encode())
    digest.update(np.ascontiguousarray(packed).tobytes())
    return folder / f"{RECONSTRUCTIONS_PREFIX}{digest.hexdigest()[:16]}.npy"


def cached_reconstructions(
    folder: Path, model: BLAE, model_sha256: str, packed: np.ndarray
) -> np.ndarray:
    """BL-AE reconstructions (N, C, H, W) uint8 of training latents (N, bytes), decoded once.

    The file is mapped read-only, so the processes that serve a run share one copy of its pages.
    A cache file whose key differs (another BL-AE or other latents) is never read, and is removed
    when the new one is written. A read-only run directory only costs the decode on every load.
    """
    path = reconstructions_path(folder, model_sha256, packed)
    cfg = model.config
    shape = (len(packed), cfg.image_channels, cfg.image_size, cfg.image_size)
    if path.exists():
        try:
            cached = map_npy(path)
            if cached.dtype == np.uint8 and cached.shape == shape:
                return cached
        except (OSError, ValueError, EOFError) as exc:  # EOFError: an empty file
            log.warning("ignoring unreadable %s: %s", path, exc)
    started = time.perf_counter()
    reconstructions = decode_packed(model, packed)
    log.info("decoded %d training latents in %.1f s", len(packed), time.perf_counter() - started)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, reconstructions, allow_pickle=False)
        for stale in folder.glob(f"{RECONSTRUCTIONS_PREFIX}*.npy"):
            if stale != path:
                stale.unlink(missing_ok=True)
        return map_npy(path)
    except OSError as exc:
        log.warning("cannot cache reconstructions in %s: %s", folder, exc)
    return reconstructions
