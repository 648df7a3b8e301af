"""Index files: store → files → mapped index is the store's index; stale, damaged or old files
are rebuilt or removed; a run directory that cannot be written still serves."""

from __future__ import annotations

import errno
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from service.array_files import MANIFEST, StaleArrays, read_arrays, write_arrays
from service.ngram.build import build_table
from service.ngram.exact import ExactSampler
from service.ngram.index import KeyFilter, NgramIndex
from service.ngram.index_files import (
    index_folder,
    index_root,
    load_index,
    map_index,
    write_run_indexes,
)
from service.ngram.samples import SampleConfig
from service.ngram.store import TableInfo, get_table, open_store
from tests.helpers import grids_from_tokens

ARRAYS = ("keys", "starts", "tokens", "counts", "examples", "above_words")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Tables γ = 3 and γ = 5 (positional) over 60 random 4×5 grids of 2-bit tokens."""
    path = tmp_path / "run" / "store.duckdb"
    tokens = np.random.default_rng(0).integers(0, 4, (60, 4, 5))
    with open_store(path) as con:
        build_table(con, grids_from_tokens(tokens, 2), gamma=3)
        build_table(con, grids_from_tokens(tokens, 2), gamma=5, positional=True)
    return path


def tables(store: Path) -> list[tuple[TableInfo, NgramIndex]]:
    """Every table's catalogue row and its index read from the store."""
    with open_store(store, read_only=True) as con:
        infos = [get_table(con, 3), get_table(con, 5, True)]
        return [(info, NgramIndex.load(con, info.gamma, info.positional)) for info in infos]


def loaded(store: Path, info: TableInfo) -> NgramIndex:
    with open_store(store, read_only=True) as con:
        return load_index(con, store, info)


def test_index_round_trips_through_its_files(store: Path, caplog: pytest.LogCaptureFixture) -> None:
    logs = caplog.at_level(logging.INFO, logger="service.ngram.index_files")
    with logs, open_store(store, read_only=True) as con:
        folders = write_run_indexes(con, store)
    assert sorted(p.name for p in index_root(store).iterdir()) == sorted(p.name for p in folders)
    # a build's new tables have no files yet: that is no reason for a warning
    assert [r.levelno for r in caplog.records if "index files of" in r.message] == [
        logging.INFO
    ] * 2
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    for info, expected in tables(store):
        mapped = map_index(store, info)
        assert mapped.info == info
        for name in ARRAYS:
            np.testing.assert_array_equal(getattr(mapped, name), getattr(expected, name))
            assert getattr(mapped, name).dtype == getattr(expected, name).dtype
        np.testing.assert_array_equal(mapped.key_slots, expected.key_slots)  # built from arrays
        np.testing.assert_array_equal(mapped.key_filter.words, KeyFilter(expected.keys).words)


def test_mapped_arrays_are_read_only_and_sample_as_the_store_index(store: Path) -> None:
    for info, expected in tables(store):
        mapped = loaded(store, info)  # writes the files, returns them mapped
        for array in (mapped.keys, mapped.tokens, mapped.key_slots, mapped.key_filter.words):
            assert not array.flags.writeable
            with pytest.raises(ValueError, match="read-only"):
                array[0] = array[0]
        config = SampleConfig(n=24, seed=11, budget=400)
        ours, theirs = ExactSampler(mapped).sample(config), ExactSampler(expected).sample(config)
        np.testing.assert_array_equal(ours.tokens, theirs.tokens)
        np.testing.assert_array_equal(ours.examples, theirs.examples)
        np.testing.assert_array_equal(ours.ok, theirs.ok)
        assert ours.ok.any()


def _cut(folder: Path) -> None:
    path = folder / "tokens.npy"
    path.write_bytes(path.read_bytes()[:-16])


def _other_table(folder: Path) -> None:
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["meta"]["table_id"] += 100
    (folder / MANIFEST).write_text(json.dumps(manifest))


def _shape_lie(folder: Path) -> None:
    """A consistent manifest over arrays of the wrong size for the catalogue row."""
    arrays = {n: np.asarray(a) for n, a in read_arrays(folder, _meta_of(folder)).items()}
    arrays["starts"] = arrays["starts"][:-1]
    write_arrays(folder, arrays, _meta_of(folder))


