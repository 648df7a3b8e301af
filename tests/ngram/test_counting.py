"""The compiled counting of a chunk of grids: the same histogram, provenance and contexts as a
plain groupby over the windows that windows.py extracts."""

from collections import defaultdict

import numpy as np
import pytest

from service.ngram.counting import _count, count_chunk
from service.ngram.windows import build_windows


@pytest.mark.parametrize("positional", [False, True])
@pytest.mark.parametrize("gamma", [3, 5, 7])
def test_counts_equal_a_groupby_of_the_extracted_windows(gamma: int, positional: bool) -> None:
    rng = np.random.default_rng(gamma)
    tokens = rng.integers(0, 3, (300, 4, 5))
    tokens[100:150] = tokens[:50]  # repeated images: counts above their distinct images
    ids = rng.permutation(10_000)[:300]  # ids out of order: the example is the smallest id
    counted, collision = count_chunk(tokens, ids, gamma, pad=4, positional=positional)
    win = build_windows(tokens, ids, gamma, pad=4, positional=positional)

    expected: dict[tuple[int, int], list[int]] = defaultdict(list)
    for key, token, image in zip(win.keys, win.tokens, win.images, strict=True):
        expected[(key, token)].append(image)
    got = {
        (k, t): (c, i, e)
        for k, t, c, i, e in zip(
            counted.keys, counted.tokens, counted.counts, counted.images, counted.example_images,
            strict=True,
        )
    }  # fmt: skip
    assert not collision
    assert got == {pair: (len(im), len(set(im)), min(im)) for pair, im in expected.items()}

    keys, first = np.unique(win.keys, return_index=True)
    order = np.argsort(counted.context_keys)
    np.testing.assert_array_equal(counted.context_keys[order], keys)
    np.testing.assert_array_equal(counted.context_tokens[order], win.contexts[first])
    if positional:
        np.testing.assert_array_equal(counted.context_positions[order], win.positions[first])


def test_a_key_whose_windows_hash_apart_is_a_collision() -> None:
    """Two windows with one key and different second hashes: two contexts share the key."""
    records = np.array([[7, 1, 0, 5, 0], [7, 1, 1, 5, 1], [9, 3, 0, 6, 2]], np.int64)
    starts = np.array([0, 3])
    assert not _count(records, starts)[4]
    records[1, 1] = 2
    assert _count(records, starts)[4]


def test_no_windows_count_to_nothing() -> None:
    counted, collision = count_chunk(np.zeros((0, 4, 4), np.int64), np.zeros(0), 5, pad=4)
    assert len(counted.keys) == len(counted.context_keys) == 0 and not collision


@pytest.mark.parametrize("positional", [False, True])
def test_counting_on_several_threads_gives_the_same_output(positional: bool) -> None:
    """Split by images to hash and by partitions to count, put back in order: every array is
    the one-thread one, row for row (the merge and the store rely on its order)."""
    rng = np.random.default_rng(3)
    for images, threads in ((2_000, 2), (2_000, 3), (3, 5)):  # 3 images: some threads get none
        tokens = rng.integers(0, 4, (images, 4, 4))
        ids = rng.permutation(images)
        one, _ = count_chunk(tokens, ids, 3, pad=4, positional=positional)
        many, collision = count_chunk(tokens, ids, 3, pad=4, positional=positional, threads=threads)
        assert not collision
        for mine, theirs in zip(many, one, strict=True):
            np.testing.assert_array_equal(mine, theirs)
