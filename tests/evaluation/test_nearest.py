"""Exact nearest training images by pixels and by Hamming distance, against brute force."""

import math
from collections.abc import Callable

import numpy as np
import pytest

from service.errors import InvalidInputError
from service.evaluation.hamming import HammingIndex
from service.evaluation.nearest import NearestIndex
from service.evaluation.pixels import PSNR_CAP_DB, PixelIndex
from service.latents.bits import pack_bits, packed_size

CLASSES = ("zero", "one", "two")


Call = Callable[[NearestIndex, np.ndarray, np.ndarray], object]


def brute_pixels(db: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int) -> list[tuple]:
    """(squared error, id) of the k best, one pair at a time in Python integers."""
    pairs = []
    for row, image_id in zip(db, ids, strict=True):
        error = sum((int(a) - int(b)) ** 2 for a, b in zip(row.ravel(), query.ravel(), strict=True))
        pairs.append((error, int(image_id)))
    return sorted(pairs)[:k]


def brute_hamming(db: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int) -> list[tuple]:
    pairs = []
    for row, image_id in zip(db, ids, strict=True):
        distance = bin(int.from_bytes(bytes(row), "big") ^ int.from_bytes(bytes(query), "big"))
        pairs.append((distance.count("1"), int(image_id)))
    return sorted(pairs)[:k]


def psnr(error: int, values: int) -> float:
    mse = error / (255**2 * values)
    return PSNR_CAP_DB if mse == 0 else min(PSNR_CAP_DB, 10 * math.log10(1 / mse))


