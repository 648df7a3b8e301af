"""GET /v1/images/{id} against the real app under uvicorn on loopback."""

from __future__ import annotations

import numpy as np

from service.data.parquet import read_images
from service.run.paths import RunPaths
from tests.helpers import assert_problem, get, pixels_of
from tests.live_server import LiveServer


def test_training_images_by_id(live_server: LiveServer, prepared_run: RunPaths) -> None:
    ids, images = read_images(prepared_run.images)
    response = get(live_server, f"/v1/images/{ids[5]}")
    assert response.headers["content-type"] == "image/png"
    assert np.array_equal(pixels_of(response.content), images.images[5, 0])
    assert response.headers["x-split"] == "train"
    test_id = int(ids[images.splits == "test"][0])
    assert get(live_server, f"/v1/images/{test_id}").headers["x-split"] == "test"
    assert_problem(get(live_server, "/v1/images/999999"), 404, "no image with id 999999")
    assert get(live_server, "/v1/images/-1").status_code == 422
