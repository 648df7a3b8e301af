"""Fixtures of the API tests; the server itself is tests/conftest.py's live_server."""

from __future__ import annotations

import numpy as np
import pytest

from service.data.parquet import read_images, read_latents
from tests.live_server import LiveServer


@pytest.fixture(scope="module")
def training(live_server: LiveServer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, uint8 images (N, 28, 28), packed latents) of the served run's training split."""
    ids, images = read_images(live_server.run.images)
    latents = read_latents(live_server.run.latents)
    train = images.splits == "train"
    assert np.array_equal(latents.ids, ids)
    return ids[train], images.images[train][:, 0], latents.packed[train]
