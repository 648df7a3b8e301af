"""A run encoded with the code search: what it records, and the service encoding new images as
the run's latents were encoded."""

import shutil
from pathlib import Path

import numpy as np

from service.data.parquet import read_latents
from service.run.build import build_run_tables
from service.run.loaded import LoadedRun
from service.run.paths import RunPaths
from service.run.record import read_run_json
from service.run.steps import encode_run


def test_a_searched_encode_records_its_passes_and_the_service_encodes_alike(
    tmp_path: Path, tiny_run: RunPaths
) -> None:
    paths = RunPaths(tmp_path / "run")
    shutil.copytree(tiny_run.root, paths.root)
    plain = read_run_json(paths)["encode"]
    summary = encode_run(paths, search_passes=6, progress=False)
    searched = read_run_json(paths)["encode"]
    assert plain["search_passes"] == 0 and searched["search_passes"] == summary.search_passes == 6
    assert searched["test_psnr"] > plain["test_psnr"] + 0.1
    latents = read_latents(paths.latents)
    assert latents.search_passes == 6

    build_run_tables(paths, (3,), progress=False)
    run = LoadedRun.load(paths.root)
    assert run.describe()["search_passes"] == 6  # /v1/info: what encoding an upload costs
    first = np.argsort(latents.ids)[:128]  # ids are positions in images.parquet
    np.testing.assert_array_equal(run.encode(run.images.images[:128]), latents.packed[first])
