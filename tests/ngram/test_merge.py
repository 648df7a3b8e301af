"""Merging chunks' counts (ngram/merge.py): the histogram and contexts of all their windows at
once, and the key check across chunks."""

import itertools
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from service.ngram import merge
from service.ngram.counting import ChunkCounts, count_chunk
from service.ngram.merge import SpilledCounts


def _chunks(
    tokens: np.ndarray, ids: np.ndarray, cuts: list[int], gamma: int = 5, pad: int = 4
) -> list[ChunkCounts]:
    bounds = [0, *cuts, len(tokens)]
    return [
        count_chunk(tokens[a:b], ids[a:b], gamma, pad=pad, positional=True)[0]
        for a, b in itertools.pairwise(bounds)
    ]


def _merged(spill: SpilledCounts) -> tuple[pa.Table, pa.Table]:
    return pa.Table.from_batches(spill.histogram_batches()), pa.Table.from_batches(
        spill.context_batches()
    )


def test_merged_chunks_are_the_counts_of_one_chunk(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 3, (200, 4, 4))
    tokens[150:] = tokens[:50]  # the same windows in other chunks
    ids = rng.permutation(1000)[:200]
    spill = SpilledCounts(tmp_path / "spill")
    for chunk in _chunks(tokens, ids, [40, 41, 130]):
        spill.add(chunk)
    rows, contexts = _merged(spill)
    whole = SpilledCounts(tmp_path / "whole")
    whole.add(_chunks(tokens, ids, [])[0])
    expected_rows, expected_contexts = _merged(whole)

    def by_pair(table: pa.Table) -> dict[tuple[int, int], tuple[int, ...]]:
        records = zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True)
        return {(k, t): tuple(rest) for k, t, *rest in records}

    assert by_pair(rows) == by_pair(expected_rows)
    assert len(rows) == len(set(by_pair(rows)))  # one row per pair
    assert sorted(zip(*contexts.to_pydict().values(), strict=True)) == sorted(
        zip(*expected_contexts.to_pydict().values(), strict=True)
    )
    assert not spill.collided and any((tmp_path / "spill").iterdir())
    spill.remove()
    assert not (tmp_path / "spill").exists()


def test_a_key_whose_contexts_hash_apart_across_chunks_is_a_collision(tmp_path: Path) -> None:
    """The same key with another second hash in a later chunk: two contexts share the key."""
    tokens = np.random.default_rng(1).integers(0, 3, (20, 4, 4))
    ids = np.arange(20)
    first, second = _chunks(tokens, ids, [10])
    shared = np.intersect1d(first.context_keys, second.context_keys)[0]
    spill = SpilledCounts(tmp_path / "honest")
    spill.add(first)
    spill.add(second)
    _merged(spill)
    assert not spill.collided

    checks = second.context_checks.copy()
    checks[second.context_keys == shared] ^= 1
    forged = SpilledCounts(tmp_path / "forged")
    forged.add(first)
    forged.add(second._replace(context_checks=checks))
    _merged(forged)
    assert forged.collided


def test_counts_per_pair_add_up_across_chunks(tmp_path: Path) -> None:
    """Windows, distinct images and the smallest image id: summed, summed and the least."""
    tokens = np.zeros((6, 4, 4), np.int64)  # every image the same: every pair in every chunk
    ids = np.array([50, 7, 30, 9, 41, 12])
    spill = SpilledCounts(tmp_path / "spill")
    for chunk in _chunks(tokens, ids, [2, 4]):
        spill.add(chunk)
    rows, _ = _merged(spill)
    expected: dict[int, int] = defaultdict(int)
    for chunk in _chunks(tokens, ids, []):
        for key, count in zip(chunk.keys, chunk.counts, strict=True):
            expected[int(key)] += int(count)
    assert dict(zip(rows.column("context_key").to_pylist(), rows.column("count").to_pylist(),
                    strict=True)) == expected  # fmt: skip
    assert set(rows.column("images").to_pylist()) == {6}
    assert set(rows.column("example_image").to_pylist()) == {7}


def test_wide_contexts_are_merged_a_bounded_group_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At γ = 15 a context's 112 tokens outweigh its key, check and position: the groups are
    sized by the tokens, so no batch holds much more than MERGE_GROUP_BYTES of them."""
    tokens, ids = np.random.default_rng(4).integers(0, 2, (400, 8, 8)), np.arange(400)
    spill = SpilledCounts(tmp_path / "spill")
    for chunk in _chunks(tokens, ids, [100, 200, 300], gamma=15, pad=2):
        spill.add(chunk)
    whole = SpilledCounts(tmp_path / "whole")
    whole.add(_chunks(tokens, ids, [], gamma=15, pad=2)[0])
    limit = 1 << 16
    monkeypatch.setattr(merge, "MERGE_GROUP_BYTES", limit)
    batches = list(spill.context_batches())
    spilled_bytes = [b.num_rows * 112 * 2 for b in batches]  # the tokens, as spilled (uint16)
    assert len(batches) > 4 and max(spilled_bytes) <= 2 * limit  # a group ends past its limit
    expected = _merged(whole)[1]
    assert sorted(pa.Table.from_batches(batches).column("context_key").to_pylist()) == sorted(
        expected.column("context_key").to_pylist()
    )


@pytest.mark.parametrize("rows", [0, 1, 2, 33, 5000])
def test_a_buckets_rows_are_sorted_by_key_then_token(rows: int) -> None:
    """Keys of both signs, keys that differ in their low bits only, and a key with more tokens
    than insertion is left to sort: the order of np.lexsort, whatever the rows' count."""
    rng = np.random.default_rng(rows)
    keys = rng.integers(-(2**63), 2**63 - 1, rows, dtype=np.int64)
    keys[: rows // 3] = keys[0] if rows else keys[: rows // 3]  # one context, many tokens
    keys[rows // 3 : rows // 2] = rng.integers(0, 64, rows // 2 - rows // 3)
    table = np.stack([keys, *rng.integers(0, 4096, (4, rows))], axis=1)
    table[:, 1] = rng.permutation(rows)  # a token once per key, as in a merged bucket
    expected = table[np.lexsort((table[:, 1], table[:, 0]))]
    merge._sort_rows(table)
    assert np.array_equal(table, expected)
