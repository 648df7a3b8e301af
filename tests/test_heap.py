"""The counting's malloc policy (service/heap.py): inside the block, memory freed is touched
again without page faults; before and after it, glibc unmaps a large block when it is freed, so
touching its successor faults."""

from __future__ import annotations

import ctypes
import resource

import pytest

from service.heap import _glibc, freed_memory_kept

BLOCK = 64 << 20  # above glibc's largest mmap threshold (32 MB): unmapped when freed by default
PAGES = BLOCK // 4096


def _faults_on_reuse(libc: ctypes.CDLL) -> int:
    """Page faults of writing a block allocated after an equal one was written and freed."""
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    first = libc.malloc(BLOCK)
    ctypes.memset(first, 1, BLOCK)
    libc.free(first)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    second = libc.malloc(BLOCK)
    ctypes.memset(second, 1, BLOCK)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    libc.free(second)
    return faults


def test_freed_memory_is_reused_within_the_block_only() -> None:
    libc = _glibc()
    if libc is None:
        pytest.skip("the C library is not glibc: the policy does nothing here")
    assert _faults_on_reuse(libc) > PAGES // 2  # the default: a fresh mapping each time
    with freed_memory_kept():
        assert _faults_on_reuse(libc) < PAGES // 20
    assert _faults_on_reuse(libc) > PAGES // 2  # large blocks are mapped (and unmapped) again
