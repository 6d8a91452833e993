"""Returning freed heap memory to the operating system (mlrpl_jax/core/host_memory.py)."""

import ctypes
import os

import pytest

from mlrpl_jax.core import host_memory

CHUNK = 64 * 1024  # below glibc's mmap threshold (128 KiB at start), so served from the heap
CHUNKS = 4096  # 256 MiB


def resident_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(
    not hasattr(ctypes.CDLL(None), "malloc_trim"), reason="needs glibc's malloc_trim"
)
def test_freed_heap_below_a_live_allocation_goes_back_to_the_system():
    """Freed chunks under a live one cannot shrink the heap from its top, so glibc keeps them
    resident until malloc_trim hands their pages back."""
    chunks = [bytearray(CHUNK) for _ in range(CHUNKS)]  # zero-filled, so resident
    pinned_on_top = bytearray(CHUNK)
    del chunks
    before = resident_bytes()
    host_memory.release_freed_heap()
    released = before - resident_bytes()
    assert released > CHUNK * CHUNKS // 2, f"released only {released / 2**20:.0f} MiB of 256"
    del pinned_on_top
