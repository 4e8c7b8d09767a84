"""``allocator.release_freed_memory`` gives the pages the C allocator keeps free back to the operating system."""

from __future__ import annotations

import ctypes.util
import os
from pathlib import Path

import numpy as np
import pytest

from nightkeeper.allocator import release_freed_memory

PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / 2**20
ARRAYS = 2000
ARRAY_BYTES = 64 * 1024  # below glibc's mmap threshold: taken from the heap, not mapped on its own


def resident_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE_MIB


def glibc() -> bool:
    name = ctypes.util.find_library("c")
    return name is not None and hasattr(ctypes.CDLL(name), "malloc_trim")


@pytest.mark.skipif(not Path("/proc/self/statm").exists() or not glibc(), reason="glibc on Linux only")
def test_memory_freed_in_the_middle_of_the_heap_goes_back_to_the_operating_system() -> None:
    arrays = [np.ones(ARRAY_BYTES // 8) for _ in range(ARRAYS)]  # ~125 MiB, touched
    kept = arrays[::10]  # every tenth stays: what is freed lies between them, not at the heap's top
    del arrays
    freed = resident_mib()

    assert release_freed_memory()

    returned = freed - resident_mib()
    del kept
    assert returned > 0.9 * ARRAYS * ARRAY_BYTES / 2**20 / 2  # at least half of what was freed