def _meta_of(folder: Path) -> dict[str, object]:
    meta: dict[str, object] = json.loads((folder / MANIFEST).read_text())["meta"]
    return meta


DAMAGE: dict[str, Callable[[Path], None]] = {
    "file cut short": _cut,
    "file empty": lambda folder: (folder / "starts.npy").write_bytes(b""),  # numpy: EOFError
    "file missing": lambda folder: (folder / "key_slots.npy").unlink(),
    "manifest garbled": lambda folder: (folder / MANIFEST).write_text("{not json"),
    "manifest of another table": _other_table,
    "sizes unlike the catalogue": _shape_lie,
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_stale_or_damaged_files_are_rebuilt_and_the_log_says_so(
    store: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    (info, expected), _ = tables(store)
    loaded(store, info)
    DAMAGE[damage](index_folder(store, info.table_id))
    with caplog.at_level(logging.WARNING, logger="service.ngram.index_files"):
        index = loaded(store, info)
    assert any(f"rebuilding the index of {info.name}" in r.message for r in caplog.records)
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(index, name), getattr(expected, name))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="service.ngram.index_files"):
        again = map_index(store, info)  # the files are whole again
        loaded(store, info)
    assert not caplog.records
    np.testing.assert_array_equal(again.key_slots, expected.key_slots)


def test_a_rebuilt_table_gets_new_files_and_the_old_ones_go(store: Path) -> None:
    (old, _), (other, _) = tables(store)
    for info in (old, other):
        loaded(store, info)
    tokens = np.random.default_rng(1).integers(0, 4, (30, 4, 5))
    with open_store(store) as con:
        new = build_table(con, grids_from_tokens(tokens, 2), gamma=3)
        index = load_index(con, store, new)
        expected = NgramIndex.load(con, 3)
    assert new.table_id != old.table_id
    assert not index.keys.flags.writeable  # mapped from the new files
    np.testing.assert_array_equal(index.keys, expected.keys)
    names = {p.name for p in index_root(store).iterdir()}
    assert names == {str(new.table_id), str(other.table_id)}


def test_a_run_directory_that_cannot_be_written_still_serves(
    store: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (info, expected), _ = tables(store)
    real_mkdir = Path.mkdir

    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        """What a read-only file system (or a root-owned run) answers; root ignores modes."""
        if index_root(store) in (self, *self.parents) and not self.exists():
            raise PermissionError(errno.EROFS, "Read-only file system", str(self))
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", refuse)
    with caplog.at_level(logging.WARNING, logger="service.ngram.index_files"):
        index = loaded(store, info)
    assert any("cannot cache the index of g3" in r.message for r in caplog.records)
    assert not index_root(store).exists()
    np.testing.assert_array_equal(index.keys, expected.keys)
    config = SampleConfig(n=8, seed=2, budget=400)
    np.testing.assert_array_equal(
        ExactSampler(index).sample(config).tokens, ExactSampler(expected).sample(config).tokens
    )


def test_writers_racing_for_one_folder_leave_one_whole_set(tmp_path: Path) -> None:
    folder = tmp_path / "index" / "7"
    meta = {"table_id": 7}
    write_arrays(folder, {"a": np.zeros(3)}, {"table_id": 6})  # a stale set they all replace
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def write(value: int) -> None:
        start.wait()
        try:
            for _ in range(10):
                write_arrays(folder, {"a": np.full(1000, value), "b": np.arange(value)}, meta)
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(v,)) for v in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    arrays = read_arrays(folder, meta)
    value = int(arrays["a"][0])
    np.testing.assert_array_equal(arrays["a"], np.full(1000, value))  # one writer's set, whole
    np.testing.assert_array_equal(arrays["b"], np.arange(value))
    assert [p.name for p in folder.parent.iterdir()] == ["7"]  # no temporary folder left


def test_stale_files_say_what_they_were_written_for(tmp_path: Path) -> None:
    """The warning names what differs, not the two whole records."""
    folder = tmp_path / "arrays"
    write_arrays(folder, {"a": np.arange(3)}, {"layout": 2, "table_id": 6, "name": "g5"})
    with pytest.raises(StaleArrays) as stale:
        read_arrays(folder, {"layout": 3, "table_id": 6, "name": "g5"})
    assert str(stale.value) == f"{folder} was written for layout 2 (now 3)"
