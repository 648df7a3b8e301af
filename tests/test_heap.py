"""The counting's malloc policy (service/heap.py): inside the block, memory freed is touched
again without page faults; before and after it, glibc unmaps a large block when it is freed, so
touching its successor faults.

The faults are counted in a fresh interpreter (this file run as a script): in the test process,
a free chunk left in the heap by an earlier test's build can serve both blocks, and then even the
default policy reuses touched memory."""

from __future__ import annotations

import ctypes
import json
import resource
import subprocess
import sys

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


def _faults_before_within_after(libc: ctypes.CDLL) -> dict[str, int]:
    before = _faults_on_reuse(libc)
    with freed_memory_kept():
        within = _faults_on_reuse(libc)
    return {"before": before, "within": within, "after": _faults_on_reuse(libc)}


def test_freed_memory_is_reused_within_the_block_only() -> None:
    if _glibc() is None:
        pytest.skip("the C library is not glibc: the policy does nothing here")
    script = subprocess.run(
        [sys.executable, __file__], capture_output=True, text=True, check=True, timeout=60
    )
    faults = json.loads(script.stdout)
    assert faults["before"] > PAGES // 2  # the default: a fresh mapping each time
    assert faults["within"] < PAGES // 20
    assert faults["after"] > PAGES // 2  # large blocks are mapped (and unmapped) again


if __name__ == "__main__":
    glibc = _glibc()
    assert glibc is not None
    print(json.dumps(_faults_before_within_after(glibc)))