def random_index(
    rng: np.random.Generator,
    n: int,
    image_shape: tuple[int, int, int],
    latent_shape: tuple[int, int, int],
    levels: int = 4,
) -> NearestIndex:
    """Few grey levels and random 0/1 bits, so that equal distances are common; shuffled ids."""
    images = (rng.integers(0, levels, (n, *image_shape)) * (255 // (levels - 1))).astype(np.uint8)
    packed = pack_bits(rng.random((n, *latent_shape)) > 0.5)
    reconstructions = rng.integers(0, 256, images.shape, dtype=np.uint8)
    ids = rng.permutation(np.arange(100, 100 + 3 * n))[:n]
    labels = rng.integers(0, len(CLASSES), n)
    return NearestIndex(
        images, packed, ids, labels, reconstructions, latent_shape=latent_shape, class_names=CLASSES
    )


def database(index: NearestIndex) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """images (N, D), packed latents, ids and reconstructions (N, D), in the index's order."""
    return index.pixels.pixels, index.packed, index.ids, index.reconstructions


@pytest.mark.parametrize("image_shape", [(1, 6, 5), (3, 20, 20)])  # D = 30; D = 1200 > 1024
@pytest.mark.parametrize("k", [1, 3, 40])
def test_pixel_search_matches_brute_force(
    image_shape: tuple[int, int, int], k: int, rng: np.random.Generator
) -> None:
    index = random_index(rng, 40, image_shape, (4, 2, 2))
    pixels, packed, ids, reconstructions = database(index)
    queries = np.concatenate([pixels[[7, 7]], rng.integers(0, 256, (3, pixels.shape[1]))])
    queries = queries.astype(np.uint8).reshape(-1, *image_shape)
    bits = pack_bits(rng.random((len(queries), 4, 2, 2)) > 0.5)
    found = index.by_pixels(queries, k, bits=bits)
    assert found.ranked_by == "pixels" and found.ids.shape == (5, k)
    for q, query in enumerate(queries):
        expected = brute_pixels(pixels, ids, query, k)
        assert found.ids[q].tolist() == [image_id for _, image_id in expected]
        np.testing.assert_allclose(found.psnr[q], [psnr(e, query.size) for e, _ in expected])
        rows = np.searchsorted(ids, found.ids[q])
        to_reconstruction = brute_pixels(reconstructions[rows], ids[rows], query, k)
        by_id = {image_id: psnr(e, query.size) for e, image_id in to_reconstruction}
        np.testing.assert_allclose(found.psnr_reconstruction[q], [by_id[i] for i in found.ids[q]])
        hamming = {i: d for d, i in brute_hamming(packed[rows], ids[rows], bits[q], k)}
        assert found.hamming[q].tolist() == [hamming[i] for i in found.ids[q]]
        assert found.labels[q].tolist() == index.labels[rows].tolist()


@pytest.mark.parametrize("latent_shape", [(12, 4, 4), (3, 5, 7)])  # 3 whole words; 105 bits
@pytest.mark.parametrize("k", [1, 5, 60])
def test_latent_search_matches_brute_force(
    latent_shape: tuple[int, int, int], k: int, rng: np.random.Generator
) -> None:
    index = random_index(rng, 60, (1, 4, 4), latent_shape)
    pixels, packed, ids, _ = database(index)
    queries = np.concatenate([packed[[3]], pack_bits(rng.random((4, *latent_shape)) > 0.5)])
    decoded = rng.integers(0, 256, (len(queries), 1, 4, 4), dtype=np.uint8)
    found = index.by_latents(queries, k, decoded=decoded)
    assert found.ranked_by == "latent" and found.hamming.shape == (5, k)
    for q, query in enumerate(queries):
        expected = brute_hamming(packed, ids, query, k)
        assert list(zip(found.hamming[q].tolist(), found.ids[q].tolist(), strict=True)) == expected
        rows = np.searchsorted(ids, found.ids[q])
        errors = {i: e for e, i in brute_pixels(pixels[rows], ids[rows], decoded[q], k)}
        np.testing.assert_allclose(found.psnr[q], [psnr(errors[i], 16) for i in found.ids[q]])
    assert found.exact_copy[0, 0] and found.ids[0, 0] == ids[3]


def test_unused_bits_of_the_last_byte_are_ignored(rng: np.random.Generator) -> None:
    packed = pack_bits(rng.random((30, 3, 5, 7)) > 0.5)  # 105 bits: 7 unused in byte 13
    index = HammingIndex(packed, 105)
    noisy = packed[:4].copy()
    noisy[:, -1] |= 0x7F
    np.testing.assert_array_equal(index.search(noisy, 1).distances, 0)


def test_ties_go_to_the_lowest_ids(rng: np.random.Generator) -> None:
    """More equal images and latents than the candidates the pixel search ranks exactly."""
    n = 50
    images = rng.integers(0, 256, (n, 1, 3, 3), dtype=np.uint8)
    packed = pack_bits(rng.random((n, 8, 2, 1)) > 0.5)
    twins = np.arange(5, 45)  # 40 copies of one image and one latent
    images[twins], packed[twins] = images[0], packed[0]
    ids = rng.permutation(n)
    index = NearestIndex(images, packed, ids, ids % 3, images.copy(), latent_shape=(8, 2, 1))
    lowest = np.sort(ids[np.r_[0, twins]])[:3]
    for _ in range(2):  # and the same again
        by_pixels = index.by_pixels(images[:1], 3, bits=packed[:1])
        np.testing.assert_array_equal(by_pixels.ids[0], lowest)
        by_latents = index.by_latents(packed[:1], 3, decoded=images[:1])
        np.testing.assert_array_equal(by_latents.ids[0], lowest)
    assert by_pixels.memorized.all() and by_pixels.exact_copy.all()


def test_pixel_index_alone_ranks_by_squared_error(rng: np.random.Generator) -> None:
    images = rng.integers(0, 256, (25, 2, 4, 4), dtype=np.uint8)
    queries = rng.integers(0, 256, (3, 32), dtype=np.uint8)
    top = PixelIndex(images).search(queries, 25)
    errors = ((images.reshape(25, 1, -1).astype(int) - queries[None]) ** 2).sum(-1).T  # (3, 25)
    np.testing.assert_array_equal(top.distances, np.sort(errors, axis=1))
    np.testing.assert_array_equal(np.take_along_axis(errors, top.positions, 1), top.distances)


def test_hits_carry_label_names_and_flags(rng: np.random.Generator) -> None:
    index = random_index(rng, 12, (1, 4, 4), (4, 2, 2))
    pixels, packed, ids, _ = database(index)
    hits = index.by_pixels(pixels[:2].reshape(2, 1, 4, 4), 2, bits=packed[:2]).to_hits()
    first = hits[1][0]
    assert first.id == ids[1] and first.label_name == CLASSES[first.label]
    assert first.psnr == PSNR_CAP_DB and first.memorized and first.exact_copy
    assert first.hamming == 0 and hits[1][1].psnr < PSNR_CAP_DB
    assert set(first.to_dict()) == {
        "id", "label", "label_name", "psnr", "psnr_reconstruction", "hamming", "memorized",
        "memorized_reconstruction", "exact_copy",
    }  # fmt: skip
    assert first.memorized_reconstruction == (first.psnr_reconstruction > 30)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda ix, im, pk: ix.by_pixels(im, 0, bits=pk), r"k must be .* from 1 to 10"),
        (lambda ix, im, pk: ix.by_pixels(im, 11, bits=pk), r"k must be .* from 1 to 10"),
        (lambda ix, im, pk: ix.by_latents(pk, 2.0, decoded=im), r"k must be .* from 1 to 10"),
        (lambda ix, im, pk: ix.by_latents(pk, True, decoded=im), r"k must be .* from 1 to 10"),
        (
            lambda ix, im, pk: ix.by_pixels(im.astype(np.float32), 1, bits=pk),
            r"images must be uint8 of shape \(Q, 1, 4, 4\), got float32",
        ),
        (lambda ix, im, pk: ix.by_pixels(im[:, 0], 1, bits=pk), r"images must be uint8 of shape"),
        (
            lambda ix, im, pk: ix.by_pixels(im, 1, bits=pk[:1]),
            r"bits must have one row per query \(2\), got 1",
        ),
        (
            lambda ix, im, pk: ix.by_latents(pk[:, :1], 1, decoded=im),
            r"latents must be packed uint8 of shape \(Q, 2\) for latents of shape \(4, 2, 2\)",
        ),
        (
            lambda ix, im, pk: ix.by_latents(pk.astype(np.int64), 1, decoded=im),
            r"latents must be packed uint8",
        ),
        (
            lambda ix, im, pk: ix.by_latents(pk, 1, decoded=im[:1]),
            r"decoded must have one row per query \(2\)",
        ),
        (lambda ix, im, pk: ix.by_pixels(im, 1), r"bits are required"),
        (lambda ix, im, pk: ix.by_latents(pk, 1), r"decoded is required"),
    ],
)
def test_bad_input_is_refused(call: Call, message: str, rng: np.random.Generator) -> None:
    index = random_index(rng, 10, (1, 4, 4), (4, 2, 2))
    images = rng.integers(0, 256, (2, 1, 4, 4), dtype=np.uint8)
    packed = np.zeros((2, packed_size((4, 2, 2))), np.uint8)
    with pytest.raises(InvalidInputError, match=message):
        call(index, images, packed)
