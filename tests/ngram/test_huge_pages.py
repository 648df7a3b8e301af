"""Moving the search's arrays onto huge pages (service/ngram/huge_pages.py): a large array's
memory is collapsed onto 2 MiB pages with its contents unchanged; small arrays and file mappings
are not moved, and file mappings are advised to be read in huge pages."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from numpy._core.multiarray import _set_madvise_hugepage

from service.ngram.huge_pages import HUGE_PAGE, move_to_huge_pages

THP = Path("/sys/kernel/mm/transparent_hugepage")


def _kernel_collapses() -> bool:
    """Linux 6.1 or later, with transparent huge pages not turned off: MADV_COLLAPSE exists and
    the module uses it."""
    if not THP.exists() or "[never]" in (THP / "enabled").read_text():
        return False
    major, minor = (int(part) for part in os.uname().release.split(".")[:2])
    return (major, minor) >= (6, 1)


def _smaps_within(array: np.ndarray) -> list[dict[str, str]]:
    """The /proc/self/smaps fields of the mappings that overlap `array` (madvise may have split
    its allocation into several)."""
    lo, hi = array.ctypes.data, array.ctypes.data + array.nbytes
    mappings: list[dict[str, str]] = []
    fields: dict[str, str] | None = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head, _, rest = line.partition(" ")
        if "-" in head and not head.endswith(":"):
            start, end = (int(part, 16) for part in head.split("-"))
            fields = {} if start < hi and lo < end else None
            if fields is not None:
                mappings.append(fields)
        elif fields is not None:
            fields[head.rstrip(":")] = rest.strip()
    return mappings


def _huge_bytes_within(array: np.ndarray) -> int:
    return sum(int(m["AnonHugePages"].split()[0]) * 1024 for m in _smaps_within(array))


@pytest.mark.skipif(not _kernel_collapses(), reason="MADV_COLLAPSE needs Linux ≥ 6.1 with THP on")
def test_a_large_array_moves_to_huge_pages_unchanged() -> None:
    # allocated without NumPy's own request for huge pages, which the kernel may grant as the
    # array is first written: then only the move puts it there
    advised = _set_madvise_hugepage(False)
    try:
        array = np.random.default_rng(0).integers(0, 2**62, (16 * HUGE_PAGE) // 8)
    finally:
        _set_madvise_hugepage(advised)
    expected = array.copy()
    assert move_to_huge_pages(array)
    # every whole 2 MiB block inside the array, at least: the two ends may share theirs
    assert _huge_bytes_within(array) >= array.nbytes - 2 * HUGE_PAGE
    np.testing.assert_array_equal(array, expected)


def test_small_arrays_and_file_mappings_are_not_moved(tmp_path: Path) -> None:
    small = np.arange(1000)
    assert not move_to_huge_pages(small)
    np.save(tmp_path / "rows.npy", np.arange(2 * HUGE_PAGE // 8))
    mapped = np.load(tmp_path / "rows.npy", mmap_mode="r")
    assert not move_to_huge_pages(mapped)  # the page cache's pages: the kernel refuses them
    np.testing.assert_array_equal(mapped, np.arange(2 * HUGE_PAGE // 8))
    np.testing.assert_array_equal(small, np.arange(1000))


@pytest.mark.skipif(not _kernel_collapses(), reason="needs Linux ≥ 6.1 with THP on")
def test_a_file_mapping_is_advised_to_read_in_huge_pages(tmp_path: Path) -> None:
    """MADV_HUGEPAGE marks the mapping (VmFlags "hg"): pages the kernel reads into the page
    cache from then on come in 2 MiB blocks where the file system allows."""
    np.save(tmp_path / "rows.npy", np.arange(8 * HUGE_PAGE // 8))
    mapped = np.load(tmp_path / "rows.npy", mmap_mode="r")
    assert not any("hg" in m["VmFlags"].split() for m in _smaps_within(mapped))
    move_to_huge_pages(mapped)
    assert any("hg" in m["VmFlags"].split() for m in _smaps_within(mapped))
