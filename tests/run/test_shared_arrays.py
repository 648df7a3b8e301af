"""A loaded run maps its tables' indexes and its nearest-image arrays from files in the run
directory (written by the first load), with the same samples and neighbours as arrays built in
memory; a run directory that cannot be written still loads."""

from __future__ import annotations

import errno
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from service.evaluation.nearest import NEAREST_DIR
from service.ngram.index_files import INDEX_DIR
from service.ngram.samples import SampleConfig
from service.run.loaded import LoadedRun
from service.run.paths import RunPaths


@pytest.fixture
def run_copy(tmp_path: Path, prepared_run: RunPaths) -> RunPaths:
    """The prepared run without any index or nearest-image files."""
    paths = RunPaths(tmp_path / "run")
    shutil.copytree(prepared_run.root, paths.root)
    for name in (INDEX_DIR, NEAREST_DIR):
        shutil.rmtree(paths.root / name, ignore_errors=True)
    return paths


def assert_same_service(ours: LoadedRun, theirs: LoadedRun) -> None:
    """Same exact samples from every table, same neighbours both ways."""
    for (gamma, positional), index in theirs.indexes.items():
        config = SampleConfig(n=6, seed=4, budget=300)
        a = ours.sampler(positional).sample(gamma, "exact", config)
        b = theirs.sampler(positional).sample(gamma, "exact", config)
        np.testing.assert_array_equal(a.tokens, b.tokens)
        np.testing.assert_array_equal(a.examples, b.examples)
        np.testing.assert_array_equal(ours.indexes[gamma, positional].keys, index.keys)
    queries = theirs.images.images[theirs.images.splits == "test"][:5]
    for by in ("pixels", "latent"):
        assert ours.nearest(images=queries, k=4, by=by) == theirs.nearest(
            images=queries, k=4, by=by
        )


def test_the_second_load_maps_what_the_first_wrote(
    run_copy: RunPaths, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        first = LoadedRun.load(run_copy.root)
    assert any("rebuilding the index of g3" in r.message for r in caplog.records)
    tables = {str(t.table_id) for t in first.tables}
    assert {p.name for p in (run_copy.root / INDEX_DIR).iterdir()} == tables
    assert len(list((run_copy.root / NEAREST_DIR).iterdir())) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        second = LoadedRun.load(run_copy.root)
    assert not caplog.records  # nothing rebuilt
    neighbours = second.neighbours
    mapped = [neighbours.ids, neighbours.packed, neighbours.reconstructions]
    mapped += [neighbours.pixels.pixels, neighbours.latents.words]
    for index in second.indexes.values():
        mapped += [index.keys, index.starts, index.tokens, index.key_slots]
    assert not any(array.flags.writeable for array in mapped)
    assert_same_service(second, first)


def test_a_run_directory_that_cannot_be_written_still_loads(
    run_copy: RunPaths, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    reference = LoadedRun.load(run_copy.root)
    for name in (INDEX_DIR, NEAREST_DIR):
        shutil.rmtree(run_copy.root / name)
    real_mkdir = Path.mkdir

    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        """What a read-only file system answers to a new folder (root ignores file modes)."""
        if run_copy.root in (self, *self.parents) and not self.exists():
            raise PermissionError(errno.EROFS, "Read-only file system", str(self))
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", refuse)
    with caplog.at_level(logging.WARNING):
        run = LoadedRun.load(run_copy.root)
    messages = " ".join(r.message for r in caplog.records)
    assert "cannot cache the index of g3" in messages
    assert "cannot cache the nearest-image arrays" in messages
    assert not (run_copy.root / INDEX_DIR).exists()
    assert not (run_copy.root / NEAREST_DIR).exists()
    assert_same_service(run, reference)
