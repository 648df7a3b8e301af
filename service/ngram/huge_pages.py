"""Moving the exact search's large arrays onto 2 MiB pages (Linux transparent huge pages).

The search reads its hash table, filters, tokens and weights at random places: at 100× the
default corpus they span gigabytes, and on 4 KiB pages most reads also miss the TLB and walk the
page tables. NumPy asks for huge pages (MADV_HUGEPAGE) on its large allocations, but the kernel
grants them only where it finds a free 2 MiB block when a page is first touched, so on a machine
whose memory is mostly page cache, part of each array stays on small pages (1.8 of the 3.2 GiB
of the 100× γ = 5 index was on huge pages). MADV_COLLAPSE (Linux 6.1) moves them there at once:
the 100× corpus sampled 29–50 % faster at γ = 5 and 7, the default corpus 14–22 %, and γ = 3
within noise (README: Scale).

Memory mapped from the index files is the page cache's, which MADV_COLLAPSE refuses (EINVAL,
harmlessly). There MADV_HUGEPAGE makes the kernel read the pages it does not hold yet in 2 MiB
blocks, mapped whole: the 100× γ = 5 index files, mapped with the page cache emptied, sampled at
133–146k grids/s against 92–97k (2.0 of their 2.2 GiB in huge pages against 0.6), and so does
every later process that maps them while the cache keeps them. Pages already cached (the files
just written, or read without the advice) keep their size.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from pathlib import Path

import numpy as np

MADV_HUGEPAGE, MADV_COLLAPSE = 14, 25  # linux/mman.h
HUGE_PAGE = 2 << 20
THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _libc() -> ctypes.CDLL | None:
    """The C library's madvise, where huge pages may be used: Linux, and transparent huge pages
    not set to "never" (MADV_COLLAPSE would ignore that setting; an administrator's choice)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        if "[never]" in THP_ENABLED.read_text():
            return None
    except OSError:
        return None  # a kernel without transparent huge pages
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def move_to_huge_pages(array: np.ndarray) -> bool:
    """Ask the kernel to back `array`'s memory with huge pages now (for a file mapping: its
    pages read from now on); True when it moved them. Arrays holding no whole huge page, file
    mappings, older kernels and other systems: False. Contents never change: collapsing copies
    the pages it replaces."""
    # The whole 2 MiB blocks inside the array: a block reaching past its mapping fails the call
    start = (array.ctypes.data + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1)
    end = (array.ctypes.data + array.nbytes) & ~(HUGE_PAGE - 1)
    if _LIBC is None or end <= start:
        return False
    _LIBC.madvise(start, end - start, MADV_HUGEPAGE)
    return _LIBC.madvise(start, end - start, MADV_COLLAPSE) == 0
